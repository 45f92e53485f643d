"""Calibrating a trained router on validation data (softmax temperature, out-of-scope threshold) and
scoring a split with them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from services.router import artifacts as layout
from services.router.examples import Example
from services.router.metrics import (
    calibrate_oos_threshold,
    classification_metrics,
    fit_temperature,
    predict_with_threshold,
    softmax,
)
from training.router_config import RouterTrainConfig
from training.router_labels import PreparedData
from training.router_model import RouterTrainer


def calibrate(trainer: RouterTrainer, data: PreparedData, cfg: RouterTrainConfig) -> dict[str, Any]:
    val_texts = [t for t, _ in data.val]
    val_logits = trainer.logits(val_texts)
    in_model = [i for i, (_, label) in enumerate(data.val) if label in trainer.label_index]
    targets = [trainer.label_index[data.val[i][1]] for i in in_model]
    temperature = fit_temperature(val_logits[in_model], targets)
    result: dict[str, Any] = {"temperature": temperature, "threshold": None, "val_logits": val_logits}
    if cfg.oos_method in layout.THRESHOLD_METHODS:
        probabilities = softmax(val_logits, temperature)
        best = [trainer.labels[int(b)] for b in probabilities.argmax(axis=1)]
        correct = [b == label for b, (_, label) in zip(best, data.val, strict=True)]
        is_oos = [label == data.oos_label for _, label in data.val]
        calibration = calibrate_oos_threshold(
            probabilities.max(axis=1).tolist(),
            correct,
            is_oos,
            predicted_oos=[b == data.oos_label for b in best],
            max_in_scope_drop=cfg.threshold_max_in_scope_drop,
        )
        result["threshold"] = calibration["threshold"]
        result["threshold_calibration"] = calibration
    return result


def threshold_objective(cfg: RouterTrainConfig) -> str:
    if cfg.threshold_max_in_scope_drop is None:
        return "max in-scope accuracy + oos recall on validation (calibrated max probability)"
    return (
        "max oos recall on validation with in-scope accuracy within "
        f"{cfg.threshold_max_in_scope_drop} of the unthresholded model's (calibrated max probability)"
    )


def split_metrics(
    logits: npt.NDArray[np.float32],
    examples: Sequence[Example],
    labels: Sequence[str],
    temperature: float,
    threshold: float | None,
    oos_label: str | None,
) -> tuple[dict[str, Any], list[str]]:
    predicted = predict_with_threshold(softmax(logits, temperature), labels, threshold, oos_label)
    metrics = classification_metrics([g for _, g in examples], predicted, oos_label=oos_label)
    return metrics, predicted
