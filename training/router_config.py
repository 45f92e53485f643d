"""The router's training recipe: a YAML file (training/configs/) read into a validated, frozen config."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.core.errors import ConfigError
from services.router import artifacts as layout
from services.router.modeling import POOLINGS, Pooling
from training.recipe import read_recipe

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "router_lora.yaml"


@dataclass(frozen=True, slots=True)
class RouterTrainConfig:
    base_model: str = "packaged:all-MiniLM-L6-v2"
    seed: int = 13
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    target_modules: tuple[str, ...] = ("query", "value")
    modules_to_save: tuple[str, ...] = ("classifier", "pooler")
    # cls: BERT's pooler over [CLS]; mean: masked mean of the last hidden states (services/router/modeling)
    pooling: Pooling = "cls"
    # Keep only the encoder's first N layers (None: all): the router's cost per query is linear in N.
    encoder_layers: int | None = None
    # Cross-entropy label smoothing (0: none). 0.1 on CLINC150 changed nothing beyond noise
    # (benchmarks/results/router_clinc150.md); kept as a knob for other data.
    label_smoothing: float = 0.0
    # Evaluate and keep an exponential moving average of the trainable weights (None: the live weights).
    # training/weight_average.py; 0.999 averages over roughly the last 1,000 steps.
    weight_average_decay: float | None = None
    # Knowledge distillation from trained routers given as teachers (training/distill.py): the weight of
    # the soft term (0: none, teachers refused) and the softmax temperature both sides are read at.
    distill_weight: float = 0.0
    distill_temperature: float = 2.0
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    batch_size: int = 16
    epochs: int = 6
    max_length: int = 64
    eval_every_steps: int = 0
    patience: int = 2
    val_fraction: float = 0.15
    oos_method: str = "class"
    # The threshold's objective: None maximises in-scope accuracy + oos recall on validation; a number d
    # maximises oos recall while validation in-scope accuracy stays within d of the unthresholded model's.
    threshold_max_in_scope_drop: float | None = 0.01
    oos_labels: tuple[str, ...] = ("out_of_scope", "oos")
    torch_threads: int = 1
    onnx_opset: int = 17
    export_int8: bool = True

    def __post_init__(self) -> None:
        checks = {
            "lora_r": self.lora_r > 0,
            "lora_alpha": self.lora_alpha > 0,
            "lora_dropout": 0 <= self.lora_dropout < 1,
            "learning_rate": self.learning_rate > 0,
            "warmup_ratio": 0 <= self.warmup_ratio < 1,
            "batch_size": self.batch_size > 0,
            "epochs": self.epochs > 0,
            "max_length": self.max_length >= 8,
            "eval_every_steps": self.eval_every_steps >= 0,
            "patience": self.patience >= 1,
            "val_fraction": 0 < self.val_fraction < 1,
            "pooling": self.pooling in POOLINGS,
            "encoder_layers": self.encoder_layers is None or self.encoder_layers >= 1,
            "label_smoothing": 0 <= self.label_smoothing < 1,
            "weight_average_decay": self.weight_average_decay is None or 0 < self.weight_average_decay < 1,
            "distill_weight": 0 <= self.distill_weight <= 1,
            "distill_temperature": self.distill_temperature > 0,
            "oos_method": self.oos_method in layout.OOS_METHODS,
            "threshold_max_in_scope_drop": self.threshold_max_in_scope_drop is None
            or 0 <= self.threshold_max_in_scope_drop < 1,
            "torch_threads": self.torch_threads >= 1,
            "onnx_opset": self.onnx_opset >= 14,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"router config: invalid {name}, got {getattr(self, name)!r}")

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def load_config(path: Path | None = None, **overrides: Any) -> RouterTrainConfig:
    """The YAML config (default: training/configs/router_lora.yaml) with keyword overrides on top."""
    values = read_recipe(
        path or DEFAULT_CONFIG,
        RouterTrainConfig,
        what="router config",
        overrides=overrides,
        tuples=("target_modules", "modules_to_save", "oos_labels"),
    )
    try:
        return RouterTrainConfig(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from exc
