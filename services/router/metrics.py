"""Classification metrics, temperature scaling and the out-of-scope threshold (numpy only).

Definitions follow Larson et al. 2019 (CLINC150): in-scope accuracy counts an in-scope example as right
only when its exact intent is predicted (rejecting it as out of scope is wrong); out-of-scope recall is
the share of out-of-scope examples predicted out of scope.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def softmax(logits: npt.ArrayLike, temperature: float = 1.0) -> FloatArray:
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    result: FloatArray = exp / exp.sum(axis=-1, keepdims=True)
    return result


def classification_metrics(
    gold: Sequence[str], predicted: Sequence[str], *, oos_label: str | None = None
) -> dict[str, Any]:
    """accuracy, macro_f1 (over the gold and predicted label set), in_scope_accuracy, oos_recall."""
    if len(gold) != len(predicted):
        raise ValueError(f"gold and predicted differ in length: {len(gold)} != {len(predicted)}")
    if not gold:
        raise ValueError("no examples to score")
    correct = [g == p for g, p in zip(gold, predicted, strict=True)]
    labels = sorted(set(gold) | set(predicted))
    true_positives = Counter(g for g, ok in zip(gold, correct, strict=True) if ok)
    gold_counts, predicted_counts = Counter(gold), Counter(predicted)
    # F1 = 2TP / (2TP + FP + FN) = 2TP / (|gold| + |predicted|) per label
    f1s = [2 * true_positives[label] / (gold_counts[label] + predicted_counts[label]) for label in labels]
    metrics: dict[str, Any] = {
        "accuracy": sum(correct) / len(gold),
        "macro_f1": float(np.mean(f1s)),
        "examples": len(gold),
    }
    in_scope = [ok for ok, g in zip(correct, gold, strict=True) if g != oos_label]
    metrics["in_scope_accuracy"] = sum(in_scope) / len(in_scope) if in_scope else None
    if oos_label is not None and oos_label in gold:
        oos = [p == oos_label for g, p in zip(gold, predicted, strict=True) if g == oos_label]
        metrics["oos_recall"] = sum(oos) / len(oos)
        metrics["oos_examples"] = len(oos)
    return metrics


def confusion_matrix(
    gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]
) -> npt.NDArray[np.int64]:
    """Rows: gold label, columns: predicted label, in `labels` order (others are dropped)."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for g, p in zip(gold, predicted, strict=True):
        if g in index and p in index:
            matrix[index[g], index[p]] += 1
    return matrix


def fit_temperature(logits: npt.ArrayLike, targets: Sequence[int]) -> float:
    """Temperature scaling (Guo et al. 2017): the T > 0 minimising validation NLL of softmax(logits / T)."""
    values = np.asarray(logits, dtype=np.float64)
    target_index = np.asarray(targets, dtype=np.int64)
    if values.ndim != 2 or len(values) != len(target_index) or len(values) == 0:
        raise ValueError(f"need (n, classes) logits and n targets, got {values.shape}, {len(target_index)}")

    def nll(temperature: float) -> float:
        log_probs = np.log(softmax(values, temperature) + 1e-12)
        return float(-log_probs[np.arange(len(values)), target_index].mean())

    # NLL is unimodal in log T for practical logits: a coarse grid, then a fine one around the best.
    coarse = np.exp(np.linspace(np.log(0.05), np.log(20.0), 61))
    best = min(coarse, key=nll)
    fine = np.exp(np.linspace(np.log(best) - 0.12, np.log(best) + 0.12, 41))
    return float(min(fine, key=nll))


