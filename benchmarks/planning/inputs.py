"""The planner's inputs besides the results: --mix, --slo-p95, the GPU profile, prices, the index size,
the measured batching gain. Each bad value raises PlanInputError with one line that names it."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from benchmarks.planning.capacity import GpuType
from benchmarks.planning.costs import PlanInputError
from benchmarks.system import mix
from services.core.settings import PriceCard

GPU_FIELDS = ("prefill_tok_s", "decode_tok_s", "batch_size", "max_concurrent_seqs", "usd_per_hour")
_SLO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*$")


def parse_mix(text: str) -> dict[str, float]:
    """`knowledge=0.5,direct=0.33,out_of_scope=0.17` -> shares (the comparison's parser); classes left out
    get 0."""
    try:
        return mix.parse_mix(text).as_dict()
    except ValueError as exc:
        raise PlanInputError(f"--mix: {exc}") from exc


def parse_slo_ms(text: str) -> float:
    """`2s`, `1500ms` or `2` (seconds) -> milliseconds."""
    match = _SLO.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise PlanInputError(f"--slo-p95: expected a positive duration like 2s or 1500ms, got {text!r}")
    value = float(match.group(1))
    return value if match.group(2) == "ms" else value * 1000


def read_structured(path: Path, what: str) -> Any:
    """A YAML or JSON file (JSON is YAML); a missing or unreadable file is a one-line error."""
    if not path.is_file():
        raise PlanInputError(f"{what}: file not found: {path}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PlanInputError(f"{what}: cannot read {path}: {str(exc).splitlines()[0]}") from None


def read_results(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        raise PlanInputError(f"--results: file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PlanInputError(f"--results: not a JSON file: {path}: {exc}") from None
    if not isinstance(data, dict):
        raise PlanInputError(f"--results: expected a JSON object in {path}")
    return data


def load_gpu_profile(path: Path) -> list[GpuType]:
    """`gpus: {name: {prefill_tok_s, decode_tok_s, batch_size, max_concurrent_seqs, usd_per_hour}}`;
    usd_per_hour may be null (no price known): that plan is then unpriced."""
    data = read_structured(path, "--gpu-profile")
    gpus = data.get("gpus") if isinstance(data, dict) else None
    if not isinstance(gpus, dict) or not gpus:
        raise PlanInputError(f"--gpu-profile: {path} has no `gpus` mapping")
    profile = []
    for name, entry in gpus.items():
        if not isinstance(entry, dict):
            raise PlanInputError(f"--gpu-profile: gpus.{name} is not a mapping")
        for key in GPU_FIELDS:
            if key not in entry:
                raise PlanInputError(f"--gpu-profile: gpus.{name} is missing field {key}")
        for key in GPU_FIELDS[:4]:
            value = entry[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise PlanInputError(
                    f"--gpu-profile: gpus.{name}.{key} must be a positive number, got {value!r}"
                )
        price = entry["usd_per_hour"]
        if price is not None and (isinstance(price, bool) or not isinstance(price, int | float) or price < 0):
            raise PlanInputError(
                f"--gpu-profile: gpus.{name}.usd_per_hour must be >= 0 or null, got {price!r}"
            )
        profile.append(
            GpuType(
                name=str(name),
                prefill_tok_s=float(entry["prefill_tok_s"]),
                decode_tok_s=float(entry["decode_tok_s"]),
                batch_size=int(entry["batch_size"]),
                max_concurrent_seqs=int(entry["max_concurrent_seqs"]),
                usd_per_hour=None if price is None else float(price),
            )
        )
    return profile


def load_prices(path: Path) -> PriceCard:
    """The `prices` section of a YAML file (the same keys as the service's settings)."""
    data = read_structured(path, "--prices")
    section = data.get("prices") if isinstance(data, dict) else None
    if not isinstance(section, dict):
        raise PlanInputError(f"--prices: {path} has no `prices` section")
    try:
        return PriceCard.model_validate(section)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        raise PlanInputError(f"--prices: prices.{where}: {error['msg']}") from None


def index_memory_bytes(index_dir: Path) -> tuple[int | None, str]:
    """Memory one replica holds for the live index: vectors (chunks x dims x 4 bytes) plus the BM25
    arrays, the chunk text and the unit vectors, as the index's manifest lists them."""
    current = index_dir / "CURRENT"
    if not current.is_file():
        return None, f"no index at {index_dir}"
    version_dir = index_dir / "versions" / current.read_text(encoding="utf-8").strip()
    try:
        manifest = json.loads((version_dir / "manifest.json").read_text(encoding="utf-8"))
        vectors = int(manifest["chunks"]) * int(manifest["dimensions"]) * 4
        sizes: dict[str, int] = manifest.get("file_sizes", {})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, f"unreadable manifest in {version_dir}: {exc}"
    # The FAISS file and embeddings.npy hold the same vectors counted above.
    extra = sum(size for name, size in sizes.items() if name not in ("vectors.faiss", "embeddings.npy"))
    return vectors + extra, f"{version_dir}/manifest.json (chunks x dimensions x 4 + bm25, chunks, units)"


def batching_gain(serving: Mapping[str, Any] | None, concurrency: int) -> tuple[float, str]:
    """Throughput of one generator at `concurrency` batched requests relative to one at a time, from
    benchmarks/results/serving.json (prompt workload, batching on)."""
    if concurrency <= 1:
        return 1.0, "generator.max_concurrency 1: one request at a time"
    for run in (serving or {}).get("runs", []):
        if (run.get("workload"), run.get("mode"), run.get("concurrency")) == ("prompt", "on", concurrency):
            gain = run.get("req_per_s_x")
            if isinstance(gain, int | float) and gain > 0:
                return float(gain), f"serving.json prompt/on/c={concurrency} req_per_s_x"
    return 1.0, f"no batching measurement at c={concurrency} in serving.json: gain 1"


def measured_cores_of(results: Mapping[str, Any]) -> int | None:
    """The core count the results were measured on: the environment record's usable cores
    (benchmarks/harness/environment.py), or an older `machine: "2 cores"` field."""
    cores = results.get("environment", {}).get("cpu", {}).get("usable_cores")
    if isinstance(cores, int) and cores > 0:
        return cores
    machine = results.get("machine")
    if isinstance(machine, str) and (match := re.match(r"\s*(\d+)\s+cores?", machine)):
        return int(match.group(1))
    return None


def tail_ratio(results: Mapping[str, Any], pipeline: str) -> tuple[float, str]:
    """Unloaded p95 / mean latency of a pipeline (the shape of its latency distribution)."""
    levels = results.get("pipelines", {}).get(pipeline, {}).get("latency", {})
    if isinstance(levels, dict) and levels:
        lowest = min(levels, key=lambda level: float(level))
        figures = levels[lowest]
        mean, p95 = figures.get("mean"), figures.get("p95")
        if isinstance(mean, int | float) and isinstance(p95, int | float) and mean > 0:
            return max(1.0, p95 / mean), f"pipelines.{pipeline}.latency.{lowest} p95 / mean"
    return 1.0, "no unloaded latency percentiles: p95 taken as the mean"
