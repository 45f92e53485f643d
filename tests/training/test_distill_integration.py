"""Real distillation: teachers' logits averaged over the training texts, a student pulled towards them."""

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.core.errors import ConfigError
from services.router.classifier import IntentRouterModel
from tests.training.router_runs import SMALL, short_runs
from training.distill import teacher_targets
from training.train_router import train_router

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def teachers(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path, Path]:
    """Two short runs (different seeds) on one training file and one validation file."""
    return short_runs(tmp_path_factory.mktemp("distill"), (1, 2), max_steps=30)


def _texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]


def _served_logits(folder: Path, texts: list[str]) -> np.ndarray:
    model = IntentRouterModel(folder, engine="onnx")
    model.warm_up()
    return model.logits(texts)


def _kl_from(teacher: np.ndarray, student: np.ndarray) -> float:
    def log_softmax(z: np.ndarray) -> np.ndarray:
        shifted = z - z.max(axis=1, keepdims=True)
        return np.asarray(shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True)))

    p = np.exp(log_softmax(teacher))
    return float((p * (log_softmax(teacher) - log_softmax(student))).sum(axis=1).mean())


def test_targets_are_the_mean_of_the_teachers_served_logits(teachers: tuple[list[Path], Path, Path]) -> None:
    runs, train, _ = teachers
    texts = _texts(train)[:40]
    labels = json.loads((runs[0] / "labels.json").read_text())["labels"]
    targets = teacher_targets(runs, texts, labels)
    expected = (_served_logits(runs[0], texts) + _served_logits(runs[1], texts)) / 2
    np.testing.assert_allclose(targets.logits, expected, atol=1e-5)
    assert targets.teachers == ["seed1", "seed2"]


def test_a_distilled_student_is_closer_to_its_teachers_than_the_same_run_without_them(
    teachers: tuple[list[Path], Path, Path], tmp_path: Path
) -> None:
    runs, train, val = teachers
    common: dict[str, Any] = {"eval_file": val, "max_steps": 30, "progress": False, "seed": 3, **SMALL}
    distilled = train_router(
        train, tmp_path / "distilled", teachers=runs, distill_weight=1.0, distill_temperature=1.0, **common
    )
    plain = train_router(train, tmp_path / "plain", **common)
    assert distilled["distillation"]["teachers"] == ["seed1", "seed2"]
    assert distilled["distillation"]["teacher_seeds"] == [1, 2]
    assert "distillation" not in plain
    assert (
        "Distilled (training/distill.py) from the mean logits of 2 routers"
        in (tmp_path / "distilled" / "MODEL_CARD.md").read_text()
    )

    texts = _texts(train)
    target = (_served_logits(runs[0], texts) + _served_logits(runs[1], texts)) / 2
    kl_distilled = _kl_from(target, _served_logits(tmp_path / "distilled", texts))
    kl_plain = _kl_from(target, _served_logits(tmp_path / "plain", texts))
    assert kl_distilled < 0.8 * kl_plain, (kl_distilled, kl_plain)


def test_teachers_without_a_weight_a_weight_without_teachers_and_foreign_teachers_are_refused(
    teachers: tuple[list[Path], Path, Path], tmp_path: Path
) -> None:
    runs, train, val = teachers
    common: dict[str, Any] = {"eval_file": val, "max_steps": 1, "progress": False, **SMALL}
    with pytest.raises(ConfigError, match="distill_weight 0.0 with 2 teacher"):
        train_router(train, tmp_path / "a", teachers=runs, **common)
    with pytest.raises(ConfigError, match="distill_weight 0.5 with 0 teacher"):
        train_router(train, tmp_path / "b", distill_weight=0.5, **common)
    foreign = tmp_path / "foreign"
    shutil.copytree(runs[0], foreign)
    labels = json.loads((foreign / "labels.json").read_text())
    labels["labels"] = labels["labels"][::-1]  # the same names in another order score other classes
    (foreign / "labels.json").write_text(json.dumps(labels))
    with pytest.raises(ConfigError, match="foreign"):
        train_router(train, tmp_path / "c", teachers=[foreign], distill_weight=0.5, **common)
    with pytest.raises(ConfigError, match="not a trained router"):
        train_router(train, tmp_path / "d", teachers=[tmp_path], distill_weight=0.5, **common)
    assert not any((tmp_path / name).exists() for name in "abcd")
