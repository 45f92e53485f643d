"""Turn `GeneratorSettings.model` into something a backend can load, as cached, atomic steps.

    alias | .gguf --(transformers, dequantize)--> HF safetensors folder --(ORT GenAI builder)--> ONNX
    HF folder | hub id ----------------------------^

Everything lives under `<data_dir>/models/`:

    gguf/<file>.gguf                          split packaged GGUFs, assembled and sha256-verified
    hf/<gguf stem>-<sha16>-<dtype>/           dequantized HF folder, keyed by the GGUF's hash
    onnx/<source>-<precision>-og<ver>[-lora-<key>]/   ONNX Runtime GenAI model
    adapters/<key>/adapter.onnx_adapter       converted LoRA adapters (see onnx_adapters.py)
    hashes.json                               sha256 of big files keyed by path+size+mtime

Each step writes into a temporary sibling and `os.replace`s it into place, so a crash leaves either the
old state or the finished result, never half a model. Every finished folder carries a manifest of its files
and sizes; a folder whose files no longer match (truncated, deleted) is refused with a ConfigError that says
to delete it: re-converting silently would hide disk problems and can take minutes for larger models.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from services.core.errors import ConfigError
from services.core.settings import GeneratorSettings, Settings
from services.llm.gguf_assembly import PACKAGED_GGUFS, HashCache, locate_packaged_gguf

logger = logging.getLogger(__name__)

MANIFEST_NAME = ".hybridllm-manifest.json"
GENAI_CONFIG_NAME = "genai_config.json"
_STDERR_TAIL_CHARS = 2000
BUILDER_TIMEOUT_S = 3600.0


# --------------------------------------------------------------------------- cached folders


def write_manifest(folder: Path, **extra: Any) -> None:
    """Record every file and its size, so a later start can tell a complete folder from a damaged one."""
    files = {
        str(path.relative_to(folder)): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST_NAME
    }
    (folder / MANIFEST_NAME).write_text(json.dumps({"files": files, **extra}, indent=1), encoding="utf-8")


def verify_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a finished folder; ConfigError naming the first problem when the folder is damaged."""
    hint = f"delete {folder} to convert again"
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(
            f"converted model {folder} has no manifest (incomplete or foreign); {hint}"
        ) from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"converted model {folder} has a damaged manifest; {hint}") from exc
    for relative, size in manifest.get("files", {}).items():
        path = folder / relative
        if not path.is_file():
            raise ConfigError(f"converted model {folder} is missing {relative}; {hint}")
        if path.stat().st_size != size:
            raise ConfigError(
                f"converted model {folder}: {relative} is {path.stat().st_size} bytes, expected {size} "
                f"(truncated?); {hint}"
            )
    return dict(manifest)


