import numpy as np
import pytest

from services.router.metrics import (
    calibrate_oos_threshold,
    classification_metrics,
    fit_temperature,
    softmax,
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


def test_threshold_needs_both_kinds() -> None:
    with pytest.raises(ValueError, match="both"):
        calibrate_oos_threshold([0.5], [True], [False])
