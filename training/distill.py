"""Knowledge distillation for the router: one student learns from the averaged logits of trained routers.

An ensemble of routers often scores better than any one of them but costs one model per member at
serving time. Distillation (Hinton et al. 2015) trains a single model of the same size towards the ensemble's
softened output distribution, so the service keeps one model's latency.

The teachers run once, before training, over the student's training texts (ONNX fp32, the graph they
serve); the loss per batch is then

    (1 - w) * cross_entropy(student, gold) + w * T^2 * KL(softmax(teacher / T) || softmax(student / T))

with w = `distill_weight` and T = `distill_temperature` from the router config. The T^2 keeps the soft
term's gradients on the scale of the hard term's as T grows (Hinton et al. 2015, section 2).

benchmarks/results/router_clinc150.md compares distilled students with their teachers and the ensemble.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from services.core.errors import ConfigError
from services.router.artifacts import read_artifacts

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TeacherTargets:
    """The teachers' mean logits over the training texts, one row per text, in the student's label order."""

    logits: npt.NDArray[np.float32]
    teachers: list[str]
    seconds: float


def teacher_targets(
    teachers: Sequence[Path], texts: Sequence[str], labels: Sequence[str], *, threads: int = 1
) -> TeacherTargets:
    """Run each teacher over `texts` and average their raw logits.

    A teacher must score exactly the student's labels in the same order: averaging logits of models with
    other label sets would silently teach the wrong classes, so it is a ConfigError naming the folder.
    """
    from services.router.classifier import IntentRouterModel

    if not teachers:
        raise ConfigError("distillation needs at least one teacher router folder")
    started = time.perf_counter()
    total: npt.NDArray[np.float64] | None = None
    for folder in teachers:
        try:
            artifacts = read_artifacts(Path(folder))
        except (ConfigError, OSError, ValueError) as exc:
            raise ConfigError(f"teacher {folder} is not a trained router folder: {exc}") from exc
        if list(artifacts.labels) != list(labels):
            raise ConfigError(
                f"teacher {folder} scores other labels (or the same in another order) than the student's "
                f"{len(labels)}: distil from routers trained on the same data with the same oos_method"
            )
        # Each teacher reads the texts as it was trained to (its own max_length), not as the student does.
        model = IntentRouterModel(
            Path(folder), threads=threads, max_length=artifacts.max_length, engine="onnx"
        )
        model.warm_up()
        logits = model.logits(texts).astype(np.float64)
        logger.info("teacher %s scored %d training texts", folder, len(texts))
        total = logits if total is None else total + logits
    assert total is not None
    return TeacherTargets(
        logits=(total / len(teachers)).astype(np.float32),
        teachers=[Path(t).name for t in teachers],
        seconds=round(time.perf_counter() - started, 2),
    )


def distillation_loss(
    student_logits: Any,
    teacher_logits: Any,
    gold: Any,
    *,
    weight: float,
    temperature: float,
    label_smoothing: float = 0.0,
) -> Any:
    """(1 - w) * CE(student, gold) + w * T^2 * KL(teacher_T || student_T), averaged over the batch."""
    import torch
    import torch.nn.functional as F  # noqa: N812 (torch's own convention)

    hard = F.cross_entropy(student_logits, gold, label_smoothing=label_smoothing)
    if weight == 0:
        return hard
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=-1),
        F.log_softmax(teacher_logits / temperature, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    return torch.lerp(hard, soft * temperature**2, weight)
