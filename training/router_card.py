"""What a router folder tells a reader: its model card and the confusion matrix plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from services.router.metrics import confusion_matrix
from training.router_config import RouterTrainConfig


def plot_confusion(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    matrix = confusion_matrix(gold, predicted, labels)
    size = 4 + min(len(labels), 40) * 0.25
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    if len(labels) <= 20:
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        for (row, col), value in np.ndenumerate(matrix):
            ax.text(col, row, str(value), ha="center", va="center", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(f"router confusion matrix ({len(gold)} examples)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def model_card(metrics: dict[str, Any], cfg: RouterTrainConfig, source: str) -> str:
    head = {k: metrics.get(k) for k in ("accuracy", "macro_f1", "in_scope_accuracy", "oos_recall")}
    shown = ", ".join(f"{k} {v:.4f}" for k, v in head.items() if isinstance(v, float))
    labels = metrics["labels"]
    label_list = ", ".join(labels[:12]) + (" ..." if len(labels) > 12 else "")
    return f"""# Intent router

LoRA-tuned {cfg.base_model} sequence classifier that routes chat requests by intent.

- Data: `{Path(source).name}`: {metrics["train_examples"]} training, {metrics["val_examples"]} validation,
  {metrics["test_examples"]} test examples; {len(labels)} labels: {label_list}
- Config: LoRA r={cfg.lora_r}, alpha={cfg.lora_alpha}, dropout={cfg.lora_dropout}, target modules
  {list(cfg.target_modules)}, trained in full {list(cfg.modules_to_save)}; {cfg.pooling} pooling,
  {cfg.encoder_layers or "all"} encoder layers; lr {cfg.learning_rate}, batch {cfg.batch_size}, up to
  {cfg.epochs} epochs, early stopping on validation macro-F1 (patience {cfg.patience}), seed {cfg.seed}.
  {metrics["steps"]} steps in {metrics["train_seconds"]} s.{_soup_line(metrics)}{_distill_line(metrics)}
- Out of scope: `{cfg.oos_method}` method; threshold {metrics["threshold"]}; softmax temperature
  {metrics["temperature"]:.3f} (fitted on validation data).
- Metrics ({metrics["evaluated_on"]} split): {shown}.
- Serving: `model.onnx` (merged model, ONNX Runtime, no torch needed), `model.int8.onnx` (dynamic int8),
  `adapter/` (peft adapter over the base model, for the torch path).

Intended use: choosing a pipeline (direct prompt, retrieval, refusal) per request in the hybridllm service.
Limits: trained on short English queries; texts longer than {cfg.max_length} tokens are truncated; the
confidence is calibrated on validation data of the same distribution and drifts on different traffic;
out-of-scope detection is weaker on topics unlike any training example. Not a safety filter.
"""


def _soup_line(metrics: dict[str, Any]) -> str:
    soup = metrics.get("soup")
    if not soup:
        return ""
    return (
        f"\n- Weight soup (training/soup_router.py) of {len(soup['seeds'])} runs of one recipe, seeds "
        f"{soup['seeds']}, LoRA r={soup['member_lora_r']} each; steps and seconds above are their sum."
    )


def _distill_line(metrics: dict[str, Any]) -> str:
    kd = metrics.get("distillation")
    if not kd:
        return ""
    return (
        f"\n- Distilled (training/distill.py) from the mean logits of {len(kd['teachers'])} routers "
        f"({', '.join(kd['teachers'])}), weight {kd['weight']}, temperature {kd['temperature']}."
    )
