"""Turn `GeneratorSettings.model` into something a backend can load, as cached, atomic steps.

    alias | .gguf --(transformers, dequantize)--> HF safetensors folder --(ORT GenAI builder)--> ONNX
    HF folder | hub id ----------------------------^

Everything lives under `<data_dir>/models/`:

    gguf/<file>.gguf                          split packaged GGUFs, assembled and sha256-verified
    hf/<gguf stem>-<sha16>-<dtype>/           dequantized HF folder, keyed by the GGUF's hash (hf_folder.py)
    onnx/<source>-<precision>-og<ver>[-lora-<key>]/   ONNX Runtime GenAI model
    adapters/<key>/adapter.onnx_adapter       converted LoRA adapters (see onnx_adapters.py)
    hashes.json                               sha256 of big files keyed by path+size+mtime

Each folder is a cached build (services/core/artifact_cache.py): built beside its final place and moved in
whole, so a crash leaves either the old state or the finished result, never half a model; a folder whose
files no longer match its manifest is refused with a ConfigError that says to delete it.

Imports point one way: model_prep -> onnx_adapters -> hf_folder -> gguf_assembly.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from services.core.artifact_cache import MANIFEST_NAME, cached_build, verify_manifest
from services.core.errors import ConfigError
from services.core.settings import GeneratorSettings, OnnxGeneratorSettings, Settings
from services.llm.hf_folder import models_dir

# Re-exported: callers that prepare a model import it from here, beside prepare_onnx_model.
from services.llm.hf_folder import prepare_hf_model as prepare_hf_model
from services.llm.onnx_adapters import (
    lora_builder_options,
    lora_layout_key,
    make_lora_inputs_overridable,
    peft_template,
    prepare_adapters,
)

logger = logging.getLogger(__name__)

GENAI_CONFIG_NAME = "genai_config.json"
_STDERR_TAIL_CHARS = 2000
BUILDER_TIMEOUT_S = 3600.0


# --------------------------------------------------------------------------- source keys


def folder_fingerprint(folder: Path) -> str:
    """A cheap identity for a local HF folder: names, sizes and mtimes of its files."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MANIFEST_NAME:
            stat = path.stat()
            digest.update(f"{path.relative_to(folder)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _source_key(hf_dir: Path, data_dir: Path) -> str:
    """Stable key of an HF folder: its name when we made it (it carries the GGUF hash), else a fingerprint."""
    if hf_dir.parent == models_dir(data_dir) / "hf":
        return hf_dir.name
    return f"{hf_dir.name}-{folder_fingerprint(hf_dir)[:16]}"


def builder_version() -> str:
    return importlib.metadata.version("onnxruntime-genai")


# --------------------------------------------------------------------------- ONNX


def prepare_onnx_model(settings: OnnxGeneratorSettings, data_dir: Path) -> Path:
    """An ONNX Runtime GenAI model folder for `settings.model` at `settings.onnx_precision`.

    With LoRA adapters configured, the model carries LoRA inputs (zero by default, so it answers like the
    base model until an adapter is activated); see services/llm/onnx_adapters.py.
    """
    hf_dir = prepare_hf_model(settings, data_dir)
    name = f"{_source_key(hf_dir, data_dir)}-{settings.onnx_precision}-og{builder_version()}"
    lora_template: Path | None = None
    if settings.adapters:
        lora_template = peft_template(settings.adapters, hf_dir, data_dir)
        if lora_template is not None:
            name += f"-lora-{lora_layout_key(lora_template)}"
    target = models_dir(data_dir) / "onnx" / name
    return build_onnx_model(hf_dir, target, settings.onnx_precision, data_dir, lora_template=lora_template)


def build_onnx_model(
    hf_dir: Path, target: Path, precision: str, data_dir: Path, *, lora_template: Path | None = None
) -> Path:
    """The converted model at `target`, built when missing or damaged (every file's digest is checked)."""

    def build(tmp: Path) -> None:
        logger.info("converting %s to ONNX %s with onnxruntime-genai's builder (once)", hf_dir, precision)
        started = time.perf_counter()
        extra: list[str] = []
        if lora_template is not None:
            extra = lora_builder_options(lora_template, hf_dir)
        run_onnx_builder(hf_dir, tmp, precision, models_dir(data_dir) / "builder-cache", extra)
        if lora_template is not None:
            make_lora_inputs_overridable(tmp)
        logger.info("ONNX %s model built in %.1f s -> %s", precision, time.perf_counter() - started, target)

    cached_build(
        target, build, checksums=True, source=str(hf_dir), precision=precision, builder=builder_version()
    )
    verify_onnx_model(target)
    return target


def run_onnx_builder(
    hf_dir: Path, out: Path, precision: str, cache_dir: Path, extra_options: list[str]
) -> None:
    """Run `onnxruntime_genai.models.builder` in a child process (it needs torch; the server need not)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "onnxruntime_genai.models.builder",
        "-i", str(hf_dir), "-o", str(out), "-p", precision, "-e", "cpu", "-c", str(cache_dir),
    ]  # fmt: skip
    if extra_options:
        command += ["--extra_options", *extra_options]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    try:
        completed = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=BUILDER_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ConfigError(f"ONNX conversion of {hf_dir} timed out after {BUILDER_TIMEOUT_S:.0f} s") from exc
    if completed.returncode != 0 or not (out / GENAI_CONFIG_NAME).is_file():
        tail = (completed.stderr or completed.stdout or "")[-_STDERR_TAIL_CHARS:]
        raise ConfigError(
            f"ONNX conversion of {hf_dir} to {precision} failed (exit {completed.returncode}): {tail.strip()}"
        )


def verify_onnx_model(folder: Path) -> None:
    """Refuse a converted model that is incomplete or damaged, naming what is wrong."""
    verify_manifest(folder)
    config_path = folder / GENAI_CONFIG_NAME
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        decoder_file = config["model"]["decoder"]["filename"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"converted model {folder}: {GENAI_CONFIG_NAME} is missing or damaged ({exc})"
        ) from exc
    if not (folder / decoder_file).is_file():
        raise ConfigError(f"converted model {folder}: decoder file {decoder_file} is missing")


# --------------------------------------------------------------------------- CLI entry


def prepare_generator(settings: GeneratorSettings, data_dir: Path) -> dict[str, Any]:
    started = time.perf_counter()
    report: dict[str, Any] = {"name": settings.name, "backend": settings.backend, "model": settings.model}
    if settings.backend == "onnx":
        report["onnx_dir"] = str(prepare_onnx_model(settings, data_dir))
        report["precision"] = settings.onnx_precision
        if settings.adapters:
            report["adapters"] = {k: str(v) for k, v in prepare_adapters(settings, data_dir).items()}
    elif settings.backend == "transformers":
        report["hf_dir"] = str(prepare_hf_model(settings, data_dir))
    report["seconds"] = round(time.perf_counter() - started, 2)
    return report


def prepare(settings: Settings) -> dict[str, Any]:
    """Prepare whatever the configured generators need (`hybridllm prepare`); a JSON-ready summary."""
    generators = [settings.generator]
    if settings.fallback_generator is not None:
        generators.append(settings.fallback_generator)
    return {"generators": [prepare_generator(g, settings.data_dir) for g in generators]}
