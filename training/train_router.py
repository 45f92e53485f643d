"""Train the intent router: all-MiniLM-L6-v2 + a LoRA adapter (peft, SEQ_CLS) + a classification head.

Steps: config -> data -> model -> train (early stopping on validation macro-F1) -> calibrate (temperature,
and the out-of-scope threshold for the threshold methods) -> evaluate -> export (adapter, merged ONNX fp32
and int8) -> write the folder atomically (build a sibling temp folder, then swap it in).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import shutil
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from services.core.encoding import pad_encodings
from services.core.errors import ConfigError
from services.core.packaged import resolve_encoder
from services.router import artifacts as layout
from services.router.examples import Example, RouterSplits, load_router_data
from services.router.export import export_onnx, quantize_int8
from services.router.metrics import (
    calibrate_oos_threshold,
    classification_metrics,
    confusion_matrix,
    fit_temperature,
    predict_with_threshold,
    softmax,
)
from services.router.modeling import POOLINGS, Pooling, build_classifier
from training.distill import TeacherTargets, distillation_loss, teacher_targets
from training.weight_average import WeightAverage

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "router_lora.yaml"
EVAL_BATCH = 128


@dataclass(frozen=True, slots=True)
class RouterTrainConfig:
    base_model: str = "packaged:all-MiniLM-L6-v2"
    seed: int = 13
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    target_modules: tuple[str, ...] = ("query", "value")
    modules_to_save: tuple[str, ...] = ("classifier", "pooler")
    # cls: BERT's pooler over [CLS]; mean: masked mean of the last hidden states (services/router/modeling)
    pooling: Pooling = "cls"
    # Keep only the encoder's first N layers (None: all): the router's cost per query is linear in N.
    encoder_layers: int | None = None
    # Cross-entropy label smoothing (0: none). 0.1 on CLINC150 changed nothing beyond noise
    # (benchmarks/results/router_clinc150.md); kept as a knob for other data.
    label_smoothing: float = 0.0
    # Evaluate and keep an exponential moving average of the trainable weights (None: the live weights).
    # training/weight_average.py; 0.999 averages over roughly the last 1,000 steps.
    weight_average_decay: float | None = None
    # Knowledge distillation from trained routers given as teachers (training/distill.py): the weight of
    # the soft term (0: none, teachers refused) and the softmax temperature both sides are read at.
    distill_weight: float = 0.0
    distill_temperature: float = 2.0
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    batch_size: int = 16
    epochs: int = 6
    max_length: int = 64
    eval_every_steps: int = 0
    patience: int = 2
    val_fraction: float = 0.15
    oos_method: str = "class"
    # The threshold's objective: None maximises in-scope accuracy + oos recall on validation; a number d
    # maximises oos recall while validation in-scope accuracy stays within d of the unthresholded model's.
    threshold_max_in_scope_drop: float | None = 0.01
    oos_labels: tuple[str, ...] = ("out_of_scope", "oos")
    torch_threads: int = 1
    onnx_opset: int = 17
    export_int8: bool = True

    def __post_init__(self) -> None:
        checks = {
            "lora_r": self.lora_r > 0,
            "lora_alpha": self.lora_alpha > 0,
            "lora_dropout": 0 <= self.lora_dropout < 1,
            "learning_rate": self.learning_rate > 0,
            "warmup_ratio": 0 <= self.warmup_ratio < 1,
            "batch_size": self.batch_size > 0,
            "epochs": self.epochs > 0,
            "max_length": self.max_length >= 8,
            "eval_every_steps": self.eval_every_steps >= 0,
            "patience": self.patience >= 1,
            "val_fraction": 0 < self.val_fraction < 1,
            "pooling": self.pooling in POOLINGS,
            "encoder_layers": self.encoder_layers is None or self.encoder_layers >= 1,
            "label_smoothing": 0 <= self.label_smoothing < 1,
            "weight_average_decay": self.weight_average_decay is None or 0 < self.weight_average_decay < 1,
            "distill_weight": 0 <= self.distill_weight <= 1,
            "distill_temperature": self.distill_temperature > 0,
            "oos_method": self.oos_method in layout.OOS_METHODS,
            "threshold_max_in_scope_drop": self.threshold_max_in_scope_drop is None
            or 0 <= self.threshold_max_in_scope_drop < 1,
            "torch_threads": self.torch_threads >= 1,
            "onnx_opset": self.onnx_opset >= 14,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"router config: invalid {name}, got {getattr(self, name)!r}")

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def load_config(path: Path | None = None, **overrides: Any) -> RouterTrainConfig:
    """The YAML config (default: training/configs/router_lora.yaml) with keyword overrides on top."""
    source = path or DEFAULT_CONFIG
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read router config {source}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"router config {source} must hold a mapping")
    values = {**raw, **{k: v for k, v in overrides.items() if v is not None}}
    known = {f.name for f in dataclasses.fields(RouterTrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"router config {source}: unknown key(s) {unknown}")
    for key in ("target_modules", "modules_to_save", "oos_labels"):
        if key in values:
            values[key] = tuple(values[key])
    try:
        return RouterTrainConfig(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from exc


# -- data ------------------------------------------------------------------------------------------


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


def _batches(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


# -- model -----------------------------------------------------------------------------------------


class RouterTrainer:
    """Holds the model, tokenizer and optimiser state for one run."""

    def __init__(self, cfg: RouterTrainConfig, labels: list[str]) -> None:
        import torch
        from peft import LoraConfig, TaskType, get_peft_model
        from tokenizers import Tokenizer

        self.cfg = cfg
        self.labels = labels
        self.label_index = {label: i for i, label in enumerate(labels)}
        self.base_dir = Path(resolve_encoder(cfg.base_model))
        tokenizer_file = self.base_dir / layout.TOKENIZER_FILE
        if not tokenizer_file.is_file():
            raise ConfigError(f"base model {self.base_dir} has no {layout.TOKENIZER_FILE} (a fast tokenizer)")
        self.tokenizer_file = tokenizer_file
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=cfg.max_length)
        base = build_classifier(str(self.base_dir), labels, cfg.pooling, encoder_layers=cfg.encoder_layers)
        lora = LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.target_modules),
            modules_to_save=list(cfg.modules_to_save),
            bias="none",
        )
        self.model: Any = get_peft_model(base, lora)
        trainable, total = self.model.get_nb_trainable_parameters()
        self.trainable_parameters = int(trainable)
        logger.info("router model: %d trainable of %d parameters", trainable, total)
        self.torch = torch

    def encode(self, texts: Sequence[str]) -> dict[str, Any]:
        ids, mask, types = pad_encodings(self.tokenizer.encode_batch(list(texts)))
        from_numpy = self.torch.from_numpy
        return {
            "input_ids": from_numpy(ids),
            "attention_mask": from_numpy(mask),
            "token_type_ids": from_numpy(types),
        }

    def logits(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Eval-mode logits; texts sorted by length so batches pad little, then put back in order."""
        torch = self.torch
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        self.model.eval()
        with torch.inference_mode():
            for batch in _batches(order, EVAL_BATCH):
                result = self.model(**self.encode([texts[i] for i in batch])).logits
                out[batch] = result.float().numpy()
        return out


