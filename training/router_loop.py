"""The router's training loop: AdamW with linear warm-up and decay, validation macro-F1 every
`eval_every_steps` (or epoch), early stopping, and the best weights restored at the end."""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from services.router.metrics import classification_metrics
from training.distill import TeacherTargets, distillation_loss
from training.router_config import RouterTrainConfig
from training.router_labels import PreparedData
from training.router_model import RouterTrainer, batches
from training.weight_average import WeightAverage

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StepPlan:
    steps_per_epoch: int
    total_steps: int
    eval_every: int
    warmup: int

    @classmethod
    def of(cls, examples: int, cfg: RouterTrainConfig, max_steps: int | None) -> StepPlan:
        steps_per_epoch = math.ceil(examples / cfg.batch_size)
        planned = steps_per_epoch * cfg.epochs
        total = min(planned, max_steps) if max_steps is not None else planned
        return cls(
            steps_per_epoch=steps_per_epoch,
            total_steps=total,
            eval_every=cfg.eval_every_steps or steps_per_epoch,
            warmup=int(total * cfg.warmup_ratio),
        )

    def learning_rate_factor(self, step: int) -> float:
        """Linear warm-up to 1, then linear decay to 0 at the last step."""
        if step < self.warmup:
            return (step + 1) / max(1, self.warmup)
        return max(0.0, (self.total_steps - step) / max(1, self.total_steps - self.warmup))

    def evaluates_at(self, step: int) -> bool:
        return step % self.eval_every == 0 or step == self.total_steps


@dataclass(slots=True)
class EarlyStopping:
    """Keeps the adapter weights of the best validation macro-F1; stops after `patience` passes without
    a gain."""

    patience: int
    best_f1: float = -1.0
    best_step: int = 0
    best_state: dict[str, Any] | None = None
    passes_without_gain: int = 0
    stopped: bool = False
    history: list[dict[str, float]] = field(default_factory=list)

    def observe(self, step: int, f1: float, loss: float, state: Callable[[], Mapping[str, Any]]) -> None:
        """Record one validation pass; `state` is read (and copied) only when the pass improved."""
        if f1 > self.best_f1:
            self.best_state = {name: tensor.detach().clone() for name, tensor in state().items()}
            self.best_f1, self.best_step, self.passes_without_gain = f1, step, 0
        else:
            self.passes_without_gain += 1
            self.stopped = self.passes_without_gain >= self.patience
        self.history.append({"step": step, "val_macro_f1": f1, "loss": loss})


def _scored_examples(examples: Sequence[tuple[str, str]], labels: Sequence[str]) -> list[tuple[str, str]]:
    known = set(labels)
    return [e for e in examples if e[1] in known]


def val_macro_f1(trainer: RouterTrainer, val: Sequence[tuple[str, str]]) -> float:
    scored = _scored_examples(val, trainer.labels)
    logits = trainer.logits([t for t, _ in scored])
    predicted = [trainer.labels[i] for i in logits.argmax(axis=1)]
    return float(classification_metrics([g for _, g in scored], predicted)["macro_f1"])


class _Objective:
    """The loss of one batch: cross-entropy on the labels, or its mix with the teachers' soft targets."""

    def __init__(self, trainer: RouterTrainer, data: PreparedData, teacher: TeacherTargets | None) -> None:
        torch = trainer.torch
        self._trainer = trainer
        self._cfg = trainer.cfg
        self._texts = [t for t, _ in data.train]
        self._targets = torch.tensor(
            [trainer.label_index[label] for _, label in data.train], dtype=torch.long
        )
        self._soft_targets = torch.from_numpy(teacher.logits) if teacher is not None else None

    def __len__(self) -> int:
        return len(self._texts)

    def loss(self, batch: list[int]) -> Any:
        cfg, torch = self._cfg, self._trainer.torch
        logits = self._trainer.model(**self._trainer.encode([self._texts[i] for i in batch])).logits
        if self._soft_targets is None:
            return torch.nn.functional.cross_entropy(
                logits, self._targets[batch], label_smoothing=cfg.label_smoothing
            )
        return distillation_loss(
            logits,
            self._soft_targets[batch],
            self._targets[batch],
            weight=cfg.distill_weight,
            temperature=cfg.distill_temperature,
            label_smoothing=cfg.label_smoothing,
        )


class _Optimiser:
    """AdamW on the trainable weights, the learning-rate schedule, and the weight average if configured."""

    def __init__(self, trainer: RouterTrainer, plan: StepPlan) -> None:
        torch, model, cfg = trainer.torch, trainer.model, trainer.cfg
        self._optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=cfg.learning_rate,
            weight_decay=cfg.weight_decay,
        )
        self._scheduler = torch.optim.lr_scheduler.LambdaLR(self._optimizer, plan.learning_rate_factor)
        self.average = WeightAverage(model, cfg.weight_average_decay) if cfg.weight_average_decay else None

    def step(self, loss: Any) -> None:
        loss.backward()
        self._optimizer.step()
        self._scheduler.step()
        self._optimizer.zero_grad(set_to_none=True)
        if self.average is not None:
            self.average.update()

    def scored_weights(self) -> AbstractContextManager[Any]:
        """Validation and the kept checkpoint read the averaged weights when there is an average."""
        return self.average.swapped_in() if self.average is not None else nullcontext()


def train_loop(
    trainer: RouterTrainer,
    data: PreparedData,
    cfg: RouterTrainConfig,
    *,
    max_steps: int | None,
    progress: bool,
    teacher: TeacherTargets | None = None,
) -> dict[str, Any]:
    """Train until the planned steps or early stopping; the best validation weights are loaded at the end.

    Returns the run's report: steps, best step, timings and the per-pass history.
    """
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from tqdm import tqdm

    torch, model = trainer.torch, trainer.model
    objective = _Objective(trainer, data, teacher)
    plan = StepPlan.of(len(objective), cfg, max_steps)
    optimiser = _Optimiser(trainer, plan)
    stopping = EarlyStopping(cfg.patience)
    shuffle = torch.Generator().manual_seed(cfg.seed)
    logger.info(
        "training %d steps (%d a validation pass), %d examples, batch %d",
        plan.total_steps, plan.eval_every, len(objective), cfg.batch_size,
    )  # fmt: skip
    bar = tqdm(
        total=plan.total_steps, desc="train router", file=sys.stderr, disable=not progress, leave=False
    )
    started = time.perf_counter()
    step = 0
    while step < plan.total_steps and not stopping.stopped:
        model.train()
        for batch in batches(torch.randperm(len(objective), generator=shuffle).tolist(), cfg.batch_size):
            loss = objective.loss(batch)
            optimiser.step(loss)
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if plan.evaluates_at(step):
                with optimiser.scored_weights():
                    f1 = val_macro_f1(trainer, data.val)
                    stopping.observe(step, f1, float(loss.item()), lambda: get_peft_model_state_dict(model))
                logger.info("step %d: val macro-F1 %.4f", step, f1)
                if stopping.stopped:
                    break
                model.train()
            if step >= plan.total_steps:
                break
    bar.close()
    train_seconds = time.perf_counter() - started
    if stopping.best_state is not None:
        set_peft_model_state_dict(model, stopping.best_state)
    return {
        "steps": step,
        "best_step": stopping.best_step,
        "epochs_run": round(step / plan.steps_per_epoch, 2),
        "stopped_early": stopping.stopped,
        "best_val_macro_f1": stopping.best_f1,
        "train_seconds": round(train_seconds, 2),
        "seconds_per_step": round(train_seconds / max(1, step), 4),
        "history": stopping.history,
    }
