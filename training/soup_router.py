"""A uniform weight soup of routers trained with one recipe and different seeds (Wortsman et al. 2022).

Runs fine-tuned from the same pretrained weights land in one basin, so averaging their weights gives a
model about as good as averaging their predictions, at one model's cost per query: the router's latency
does not change. On CLINC150 (benchmarks/results/router_clinc150.md) the soup of seeds 13 + 29 scored 96.40
test in-scope accuracy against 96.20 / 96.07 for its members and 96.49 for averaging their predictions;
a soup of four seeds scored above the members' mean, not above the best member.

The LoRA updates average exactly, not approximately: mean_i(B_i A_i) = [B_1 .. B_N] / N . [A_1; ..; A_N],
a rank N*r update with the members' scaling (alpha' = N * alpha), so the soup is itself a peft adapter
and serves from the same artifact folder as any trained router. Heads (modules_to_save) are averaged as
plain weights. Temperature and threshold are fitted again on validation, on the soup's own scores.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.core.errors import ConfigError
from services.router import artifacts as layout
from services.router.artifacts import read_artifacts
from services.router.examples import load_router_data
from training.router_config import RouterTrainConfig, load_config
from training.router_labels import prepare_labels
from training.router_model import RouterTrainer
from training.router_output import finish_router

logger = logging.getLogger(__name__)

ADAPTER_WEIGHTS = "adapter_model.safetensors"
# Fields that may differ between members: they change the run, not the model's shape or recipe.
PER_RUN_FIELDS = frozenset({"seed", "torch_threads"})


def soup_routers(
    members: Sequence[Path],
    data: Path,
    out: Path,
    *,
    text_col: str = "text",
    label_col: str = "label",
    eval_file: Path | None = None,
    threshold_max_in_scope_drop: float | None = None,
) -> dict[str, Any]:
    """Average the trained routers in `members` into one router in `out` (atomically); return its metrics.

    `data` (and `eval_file`) must be what the members were trained on: validation calibrates the soup,
    and the test split, when there is one, evaluates it. `threshold_max_in_scope_drop` replaces the
    members' threshold budget (it changes calibration only, not what was trained).
    """
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    members = [Path(m) for m in members]
    if len(members) < 2:
        raise ConfigError(f"a router soup needs at least 2 trained routers, got {len(members)}")
    configs = [_member_config(m) for m in members]
    _check_same_recipe(members, configs)
    labels = read_artifacts(members[0]).labels
    for member in members[1:]:
        if read_artifacts(member).labels != labels:
            raise ConfigError(f"router {member} scores other labels than {members[0]}: not one recipe")

    recipe = configs[0]
    splits = load_router_data(
        Path(data), text_col=text_col, label_col=label_col, eval_file=eval_file,
        val_fraction=recipe.val_fraction, seed=recipe.seed,
    )  # fmt: skip
    # The recipe check leaves the seed as the only input to the split; each other seed is read once.
    for seed in sorted({cfg.seed for cfg in configs} - {recipe.seed}):
        other = load_router_data(
            Path(data), text_col=text_col, label_col=label_col, eval_file=eval_file,
            val_fraction=recipe.val_fraction, seed=seed,
        )  # fmt: skip
        if other.val != splits.val:
            # A member's training data would be another member's validation data: calibration would lie.
            raise ConfigError(
                f"routers seeded {recipe.seed} and {seed} held out different validation splits of "
                f"{data}; soup routers trained with an explicit validation split (--eval, or CLINC150)"
            )
    prepared = prepare_labels(splits, recipe)
    if prepared.labels != list(labels):
        raise ConfigError(f"{data} yields labels other than the routers': not the data they were trained on")

    n = len(members)
    budget = recipe.threshold_max_in_scope_drop
    if threshold_max_in_scope_drop is not None:
        budget = threshold_max_in_scope_drop
    try:
        soup_cfg = dataclasses.replace(
            recipe,
            lora_r=recipe.lora_r * n,
            lora_alpha=recipe.lora_alpha * n,
            threshold_max_in_scope_drop=budget,
        )
    except ValueError as exc:  # RouterTrainConfig validates its fields
        raise ConfigError(str(exc)) from exc
    torch.set_num_threads(recipe.torch_threads)
    trainer = RouterTrainer(soup_cfg, prepared.labels)
    weight_files = [m / layout.ADAPTER_DIR / ADAPTER_WEIGHTS for m in members]
    missing = [str(f) for f in weight_files if not f.is_file()]
    if missing:
        raise ConfigError(f"router adapter weights missing: {missing[0]}; retrain that run")
    states = [load_file(str(f)) for f in weight_files]
    result: Any = set_peft_model_state_dict(trainer.model, average_adapter_states(states))
    unexpected = [k for k in result.unexpected_keys if "lora_" in k or "classifier" in k]
    if unexpected:
        raise ConfigError(f"router adapters do not fit their recipe's model: unexpected {unexpected[:3]}")

    reports = [_member_metrics(m) for m in members]
    seeds = [cfg.seed for cfg in configs]
    training: dict[str, Any] = {
        "steps": sum(int(r.get("steps", 0)) for r in reports),
        "train_seconds": round(sum(float(r.get("train_seconds", 0.0)) for r in reports), 2),
        "soup": {
            "members": [str(m) for m in members],
            "seeds": seeds,
            "member_lora_r": recipe.lora_r,
            "member_in_scope_accuracy": [r.get("in_scope_accuracy") for r in reports],
            "member_accuracy": [r.get("accuracy") for r in reports],
        },
        "history": [],
    }
    logger.info("souping %d routers (seeds %s) into %s", n, seeds, out)
    return finish_router(trainer, prepared, soup_cfg, training, source=splits.source, out=Path(out))


def average_adapter_states(states: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The peft state dict whose update is the mean of the members' updates (see the module docstring).

    lora_A (r x in) stack along rows, lora_B (out x r) along columns divided by N; everything else
    (the trained-in-full head) is averaged.
    """
    import torch

    keys = set(states[0])
    for state in states[1:]:
        if set(state) != keys:
            raise ConfigError("router adapters hold different weights: not trained with one recipe")
    n = len(states)
    averaged: dict[str, Any] = {}
    for key in states[0]:
        tensors = [state[key] for state in states]
        if "lora_A" in key:
            averaged[key] = torch.cat(tensors, dim=0)
        elif "lora_B" in key:
            averaged[key] = torch.cat(tensors, dim=1) / n
        else:
            averaged[key] = torch.stack([t.float() for t in tensors]).mean(dim=0).to(tensors[0].dtype)
    return averaged


def _member_config(member: Path) -> RouterTrainConfig:
    path = member / layout.CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{member} is not a trained router folder (no {layout.CONFIG_FILE})")
    return load_config(path)


def _check_same_recipe(members: Sequence[Path], configs: Sequence[RouterTrainConfig]) -> None:
    first = {k: v for k, v in configs[0].as_dict().items() if k not in PER_RUN_FIELDS}
    for member, cfg in zip(members[1:], configs[1:], strict=True):
        for key, value in cfg.as_dict().items():
            if key not in PER_RUN_FIELDS and first[key] != value:
                raise ConfigError(
                    f"routers {members[0]} and {member} differ in {key} ({first[key]!r} vs {value!r}): "
                    "a soup averages runs of one recipe that differ only in seed"
                )


def _member_metrics(member: Path) -> dict[str, Any]:
    try:
        metrics: dict[str, Any] = json.loads((member / layout.METRICS_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}  # the soup does not need them; they only fill in its report
    return metrics
