"""A trained router into its folder: evaluate with the calibration, export (adapter, merged ONNX fp32 and
int8), write the files the service reads (services/router/artifacts.py), then swap the folder in whole."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from services.core.atomic import staged_dir
from services.router import artifacts as layout
from services.router.examples import Example
from services.router.export import export_onnx, quantize_int8
from training.router_calibration import calibrate, split_metrics, threshold_objective
from training.router_card import model_card, plot_confusion
from training.router_config import RouterTrainConfig
from training.router_labels import PreparedData
from training.router_model import EVAL_BATCH, RouterTrainer, batches

logger = logging.getLogger(__name__)

HEADLINE_METRICS = ("accuracy", "macro_f1", "in_scope_accuracy", "oos_recall")
# Rows compared between the merged torch model and its ONNX export.
EXPORT_CHECK_ROWS = 256


@dataclass(frozen=True, slots=True)
class RouterEvaluation:
    """The calibrated model's scores: on validation, and on the split the report is about (test if any)."""

    temperature: float
    threshold: float | None
    threshold_calibration: dict[str, Any]
    val_metrics: dict[str, Any]
    split: str
    examples: Sequence[Example]
    metrics: dict[str, Any]
    predicted: list[str]


def evaluate_calibrated(
    trainer: RouterTrainer, prepared: PreparedData, cfg: RouterTrainConfig
) -> RouterEvaluation:
    calibration = calibrate(trainer, prepared, cfg)
    temperature, threshold = calibration["temperature"], calibration["threshold"]
    val_logits = calibration["val_logits"]
    val_metrics, _ = split_metrics(
        val_logits, prepared.val, prepared.labels, temperature, threshold, prepared.oos_label
    )
    split, examples = ("test", prepared.test) if prepared.test else ("val", prepared.val)
    logits = trainer.logits([t for t, _ in prepared.test]) if prepared.test else val_logits
    metrics, predicted = split_metrics(
        logits, examples, prepared.labels, temperature, threshold, prepared.oos_label
    )
    return RouterEvaluation(
        temperature=temperature,
        threshold=threshold,
        threshold_calibration=calibration.get("threshold_calibration", {}),
        val_metrics=val_metrics,
        split=split,
        examples=examples,
        metrics=metrics,
        predicted=predicted,
    )


def _onnx_logits(path: Path, trainer: RouterTrainer, texts: Sequence[str]) -> npt.NDArray[np.float32]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = trainer.cfg.torch_threads
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    out = np.zeros((len(texts), len(trainer.labels)), dtype=np.float32)
    for batch in batches(range(len(texts)), EVAL_BATCH):
        feed = {k: v.numpy() for k, v in trainer.encode([texts[i] for i in batch]).items()}
        out[batch] = session.run(None, feed)[0]
    return out


def export_models(
    trainer: RouterTrainer, prepared: PreparedData, evaluation: RouterEvaluation, folder: Path
) -> dict[str, Any]:
    """The adapter, the merged model as ONNX (checked against torch) and its int8 copy (scored); returns
    the export report. Afterwards `trainer.model` is the merged model, exactly what was exported."""
    cfg = trainer.cfg
    trainer.model.save_pretrained(str(folder / layout.ADAPTER_DIR))
    merged = trainer.model.merge_and_unload().eval()
    trainer.model = merged
    onnx_path = export_onnx(merged, folder / layout.ONNX_FILE, opset=cfg.onnx_opset)
    texts = [t for t, _ in evaluation.examples]
    onnx_logits = _onnx_logits(onnx_path, trainer, texts[:EXPORT_CHECK_ROWS])
    merged_logits = trainer.logits(texts[:EXPORT_CHECK_ROWS])
    report: dict[str, Any] = {"onnx_max_abs_logit_diff": float(np.abs(onnx_logits - merged_logits).max())}
    if cfg.export_int8:
        int8_path = quantize_int8(onnx_path, folder / layout.ONNX_INT8_FILE)
        int8_metrics, _ = split_metrics(
            _onnx_logits(int8_path, trainer, texts),
            evaluation.examples,
            prepared.labels,
            evaluation.temperature,
            evaluation.threshold,
            prepared.oos_label,
        )
        report["int8"] = {k: int8_metrics.get(k) for k in HEADLINE_METRICS}
    shutil.copy2(trainer.tokenizer_file, folder / layout.TOKENIZER_FILE)
    return report


def router_metrics(
    trainer: RouterTrainer,
    prepared: PreparedData,
    cfg: RouterTrainConfig,
    evaluation: RouterEvaluation,
    export: dict[str, Any],
    training: dict[str, Any],
) -> dict[str, Any]:
    """metrics.json: the headline split's metrics, calibration, data sizes, export and training reports."""
    return {
        **evaluation.metrics,
        "evaluated_on": evaluation.split,
        "val": evaluation.val_metrics,
        "test": evaluation.metrics if prepared.test else None,
        "threshold": evaluation.threshold,
        "temperature": evaluation.temperature,
        "oos_method": cfg.oos_method,
        "oos_label": prepared.oos_label,
        "labels": prepared.labels,
        "train_examples": len(prepared.train),
        "val_examples": len(prepared.val),
        "test_examples": len(prepared.test),
        "trainable_parameters": trainer.trainable_parameters,
        "export": export,
        **{k: v for k, v in training.items() if k != "history"},
        "history": training["history"],
    }


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_router_files(
    folder: Path,
    prepared: PreparedData,
    cfg: RouterTrainConfig,
    evaluation: RouterEvaluation,
    metrics: dict[str, Any],
    source: str,
) -> None:
    """Labels, calibration, threshold, metrics, the recipe, the confusion plot and the model card."""
    _write_json(
        folder / layout.LABELS_FILE,
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
        folder / layout.CALIBRATION_FILE, {"temperature": evaluation.temperature, "fitted_on": "validation"}
    )
    _write_json(
        folder / layout.THRESHOLD_FILE,
        {
            "oos_method": cfg.oos_method,
            "threshold": evaluation.threshold,
            "objective": threshold_objective(cfg),
            **evaluation.threshold_calibration,
        },
    )
    _write_json(folder / layout.METRICS_FILE, metrics)
    (folder / layout.CONFIG_FILE).write_text(yaml.safe_dump(cfg.as_dict(), sort_keys=False), encoding="utf-8")
    rejected = [prepared.oos_label] if evaluation.threshold is not None and prepared.oos_label else []
    plot_confusion(
        [g for _, g in evaluation.examples],
        evaluation.predicted,
        prepared.labels + rejected,
        folder / layout.CONFUSION_FILE,
    )
    (folder / layout.MODEL_CARD_FILE).write_text(model_card(metrics, cfg, source), encoding="utf-8")


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
    evaluation = evaluate_calibrated(trainer, prepared, cfg)
    with staged_dir(out, replace=True) as folder:
        export = export_models(trainer, prepared, evaluation, folder)
        metrics = router_metrics(trainer, prepared, cfg, evaluation, export, training)
        # `hybridllm route --explain` finds the nearest training examples in this file.
        metrics[layout.TRAIN_DATA_KEY] = str(Path(source).resolve())
        write_router_files(folder, prepared, cfg, evaluation, metrics, source)
    logger.info("router written to %s", out)
    return metrics
