"""Short real router trainings shared by the soup and distillation tests (2 encoder layers, mean pooling)."""

import os
from pathlib import Path
from typing import Any

import pytest

from tests.training.test_train_router_integration import ROUTER_DATA, _subset
from training.train_router import train_router

# Small enough to train in seconds, shaped like the CLINC recipe (mean pooling, classifier trained in full).
SMALL: dict[str, Any] = {
    "encoder_layers": 2,
    "pooling": "mean",
    "modules_to_save": ("classifier",),
    "export_int8": False,
}


def short_runs(root: Path, seeds: tuple[int, ...], *, max_steps: int) -> tuple[list[Path], Path, Path]:
    """One run per seed on one training file and one validation file: (run folders, train, val)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not (ROUTER_DATA / "train.jsonl").is_file():
        pytest.skip(f"router data not found at {ROUTER_DATA}")
    train = _subset(ROUTER_DATA / "train.jsonl", root / "train.jsonl", per_label=40)
    val = _subset(ROUTER_DATA / "val.jsonl", root / "val.jsonl", per_label=20)
    runs = []
    for seed in seeds:
        out = root / f"seed{seed}"
        train_router(train, out, eval_file=val, max_steps=max_steps, progress=False, seed=seed, **SMALL)
        runs.append(out)
    return runs, train, val
