"""The training loop's plan and early stopping, without a model."""

from __future__ import annotations

import pytest

from training.router_config import RouterTrainConfig
from training.router_loop import EarlyStopping, StepPlan

pytestmark = pytest.mark.unit


class _Tensor:
    def __init__(self, value: float) -> None:
        self.value = value

    def detach(self) -> _Tensor:
        return self

    def clone(self) -> _Tensor:
        return _Tensor(self.value)


def test_the_plan_counts_steps_per_epoch_and_stops_at_max_steps() -> None:
    cfg = RouterTrainConfig(batch_size=16, epochs=3, warmup_ratio=0.1)
    plan = StepPlan.of(100, cfg, max_steps=None)
    assert (plan.steps_per_epoch, plan.total_steps, plan.eval_every, plan.warmup) == (7, 21, 7, 2)
    assert StepPlan.of(100, cfg, max_steps=5).total_steps == 5
    assert StepPlan.of(100, RouterTrainConfig(eval_every_steps=4), max_steps=None).eval_every == 4
    assert [plan.evaluates_at(s) for s in (6, 7, 14, 20, 21)] == [False, True, True, False, True]


def test_the_learning_rate_warms_up_then_decays_to_zero() -> None:
    plan = StepPlan(steps_per_epoch=10, total_steps=10, eval_every=10, warmup=2)
    factors = [plan.learning_rate_factor(step) for step in range(11)]
    assert factors[:2] == [0.5, 1.0]
    assert factors[2] == 1.0 and factors[-1] == 0.0
    assert all(a >= b for a, b in zip(factors[1:], factors[2:], strict=False))


def test_early_stopping_keeps_the_best_weights_and_stops_after_patience() -> None:
    stopping = EarlyStopping(patience=2)
    weights = {"w": _Tensor(1.0)}
    stopping.observe(10, 0.5, 1.0, lambda: weights)
    weights["w"].value = 2.0  # training moves on; the kept copy must not
    stopping.observe(20, 0.7, 0.8, lambda: weights)
    weights["w"].value = 3.0
    stopping.observe(30, 0.7, 0.7, lambda: weights)  # no gain: equal is not better
    assert not stopping.stopped
    stopping.observe(40, 0.6, 0.7, lambda: weights)
    assert stopping.stopped
    assert (stopping.best_step, stopping.best_f1) == (20, 0.7)
    assert stopping.best_state is not None and stopping.best_state["w"].value == 2.0
    assert [entry["step"] for entry in stopping.history] == [10, 20, 30, 40]
