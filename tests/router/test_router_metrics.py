import numpy as np
import pytest

from services.router.metrics import (
    calibrate_oos_threshold,
    classification_metrics,
    fit_temperature,
    predict_with_threshold,
    softmax,
    threshold_sweep,
)

pytestmark = pytest.mark.unit


def test_in_scope_accuracy_counts_rejections_as_wrong_and_oos_recall() -> None:
    gold = ["a", "a", "b", "oos", "oos"]
    predicted = ["a", "oos", "b", "oos", "a"]
    metrics = classification_metrics(gold, predicted, oos_label="oos")
    assert metrics["accuracy"] == pytest.approx(3 / 5)
    assert metrics["in_scope_accuracy"] == pytest.approx(2 / 3)
    assert metrics["oos_recall"] == pytest.approx(1 / 2)
    # per-label F1: a = 2*1/(2+2), b = 1, oos = 2*1/(2+2)
    assert metrics["macro_f1"] == pytest.approx((0.5 + 1.0 + 0.5) / 3)


def test_temperature_scaling_recovers_an_overconfident_scale() -> None:
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(2000, 4))
    targets = [int(rng.choice(4, p=p)) for p in softmax(true_logits)]
    fitted = fit_temperature(true_logits * 3.0, targets)
    assert fitted == pytest.approx(3.0, rel=0.15)


def test_threshold_separates_confident_in_scope_from_unsure_oos() -> None:
    confidences = [0.9, 0.95, 0.85, 0.3, 0.4, 0.2]
    correct = [True, True, True, False, False, False]
    is_oos = [False, False, False, True, True, True]
    result = calibrate_oos_threshold(confidences, correct, is_oos)
    assert 0.4 < result["threshold"] < 0.85
    assert result["val_in_scope_accuracy"] == 1.0
    assert result["val_oos_recall"] == 1.0


def test_constrained_threshold_keeps_in_scope_accuracy_within_the_allowed_drop() -> None:
    # 100 in-scope (confidence 0.5..0.99, all right) and 10 oos (confidence 0.3..0.57).
    confidences = [0.5 + 0.0049 * i for i in range(100)] + [0.3 + 0.03 * i for i in range(10)]
    correct = [True] * 100 + [False] * 10
    is_oos = [False] * 100 + [True] * 10
    summed = calibrate_oos_threshold(confidences, correct, is_oos)
    constrained = calibrate_oos_threshold(confidences, correct, is_oos, max_in_scope_drop=0.02)
    # The summed objective gives up 15 points of in-scope accuracy for the last 3 oos examples.
    assert (summed["val_in_scope_accuracy"], summed["val_oos_recall"]) == (0.85, 1.0)
    assert constrained["val_in_scope_accuracy"] >= 0.98
    assert constrained["val_oos_recall"] == 0.7  # the 7 oos examples below every in-scope one
    exact = calibrate_oos_threshold(confidences, correct, is_oos, max_in_scope_drop=0.0)
    assert exact["val_in_scope_accuracy"] == 1.0
    with pytest.raises(ValueError, match="max_in_scope_drop"):
        calibrate_oos_threshold(confidences, correct, is_oos, max_in_scope_drop=1.5)


def test_examples_a_class_model_already_calls_oos_count_as_rejected() -> None:
    confidences = [0.9, 0.9, 0.95, 0.9]
    correct = [True, True, False, False]
    is_oos = [False, False, True, True]
    predicted_oos = [False, False, True, False]  # the class model caught one oos example itself
    result = calibrate_oos_threshold(
        confidences, correct, is_oos, predicted_oos=predicted_oos, max_in_scope_drop=0.0
    )
    assert result["val_oos_recall"] == 0.5
    assert result["val_in_scope_accuracy"] == 1.0
    assert result["val_in_scope_accuracy_without_threshold"] == 1.0


def test_threshold_sweep_trades_in_scope_accuracy_for_oos_recall() -> None:
    confidences = [0.9, 0.8, 0.6, 0.5, 0.3]
    correct = [True, True, True, False, False]
    is_oos = [False, False, False, True, True]
    points = threshold_sweep(confidences, correct, is_oos, [0.0, 0.55, 0.7, 1.0])
    assert [p["oos_recall"] for p in points] == [0.0, 1.0, 1.0, 1.0]
    assert [round(p["in_scope_accuracy"], 3) for p in points] == [1.0, 1.0, 0.667, 0.0]


def test_predictions_below_the_threshold_become_the_oos_label() -> None:
    probabilities = np.array([[0.9, 0.1], [0.55, 0.45], [0.2, 0.8]])
    assert predict_with_threshold(probabilities, ["a", "b"], 0.6, "oos") == ["a", "oos", "b"]
    assert predict_with_threshold(probabilities, ["a", "b"], None, "oos") == ["a", "a", "b"]
    assert predict_with_threshold(probabilities, ["a", "b"], 0.6, None) == ["a", "a", "b"]


def test_threshold_needs_both_kinds() -> None:
    with pytest.raises(ValueError, match="both"):
        calibrate_oos_threshold([0.5], [True], [False])
