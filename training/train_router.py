"""Train the intent router: all-MiniLM-L6-v2 + a LoRA adapter (peft, SEQ_CLS) + a classification head.

Steps: config (router_config) -> data (services/router/examples, router_labels) -> model (router_model) ->
train with early stopping on validation macro-F1 (router_loop) -> calibrate the temperature and, for the
threshold methods, the out-of-scope threshold (router_calibration) -> evaluate, export (adapter, merged ONNX
fp32 and int8) and write the folder atomically (router_output, router_card).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from services.core.errors import ConfigError
from services.router import artifacts as layout
from services.router.examples import load_router_data
from training.distill import teacher_targets
from training.router_config import load_config
from training.router_labels import prepare_labels
from training.router_loop import train_loop
from training.router_model import RouterTrainer
from training.router_output import finish_router


def train_router(
    data: Path,
    out: Path,
    *,
    text_col: str = "text",
    label_col: str = "label",
    eval_file: Path | None = None,
    config: Path | None = None,
    max_steps: int | None = None,
    progress: bool = True,
    teachers: Sequence[Path] = (),
    **overrides: Any,
) -> dict[str, Any]:
    """Train, calibrate, evaluate and export a router into `out` (atomically); return its metrics.

    `overrides` replace fields of the YAML config (e.g. `epochs=3`, `oos_method="threshold"`).
    `teachers` are trained router folders to distill from; the config's distill_weight must be > 0
    with them and 0 without (a weight with no teacher, or teachers with no weight, is a mistake).
    """
    import torch

    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    cfg = load_config(config, **overrides)
    if bool(teachers) != (cfg.distill_weight > 0):
        raise ConfigError(
            f"distill_weight {cfg.distill_weight} with {len(teachers)} teacher(s): "
            "give teachers with a weight > 0, or neither"
        )
    torch.set_num_threads(cfg.torch_threads)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    # data
    splits = load_router_data(
        Path(data),
        text_col=text_col,
        label_col=label_col,
        eval_file=eval_file,
        val_fraction=cfg.val_fraction,
        seed=cfg.seed,
    )
    prepared = prepare_labels(splits, cfg)

    # model + train
    trainer = RouterTrainer(cfg, prepared.labels)
    teacher = (
        teacher_targets(teachers, [t for t, _ in prepared.train], prepared.labels, threads=cfg.torch_threads)
        if teachers
        else None
    )
    training = train_loop(trainer, prepared, cfg, max_steps=max_steps, progress=progress, teacher=teacher)
    if teacher is not None:
        training["distillation"] = {
            "teachers": teacher.teachers,
            "teacher_seeds": [load_config(Path(t) / layout.CONFIG_FILE).seed for t in teachers],
            "weight": cfg.distill_weight,
            "temperature": cfg.distill_temperature,
            "teacher_seconds": teacher.seconds,
        }
    return finish_router(trainer, prepared, cfg, training, source=splits.source, out=Path(out))


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m training.train_router ...`: the same arguments and handler as `hybridllm train-router`."""
    import argparse

    from services.cli import run
    from training.cli import add_train_router_arguments, train_router_command

    parser = argparse.ArgumentParser(prog="python -m training.train_router", description=__doc__)
    add_train_router_arguments(parser)
    run(train_router_command, parser.parse_args(argv))


if __name__ == "__main__":
    main()