# -- train -----------------------------------------------------------------------------------------


def _scored_examples(examples: Sequence[Example], labels: Sequence[str]) -> list[Example]:
    known = set(labels)
    return [e for e in examples if e[1] in known]


def _val_macro_f1(trainer: RouterTrainer, val: Sequence[Example]) -> float:
    scored = _scored_examples(val, trainer.labels)
    logits = trainer.logits([t for t, _ in scored])
    predicted = [trainer.labels[i] for i in logits.argmax(axis=1)]
    return float(classification_metrics([g for _, g in scored], predicted)["macro_f1"])


def _train_loop(
    trainer: RouterTrainer,
    data: PreparedData,
    cfg: RouterTrainConfig,
    *,
    max_steps: int | None,
    progress: bool,
    teacher: TeacherTargets | None = None,
) -> dict[str, Any]:
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from tqdm import tqdm

    torch = trainer.torch
    model = trainer.model
    texts = [t for t, _ in data.train]
    targets = torch.tensor([trainer.label_index[label] for _, label in data.train], dtype=torch.long)
    soft_targets = torch.from_numpy(teacher.logits) if teacher is not None else None
    steps_per_epoch = math.ceil(len(texts) / cfg.batch_size)
    planned = steps_per_epoch * cfg.epochs
    total_steps = min(planned, max_steps) if max_steps is not None else planned
    eval_every = cfg.eval_every_steps or steps_per_epoch
    warmup = int(total_steps * cfg.warmup_ratio)

    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
    )

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    average = WeightAverage(model, cfg.weight_average_decay) if cfg.weight_average_decay else None
    # Validation and the kept checkpoint read the averaged weights when there is an average.
    scored_weights = average.swapped_in if average is not None else nullcontext
    generator = torch.Generator().manual_seed(cfg.seed)
    best_f1, best_step, best_state = -1.0, 0, None
    evals_without_gain = 0
    history: list[dict[str, float]] = []
    step = 0
    stopped_early = False
    logger.info(
        "training %d steps (%d a validation pass), %d examples, batch %d",
        total_steps, eval_every, len(texts), cfg.batch_size,
    )  # fmt: skip
    bar = tqdm(total=total_steps, desc="train router", file=sys.stderr, disable=not progress, leave=False)
    started = time.perf_counter()
    while step < total_steps and not stopped_early:
        model.train()
        for batch in _batches(torch.randperm(len(texts), generator=generator).tolist(), cfg.batch_size):
            logits = model(**trainer.encode([texts[i] for i in batch])).logits
            if soft_targets is None:
                loss = torch.nn.functional.cross_entropy(
                    logits, targets[batch], label_smoothing=cfg.label_smoothing
                )
            else:
                loss = distillation_loss(
                    logits,
                    soft_targets[batch],
                    targets[batch],
                    weight=cfg.distill_weight,
                    temperature=cfg.distill_temperature,
                    label_smoothing=cfg.label_smoothing,
                )
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if average is not None:
                average.update()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if step % eval_every == 0 or step == total_steps:
                with scored_weights():
                    f1 = _val_macro_f1(trainer, data.val)
                    improved = f1 > best_f1
                    if improved:
                        state = get_peft_model_state_dict(model)
                        best_state = {k: v.detach().clone() for k, v in state.items()}
                history.append({"step": step, "val_macro_f1": f1, "loss": float(loss.item())})
                logger.info("step %d: val macro-F1 %.4f", step, f1)
                if improved:
                    best_f1, best_step, evals_without_gain = f1, step, 0
                else:
                    evals_without_gain += 1
                    if evals_without_gain >= cfg.patience:
                        stopped_early = True
                        break
                model.train()
            if step >= total_steps:
                break
    bar.close()
    train_seconds = time.perf_counter() - started
    if best_state is not None:
        set_peft_model_state_dict(model, best_state)
    return {
        "steps": step,
        "best_step": best_step,
        "epochs_run": round(step / steps_per_epoch, 2),
        "stopped_early": stopped_early,
        "best_val_macro_f1": best_f1,
        "train_seconds": round(train_seconds, 2),
        "seconds_per_step": round(train_seconds / max(1, step), 4),
        "history": history,
    }