def calibrate_oos_threshold(
    confidences: Sequence[float],
    correct: Sequence[bool],
    is_oos: Sequence[bool],
    *,
    predicted_oos: Sequence[bool] | None = None,
    max_in_scope_drop: float | None = None,
) -> dict[str, float]:
    """The max-probability threshold below which an example is rejected as out of scope.

    `correct`: the argmax intent is right (only meaningful for in-scope examples). `predicted_oos`: the
    argmax already is the out-of-scope class (a model trained with one); such examples count as rejected
    whatever the threshold.

    Objective: with `max_in_scope_drop` None, maximise in-scope accuracy + oos recall (Larson et al.
    2019's reading, which on CLINC150's validation split, 100 oos in 3,100, buys recall with several
    points of in-scope accuracy). With a drop d, maximise oos recall while validation in-scope accuracy
    stays within d of what the model scores without rejecting anything: the operating point a service
    wants, where wrongly refusing a real request costs more than answering a stray one.
    """
    conf = np.asarray(confidences, dtype=np.float64)
    right = np.asarray(correct, dtype=bool)
    oos = np.asarray(is_oos, dtype=bool)
    already = np.zeros_like(oos) if predicted_oos is None else np.asarray(predicted_oos, dtype=bool)
    if not oos.any() or oos.all():
        raise ValueError("threshold calibration needs both in-scope and out-of-scope validation examples")
    if max_in_scope_drop is not None and not 0.0 <= max_in_scope_drop < 1.0:
        raise ValueError(f"max_in_scope_drop must be in [0, 1), got {max_in_scope_drop}")
    # Midpoints between observed confidences generalise better than the observed values themselves.
    observed = np.unique(conf)
    candidates = np.concatenate([[0.0], (observed[:-1] + observed[1:]) / 2, [1.0]])
    unrejected_in_scope_accuracy = float((right & ~already)[~oos].mean())
    floor = None if max_in_scope_drop is None else unrejected_in_scope_accuracy - max_in_scope_drop - 1e-12
    best: dict[str, float] = {}
    best_score = -1.0
    for threshold in candidates:
        in_scope_accuracy, oos_recall = _operating_point(conf, right, oos, already, threshold)
        if floor is not None and in_scope_accuracy < floor:
            break  # candidates rise, so every later one rejects more and falls further below
        score = in_scope_accuracy + oos_recall if floor is None else oos_recall + 1e-6 * in_scope_accuracy
        if score > best_score + 1e-12:
            best_score = score
            best = {
                "threshold": float(threshold),
                "val_in_scope_accuracy": in_scope_accuracy,
                "val_oos_recall": oos_recall,
                "val_in_scope_accuracy_without_threshold": unrejected_in_scope_accuracy,
                "objective_value": score,
            }
    return best


def threshold_sweep(
    confidences: Sequence[float],
    correct: Sequence[bool],
    is_oos: Sequence[bool],
    thresholds: Sequence[float],
    *,
    predicted_oos: Sequence[bool] | None = None,
) -> list[dict[str, float]]:
    """In-scope accuracy and oos recall at each threshold: the trade-off curve a threshold moves along."""
    conf = np.asarray(confidences, dtype=np.float64)
    right = np.asarray(correct, dtype=bool)
    oos = np.asarray(is_oos, dtype=bool)
    already = np.zeros_like(oos) if predicted_oos is None else np.asarray(predicted_oos, dtype=bool)
    points = []
    for threshold in thresholds:
        in_scope_accuracy, oos_recall = _operating_point(conf, right, oos, already, threshold)
        points.append(
            {"threshold": float(threshold), "in_scope_accuracy": in_scope_accuracy, "oos_recall": oos_recall}
        )
    return points


def _operating_point(
    confidence: FloatArray,
    correct: npt.NDArray[np.bool_],
    is_oos: npt.NDArray[np.bool_],
    predicted_oos: npt.NDArray[np.bool_],
    threshold: float,
) -> tuple[float, float]:
    """(in-scope accuracy, oos recall) when examples below `threshold` or predicted oos are rejected."""
    accepted = (confidence >= threshold) & ~predicted_oos
    in_scope_accuracy = float((correct & accepted)[~is_oos].mean()) if (~is_oos).any() else 0.0
    oos_recall = float((~accepted)[is_oos].mean()) if is_oos.any() else 0.0
    return in_scope_accuracy, oos_recall


def predict_with_threshold(
    probabilities: npt.NDArray[np.float64],
    labels: Sequence[str],
    threshold: float | None,
    oos_label: str | None,
) -> list[str]:
    """The argmax label per row, or `oos_label` where the max probability is below `threshold`."""
    predicted = [labels[int(index)] for index in probabilities.argmax(axis=1)]
    if threshold is None or oos_label is None:
        return predicted
    confidence = probabilities.max(axis=1)
    return [
        oos_label if conf < threshold else label for label, conf in zip(predicted, confidence, strict=True)
    ]
