"""The weight average folds in live weights, skips frozen ones, and swaps back exactly."""

import pytest
import torch

from training.weight_average import WeightAverage

pytestmark = pytest.mark.unit


def _model() -> tuple[torch.nn.Sequential, torch.nn.Linear, torch.nn.Linear]:
    """A frozen base layer (as under LoRA) and a trainable head, all weights zero."""
    base, head = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)
    base.requires_grad_(False)
    model = torch.nn.Sequential(base, head)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.0)
    return model, base, head


def test_average_tracks_trainable_weights_with_warm_up_and_leaves_frozen_ones_alone() -> None:
    model, base, head = _model()
    average = WeightAverage(model, decay=0.99)
    with torch.no_grad():
        head.weight.fill_(1.0)
        base.weight.fill_(5.0)  # frozen: never averaged
    average.update()  # warm-up decay min(0.99, 2/11): the average moves 9/11 of the way
    with average.swapped_in():
        assert head.weight[0, 0].item() == pytest.approx(9 / 11)
        assert base.weight[0, 0].item() == 5.0
    for _ in range(2000):
        average.update()
    with average.swapped_in():
        assert head.weight[0, 0].item() == pytest.approx(1.0, abs=1e-6)


def test_swapped_in_restores_the_live_weights_even_when_the_block_raises() -> None:
    model, _, head = _model()
    average = WeightAverage(model, decay=0.9)
    with torch.no_grad():
        head.bias.fill_(3.0)
    with pytest.raises(RuntimeError), average.swapped_in():
        assert head.bias.item() == 0.0  # the average has seen no update yet
        raise RuntimeError("validation failed")
    assert head.bias.item() == 3.0


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5])
def test_decay_outside_the_open_unit_interval_is_refused(decay: float) -> None:
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(_model()[0], decay)