# -- calibrate and evaluate ------------------------------------------------------------------------


def _calibrate(trainer: RouterTrainer, data: PreparedData, cfg: RouterTrainConfig) -> dict[str, Any]:
    val_texts = [t for t, _ in data.val]
    val_logits = trainer.logits(val_texts)
    in_model = [i for i, (_, label) in enumerate(data.val) if label in trainer.label_index]
    targets = [trainer.label_index[data.val[i][1]] for i in in_model]
    temperature = fit_temperature(val_logits[in_model], targets)
    result: dict[str, Any] = {"temperature": temperature, "threshold": None, "val_logits": val_logits}
    if cfg.oos_method in layout.THRESHOLD_METHODS:
        probabilities = softmax(val_logits, temperature)
        best = [trainer.labels[int(b)] for b in probabilities.argmax(axis=1)]
        correct = [b == label for b, (_, label) in zip(best, data.val, strict=True)]
        is_oos = [label == data.oos_label for _, label in data.val]
        calibration = calibrate_oos_threshold(
            probabilities.max(axis=1).tolist(),
            correct,
            is_oos,
            predicted_oos=[b == data.oos_label for b in best],
            max_in_scope_drop=cfg.threshold_max_in_scope_drop,
        )
        result["threshold"] = calibration["threshold"]
        result["threshold_calibration"] = calibration
    return result


def _threshold_objective(cfg: RouterTrainConfig) -> str:
    if cfg.threshold_max_in_scope_drop is None:
        return "max in-scope accuracy + oos recall on validation (calibrated max probability)"
    return (
        "max oos recall on validation with in-scope accuracy within "
        f"{cfg.threshold_max_in_scope_drop} of the unthresholded model's (calibrated max probability)"
    )


def _split_metrics(
    logits: npt.NDArray[np.float32],
    examples: Sequence[Example],
    labels: Sequence[str],
    temperature: float,
    threshold: float | None,
    oos_label: str | None,
) -> tuple[dict[str, Any], list[str]]:
    predicted = predict_with_threshold(softmax(logits, temperature), labels, threshold, oos_label)
    metrics = classification_metrics([g for _, g in examples], predicted, oos_label=oos_label)
    return metrics, predicted


# -- save ------------------------------------------------------------------------------------------


