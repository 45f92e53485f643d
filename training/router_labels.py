"""What a router run trains on: the label set the model scores and the splits, by out-of-scope method."""

from __future__ import annotations

from dataclasses import dataclass

from services.core.errors import ConfigError
from services.router import artifacts as layout
from services.router.examples import Example, RouterSplits
from training.router_config import RouterTrainConfig


@dataclass(frozen=True, slots=True)
class PreparedData:
    labels: list[str]  # the classes the model scores, in output order
    oos_label: str | None
    train: list[Example]
    val: list[Example]
    test: list[Example]


def prepare_labels(splits: RouterSplits, cfg: RouterTrainConfig) -> PreparedData:
    present = {label for _, label in splits.train} | {label for _, label in splits.val}
    oos_label = next((name for name in cfg.oos_labels if name in present), None)
    train = list(splits.train)
    if cfg.oos_method in layout.THRESHOLD_METHODS:
        if oos_label is None:
            raise ConfigError(
                f"oos_method={cfg.oos_method} needs out-of-scope examples labelled one of {cfg.oos_labels}"
            )
        if oos_label not in {label for _, label in splits.val}:
            raise ConfigError(
                f"oos_method={cfg.oos_method} needs {oos_label!r} examples in the validation data"
            )
    if cfg.oos_method == "threshold":
        # The threshold method never sees out-of-scope data in training (Larson et al. 2019, oos-threshold).
        train = [e for e in train if e[1] != oos_label]
    labels = sorted({label for _, label in train})
    if len(labels) < 2:
        raise ConfigError(f"router training needs two or more labels, got {labels}")
    if not splits.val:
        raise ConfigError("router training needs validation examples (give --eval or more data)")
    return PreparedData(labels=labels, oos_label=oos_label, train=train, val=splits.val, test=splits.test)
