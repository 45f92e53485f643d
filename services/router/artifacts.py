"""The router's model folder: what training writes and serving reads, and the checks on reading it.

Layout (written atomically by `training.train_router`):

    adapter/                 peft LoRA adapter (save_pretrained) for the torch path
    model.onnx               the merged model, exported for ONNX Runtime (fp32)
    model.int8.onnx          the same, int8 dynamically quantized (optional)
    tokenizer.json           the base model's fast tokenizer
    labels.json              {"labels": [...model output order...], "oos_label": str|null, "oos_method": ...,
                              "pooling": "cls"|"mean", "encoder_layers": int|null, "base_model": ...}
    calibration.json         {"temperature": T}: softmax(logits / T) is calibrated on validation data
    threshold.json           {"oos_method": ..., "threshold": float|null, ...}
    router_config.yaml       the training configuration used
    metrics.json             evaluation, data sizes, and "train_data": the training file's absolute path
    explain_cache.npz        training-data vectors of `hybridllm route --explain` (written on first use)
    confusion_matrix.png, MODEL_CARD.md
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from services.core.errors import ConfigError
from services.router.modeling import POOLINGS, Pooling

# class: an explicit out-of-scope class; threshold: reject below a calibrated max probability (trained on
# in-scope data only); class+threshold: both, the class and a threshold on top of it.
OosMethod = Literal["class", "threshold", "class+threshold"]
OOS_METHODS: tuple[OosMethod, ...] = ("class", "threshold", "class+threshold")
THRESHOLD_METHODS: frozenset[str] = frozenset({"threshold", "class+threshold"})

ADAPTER_DIR = "adapter"
ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model.int8.onnx"
TOKENIZER_FILE = "tokenizer.json"
LABELS_FILE = "labels.json"
CALIBRATION_FILE = "calibration.json"
THRESHOLD_FILE = "threshold.json"
CONFIG_FILE = "router_config.yaml"
METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion_matrix.png"
MODEL_CARD_FILE = "MODEL_CARD.md"
# metrics.json's key for the training data file (routers trained before it was recorded lack it).
TRAIN_DATA_KEY = "train_data"

HOW_TO_TRAIN = "train one with `make router` (or `hybridllm train-router --data FILE --out DIR`)"


@dataclass(frozen=True, slots=True)
class RouterArtifacts:
    """What serving needs to know about a trained router, read from its folder."""

    model_dir: Path
    labels: tuple[str, ...]
    oos_label: str | None
    oos_method: OosMethod
    threshold: float | None
    temperature: float
    base_model: str
    max_length: int
    pooling: Pooling = "cls"
    encoder_layers: int | None = None  # None: all of the base model's layers

    @property
    def adapter_dir(self) -> Path:
        return self.model_dir / ADAPTER_DIR

    @property
    def tokenizer_file(self) -> Path:
        return self.model_dir / TOKENIZER_FILE

    def onnx_file(self, *, quantized: bool = False) -> Path:
        return self.model_dir / (ONNX_INT8_FILE if quantized else ONNX_FILE)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"router model file missing: {path}; {HOW_TO_TRAIN}") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"router model file {path} is unreadable ({exc}); {HOW_TO_TRAIN}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"router model file {path} must hold a JSON object; {HOW_TO_TRAIN}")
    return raw


def read_artifacts(model_dir: Path) -> RouterArtifacts:
    """Read and check a router folder; a missing or corrupt one raises ConfigError naming the path."""
    if not model_dir.is_dir():
        raise ConfigError(f"router model folder not found: {model_dir}; {HOW_TO_TRAIN}")
    labels_raw = _read_json(model_dir / LABELS_FILE)
    calibration = _read_json(model_dir / CALIBRATION_FILE)
    threshold_raw = _read_json(model_dir / THRESHOLD_FILE)
    labels = labels_raw.get("labels")
    if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) for x in labels):
        raise ConfigError(f"{model_dir / LABELS_FILE}: 'labels' must list two or more names; {HOW_TO_TRAIN}")
    method = labels_raw.get("oos_method", "class")
    if method not in OOS_METHODS:
        raise ConfigError(f"{model_dir / LABELS_FILE}: unknown oos_method {method!r}")
    temperature = calibration.get("temperature")
    if not isinstance(temperature, int | float) or temperature <= 0:
        raise ConfigError(f"{model_dir / CALIBRATION_FILE}: temperature must be > 0, got {temperature!r}")
    threshold = threshold_raw.get("threshold")
    if threshold is not None and (not isinstance(threshold, int | float) or not 0 <= threshold <= 1):
        raise ConfigError(f"{model_dir / THRESHOLD_FILE}: threshold must be in [0, 1], got {threshold!r}")
    if method in THRESHOLD_METHODS and threshold is None:
        raise ConfigError(f"{model_dir / THRESHOLD_FILE}: a {method}-method router needs a threshold")
    if not (model_dir / TOKENIZER_FILE).is_file():
        raise ConfigError(f"router model file missing: {model_dir / TOKENIZER_FILE}; {HOW_TO_TRAIN}")
    oos_label = labels_raw.get("oos_label")
    pooling = labels_raw.get("pooling", "cls")  # folders written before mean pooling existed are cls
    if pooling not in POOLINGS:
        raise ConfigError(f"{model_dir / LABELS_FILE}: unknown pooling {pooling!r}")
    encoder_layers = labels_raw.get("encoder_layers")
    if encoder_layers is not None and (not isinstance(encoder_layers, int) or encoder_layers < 1):
        raise ConfigError(f"{model_dir / LABELS_FILE}: encoder_layers must be >= 1, got {encoder_layers!r}")
    return RouterArtifacts(
        model_dir=model_dir,
        labels=tuple(labels),
        oos_label=oos_label if isinstance(oos_label, str) else None,
        oos_method=method,
        threshold=float(threshold) if threshold is not None else None,
        temperature=float(temperature),
        base_model=str(labels_raw.get("base_model", "packaged:all-MiniLM-L6-v2")),
        max_length=int(labels_raw.get("max_length", 64)),
        pooling=pooling,
        encoder_layers=encoder_layers,
    )