def _plot_confusion(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    matrix = confusion_matrix(gold, predicted, labels)
    size = 4 + min(len(labels), 40) * 0.25
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    if len(labels) <= 20:
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        for (row, col), value in np.ndenumerate(matrix):
            ax.text(col, row, str(value), ha="center", va="center", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(f"router confusion matrix ({len(gold)} examples)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _model_card(metrics: dict[str, Any], cfg: RouterTrainConfig, source: str) -> str:
    head = {k: metrics.get(k) for k in ("accuracy", "macro_f1", "in_scope_accuracy", "oos_recall")}
    shown = ", ".join(f"{k} {v:.4f}" for k, v in head.items() if isinstance(v, float))
    labels = metrics["labels"]
    label_list = ", ".join(labels[:12]) + (" ..." if len(labels) > 12 else "")
    return f"""# Intent router

LoRA-tuned {cfg.base_model} sequence classifier that routes chat requests by intent.

- Data: `{Path(source).name}`: {metrics["train_examples"]} training, {metrics["val_examples"]} validation,
  {metrics["test_examples"]} test examples; {len(labels)} labels: {label_list}
- Config: LoRA r={cfg.lora_r}, alpha={cfg.lora_alpha}, dropout={cfg.lora_dropout}, target modules
  {list(cfg.target_modules)}, trained in full {list(cfg.modules_to_save)}; {cfg.pooling} pooling,
  {cfg.encoder_layers or "all"} encoder layers; lr {cfg.learning_rate}, batch {cfg.batch_size}, up to
  {cfg.epochs} epochs, early stopping on validation macro-F1 (patience {cfg.patience}), seed {cfg.seed}.
  {metrics["steps"]} steps in {metrics["train_seconds"]} s.{_soup_line(metrics)}{_distill_line(metrics)}
- Out of scope: `{cfg.oos_method}` method; threshold {metrics["threshold"]}; softmax temperature
  {metrics["temperature"]:.3f} (fitted on validation data).
- Metrics ({metrics["evaluated_on"]} split): {shown}.
- Serving: `model.onnx` (merged model, ONNX Runtime, no torch needed), `model.int8.onnx` (dynamic int8),
  `adapter/` (peft adapter over the base model, for the torch path).

Intended use: choosing a pipeline (direct prompt, retrieval, refusal) per request in the hybridllm service.
Limits: trained on short English queries; texts longer than {cfg.max_length} tokens are truncated; the
confidence is calibrated on validation data of the same distribution and drifts on different traffic;
out-of-scope detection is weaker on topics unlike any training example. Not a safety filter.
"""


def _soup_line(metrics: dict[str, Any]) -> str:
    soup = metrics.get("soup")
    if not soup:
        return ""
    return (
        f"\n- Weight soup (training/soup_router.py) of {len(soup['seeds'])} runs of one recipe, seeds "
        f"{soup['seeds']}, LoRA r={soup['member_lora_r']} each; steps and seconds above are their sum."
    )


def _distill_line(metrics: dict[str, Any]) -> str:
    kd = metrics.get("distillation")
    if not kd:
        return ""
    return (
        f"\n- Distilled (training/distill.py) from the mean logits of {len(kd['teachers'])} routers "
        f"({', '.join(kd['teachers'])}), weight {kd['weight']}, temperature {kd['temperature']}."
    )


def _onnx_logits(path: Path, trainer: RouterTrainer, texts: Sequence[str]) -> npt.NDArray[np.float32]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = trainer.cfg.torch_threads
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    out = np.zeros((len(texts), len(trainer.labels)), dtype=np.float32)
    for batch in _batches(range(len(texts)), EVAL_BATCH):
        feed = {k: v.numpy() for k, v in trainer.encode([texts[i] for i in batch]).items()}
        out[batch] = session.run(None, feed)[0]
    return out


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def swap_in(built: Path, out: Path) -> None:
    """Replace `out` by `built`: rename the old folder away, rename the new one in, delete the old one."""
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    if out.exists():
        out.rename(old)
    try:
        built.rename(out)
    except OSError:
        if old.exists():
            old.rename(out)  # put the previous model back where it served from
        raise
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


# -- entry point -----------------------------------------------------------------------------------


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
    training = _train_loop(trainer, prepared, cfg, max_steps=max_steps, progress=progress, teacher=teacher)
    if teacher is not None:
        training["distillation"] = {
            "teachers": teacher.teachers,
            "teacher_seeds": [load_config(Path(t) / layout.CONFIG_FILE).seed for t in teachers],
            "weight": cfg.distill_weight,
            "temperature": cfg.distill_temperature,
            "teacher_seconds": teacher.seconds,
        }
    return finish_router(trainer, prepared, cfg, training, source=splits.source, out=Path(out))


def finish_router(
    trainer: RouterTrainer,
    prepared: PreparedData,
    cfg: RouterTrainConfig,
    training: dict[str, Any],
    *,
    source: str,
    out: Path,
) -> dict[str, Any]:
    """Calibrate, evaluate, export and save a trained router into `out` (atomically); return its metrics.

    `training` is the training loop's report (steps, timings, history), copied into metrics.json.
    """
    # calibrate + evaluate
    calibration = _calibrate(trainer, prepared, cfg)
    temperature, threshold = calibration["temperature"], calibration["threshold"]
    val_metrics, _ = _split_metrics(
        calibration["val_logits"], prepared.val, prepared.labels, temperature, threshold, prepared.oos_label
    )
    eval_split, eval_examples = ("test", prepared.test) if prepared.test else ("val", prepared.val)
    eval_logits = (
        trainer.logits([t for t, _ in prepared.test]) if prepared.test else calibration["val_logits"]
    )
    eval_metrics, eval_predicted = _split_metrics(
        eval_logits, eval_examples, prepared.labels, temperature, threshold, prepared.oos_label
    )

    # save, into a sibling temp folder first
    out.parent.mkdir(parents=True, exist_ok=True)
    building = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    building.mkdir()
    try:
        trainer.model.save_pretrained(str(building / layout.ADAPTER_DIR))
        merged = trainer.model.merge_and_unload().eval()
        trainer.model = merged  # eval passes below run the merged weights, exactly what was exported
        onnx_path = export_onnx(merged, building / layout.ONNX_FILE, opset=cfg.onnx_opset)
        eval_texts = [t for t, _ in eval_examples]
        onnx_logits = _onnx_logits(onnx_path, trainer, eval_texts[:256])
        merged_logits = trainer.logits(eval_texts[:256])
        export_report: dict[str, Any] = {
            "onnx_max_abs_logit_diff": float(np.abs(onnx_logits - merged_logits).max()),
        }
        if cfg.export_int8:
            int8_path = quantize_int8(onnx_path, building / layout.ONNX_INT8_FILE)
            int8_metrics, _ = _split_metrics(
                _onnx_logits(int8_path, trainer, eval_texts),
                eval_examples,
                prepared.labels,
                temperature,
                threshold,
                prepared.oos_label,
            )
            export_report["int8"] = {
                k: int8_metrics.get(k) for k in ("accuracy", "macro_f1", "in_scope_accuracy", "oos_recall")
            }
        shutil.copy2(trainer.tokenizer_file, building / layout.TOKENIZER_FILE)

        metrics: dict[str, Any] = {
            **{k: v for k, v in eval_metrics.items()},
            "evaluated_on": eval_split,
            "val": val_metrics,
            "test": eval_metrics if prepared.test else None,
            "threshold": threshold,
            "temperature": temperature,
            "oos_method": cfg.oos_method,
            "oos_label": prepared.oos_label,
            "labels": prepared.labels,
            "train_examples": len(prepared.train),
            "val_examples": len(prepared.val),
            "test_examples": len(prepared.test),
            "trainable_parameters": trainer.trainable_parameters,
            "export": export_report,
            **{k: v for k, v in training.items() if k != "history"},
            "history": training["history"],
        }
        _write_json(
            building / layout.LABELS_FILE,
            {
                "labels": prepared.labels,
                "oos_label": prepared.oos_label,
                "oos_method": cfg.oos_method,
                "base_model": cfg.base_model,
                "max_length": cfg.max_length,
                "pooling": cfg.pooling,
                "encoder_layers": cfg.encoder_layers,
            },
        )
        _write_json(
            building / layout.CALIBRATION_FILE, {"temperature": temperature, "fitted_on": "validation"}
        )
        _write_json(
            building / layout.THRESHOLD_FILE,
            {
                "oos_method": cfg.oos_method,
                "threshold": threshold,
                "objective": _threshold_objective(cfg),
                **calibration.get("threshold_calibration", {}),
            },
        )
        _write_json(building / layout.METRICS_FILE, metrics)
        (building / layout.CONFIG_FILE).write_text(
            yaml.safe_dump(cfg.as_dict(), sort_keys=False), encoding="utf-8"
        )
        _plot_confusion(
            [g for _, g in eval_examples],
            eval_predicted,
            prepared.labels + ([prepared.oos_label] if threshold is not None and prepared.oos_label else []),
            building / layout.CONFUSION_FILE,
        )
        (building / layout.MODEL_CARD_FILE).write_text(_model_card(metrics, cfg, source), encoding="utf-8")
        swap_in(building, out)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    logger.info("router written to %s", out)
    return metrics


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