@contextmanager
def staging_dir(target: Path) -> Iterator[Path]:
    """A temporary sibling of `target` that becomes `target` on success and disappears on failure."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the finished cache is shared like any other folder
    try:
        yield tmp
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process finished the same conversion first; keep theirs if it is whole.
            if not (target / MANIFEST_NAME).is_file():
                raise
            logger.info("%s was converted concurrently; using that copy", target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def cached_build(target: Path, build: Callable[[Path], None], **manifest_extra: Any) -> Path:
    """Return `target` if a complete copy exists, else run `build(tmp_dir)` and move the result in."""
    if target.is_dir():
        verify_manifest(target)
        return target
    with staging_dir(target) as tmp:
        build(tmp)
        write_manifest(tmp, **manifest_extra)
    verify_manifest(target)
    return target


# --------------------------------------------------------------------------- sources


def _models_dir(data_dir: Path) -> Path:
    return data_dir / "models"


def _hashes(data_dir: Path) -> HashCache:
    return HashCache(_models_dir(data_dir) / "hashes.json")


def resolve_gguf(model: str, data_dir: Path) -> Path | None:
    """The GGUF file behind `model` (a packaged alias or a .gguf path), or None for HF folders and ids."""
    if model in PACKAGED_GGUFS:
        return locate_packaged_gguf(PACKAGED_GGUFS[model], _models_dir(data_dir) / "gguf", _hashes(data_dir))
    if model.lower().endswith(".gguf"):
        path = Path(model).expanduser()
        if not path.is_file():
            raise ConfigError(f"generator model {model!r}: GGUF file not found")
        return path
    return None


def _hf_dtype(settings: GeneratorSettings) -> str:
    # bf16 is faster than fp32 on CPUs with avx512_bf16 and halves the cache; dequantized 4-bit weights
    # lose nothing meaningful in it.
    return "fp32" if settings.dtype == "fp32" else "bf16"


def prepare_hf_model(settings: GeneratorSettings, data_dir: Path) -> Path:
    """A local Hugging Face folder (safetensors + tokenizer + chat template) for `settings.model`."""
    gguf = resolve_gguf(settings.model, data_dir)
    if gguf is None:
        local = Path(settings.model).expanduser()
        if local.is_dir():
            if not (local / "config.json").is_file():
                raise ConfigError(f"generator model folder {local} has no config.json")
            return local
        return _snapshot_of_hub_id(settings.model)
    digest = _hashes(data_dir).sha256(gguf)
    dtype = _hf_dtype(settings)
    target = _models_dir(data_dir) / "hf" / f"{gguf.stem}-{digest[:16]}-{dtype}"
    if target.is_dir():
        verify_manifest(target)
        return target
    logger.info("converting %s to a %s Hugging Face folder (once; takes 15-45 s)", gguf.name, dtype)
    started = time.perf_counter()
    cached_build(target, lambda tmp: convert_gguf_to_hf(gguf, tmp, dtype), gguf_sha256=digest, dtype=dtype)
    logger.info("converted %s in %.1f s -> %s", gguf.name, time.perf_counter() - started, target)
    return target


def _snapshot_of_hub_id(model_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model_id))
    except Exception as exc:  # offline, unknown id, no access: all mean the same to the operator
        raise ConfigError(
            f"generator model {model_id!r} is neither a local folder nor reachable: {exc}"
        ) from exc


def convert_gguf_to_hf(gguf: Path, out: Path, dtype: str) -> None:
    """Dequantize a GGUF with transformers and save it as safetensors (torch is needed only here)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch_dtype)
    # save_pretrained refuses a GGUF-loaded model while it still claims to be quantized; the weights are
    # already dense here, so the claim is dropped.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


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
    if hf_dir.parent == _models_dir(data_dir) / "hf":
        return hf_dir.name
    return f"{hf_dir.name}-{folder_fingerprint(hf_dir)[:16]}"


def builder_version() -> str:
    return importlib.metadata.version("onnxruntime-genai")


# --------------------------------------------------------------------------- ONNX


def prepare_onnx_model(settings: GeneratorSettings, data_dir: Path) -> Path:
    """An ONNX Runtime GenAI model folder for `settings.model` at `settings.onnx_precision`.

    With LoRA adapters configured, the model carries LoRA inputs (zero by default, so it answers like the
    base model until an adapter is activated); see services/llm/onnx_adapters.py.
    """
    hf_dir = prepare_hf_model(settings, data_dir)
    name = f"{_source_key(hf_dir, data_dir)}-{settings.onnx_precision}-og{builder_version()}"
    lora_template: Path | None = None
    if settings.adapters:
        from services.llm.onnx_adapters import lora_layout_key, peft_template

        lora_template = peft_template(settings.adapters, hf_dir, data_dir)
        if lora_template is not None:
            name += f"-lora-{lora_layout_key(lora_template)}"
    target = _models_dir(data_dir) / "onnx" / name
    if target.is_dir():
        verify_onnx_model(target)
        return target
    return build_onnx_model(hf_dir, target, settings.onnx_precision, data_dir, lora_template=lora_template)


def build_onnx_model(
    hf_dir: Path, target: Path, precision: str, data_dir: Path, *, lora_template: Path | None = None
) -> Path:
    logger.info(
        "converting %s to ONNX %s with onnxruntime-genai's builder (once; 10-30 s)", hf_dir, precision
    )
    started = time.perf_counter()

    def build(tmp: Path) -> None:
        extra: list[str] = []
        if lora_template is not None:
            from services.llm.onnx_adapters import lora_builder_options, make_lora_inputs_overridable

            extra = lora_builder_options(lora_template, hf_dir)
        run_onnx_builder(hf_dir, tmp, precision, _models_dir(data_dir) / "builder-cache", extra)
        if lora_template is not None:
            make_lora_inputs_overridable(tmp)

    cached_build(target, build, source=str(hf_dir), precision=precision, builder=builder_version())
    verify_onnx_model(target)
    logger.info("ONNX %s model ready in %.1f s -> %s", precision, time.perf_counter() - started, target)
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
            from services.llm.onnx_adapters import prepare_adapters

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
