"""An exponential moving average of a model's trainable weights (Polyak averaging), for evaluation.

Training keeps updating the live weights; the average lags behind them and smooths out the last few
hundred steps' noise, which tends to generalise a little better than any single step's weights
(Polyak & Juditsky 1992; Izmailov et al. 2018). `swapped_in()` lets validation score the averaged
weights and put the live ones back, so early stopping and the saved checkpoint both see the average.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class WeightAverage:
    """EMA over the parameters with requires_grad; frozen base weights are never copied."""

    def __init__(self, model: Any, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"weight average decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self._params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self._shadow = {name: p.detach().clone() for name, p in self._params}

    def update(self) -> None:
        """Fold in the live weights after an optimiser step.

        The warm-up (1 + n) / (10 + n) keeps the first steps' average from being dominated by the
        initial weights (the same schedule as TensorFlow's ExponentialMovingAverage with num_updates).
        """
        import torch

        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        with torch.no_grad():
            for name, p in self._params:
                self._shadow[name].lerp_(p.detach(), 1.0 - decay)

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The averaged weights in the model for the block's duration, then the live ones again."""
        import torch

        live = {name: p.detach().clone() for name, p in self._params}
        with torch.no_grad():
            for name, p in self._params:
                p.copy_(self._shadow[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in self._params:
                    p.copy_(live[name])
