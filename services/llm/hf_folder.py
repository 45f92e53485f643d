"""The Hugging Face folder behind a generator's `model` setting, the source of every later conversion.

    packaged alias | .gguf --(transformers, dequantize)--> <data_dir>/models/hf/<gguf stem>-<sha16>-<dtype>/
    local HF folder -------------------------------------> used as it is
    hub id ----------------------------------------------> the hub snapshot

The GGUF step is a cached build (services/core/artifact_cache.py); torch is imported only inside it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from services.core.artifact_cache import cached_build
from services.core.errors import ConfigError
from services.core.settings import BaseGeneratorSettings, TransformersGeneratorSettings
from services.llm.gguf_assembly import PACKAGED_GGUFS, HashCache, locate_packaged_gguf

logger = logging.getLogger(__name__)


def models_dir(data_dir: Path) -> Path:
    """Where prepared models live: gguf/, hf/, onnx/, adapters/, builder-cache/, hashes.json."""
    return data_dir / "models"


def hash_cache(data_dir: Path) -> HashCache:
    return HashCache(models_dir(data_dir) / "hashes.json")


def resolve_gguf(model: str, data_dir: Path) -> Path | None:
    """The GGUF file behind `model` (a packaged alias or a .gguf path), or None for HF folders and ids."""
    if model in PACKAGED_GGUFS:
        assembled_dir = models_dir(data_dir) / "gguf"
        return locate_packaged_gguf(PACKAGED_GGUFS[model], assembled_dir, hash_cache(data_dir))
    if model.lower().endswith(".gguf"):
        path = Path(model).expanduser()
        if not path.is_file():
            raise ConfigError(f"generator model {model!r}: GGUF file not found")
        return path
    return None


def _hf_dtype(settings: BaseGeneratorSettings) -> str:
    # bf16 is faster than fp32 on CPUs with avx512_bf16 and halves the cache; dequantized 4-bit weights
    # lose nothing meaningful in it. Only the transformers backend can ask for fp32.
    fp32 = isinstance(settings, TransformersGeneratorSettings) and settings.dtype == "fp32"
    return "fp32" if fp32 else "bf16"


def prepare_hf_model(settings: BaseGeneratorSettings, data_dir: Path) -> Path:
    """A local Hugging Face folder (safetensors + tokenizer + chat template) for `settings.model`."""
    gguf = resolve_gguf(settings.model, data_dir)
    if gguf is None:
        local = Path(settings.model).expanduser()
        if local.is_dir():
            if not (local / "config.json").is_file():
                raise ConfigError(f"generator model folder {local} has no config.json")
            return local
        return _snapshot_of_hub_id(settings.model)
    digest = hash_cache(data_dir).sha256(gguf)
    dtype = _hf_dtype(settings)
    target = models_dir(data_dir) / "hf" / f"{gguf.stem}-{digest[:16]}-{dtype}"

    def build(tmp: Path) -> None:
        logger.info("converting %s to a %s Hugging Face folder (once)", gguf.name, dtype)
        started = time.perf_counter()
        convert_gguf_to_hf(gguf, tmp, dtype)
        logger.info("converted %s in %.1f s -> %s", gguf.name, time.perf_counter() - started, target)

    # Sizes only: this folder is an input to conversion, not what serves (the ONNX folder's digests are).
    return cached_build(target, build, gguf_sha256=digest, dtype=dtype)


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
