"""`hybridllm eval router`: accuracy, macro-F1, out-of-scope recall and latency of a trained router."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from services.core.errors import ConfigError
from services.core.types import IntentPrediction
from services.router.classifier import Engine, IntentRouterModel
from services.router.examples import is_clinc_file, load_clinc, load_examples
from services.router.metrics import classification_metrics
from services.router.policy import apply_oos_threshold

LATENCY_QUERIES = 200
BATCH_SIZE = 64


def read_labelled(data: Path, *, text_col: str = "text", label_col: str = "label") -> list[tuple[str, str]]:
    """JSONL or CSV examples; for CLINC150's data_full.json, its test + oos_test split."""
    if is_clinc_file(data):
        return load_clinc(data).test
    return load_examples(data, text_col=text_col, label_col=label_col)


def final_predictions(model: IntentRouterModel, predictions: Sequence[IntentPrediction]) -> list[str]:
    """The model's intents, with a threshold-method model's rejections turned into its oos label."""
    threshold, oos_label = model.oos_threshold, model.oos_label
    if threshold is None or oos_label is None:
        return [p.intent for p in predictions]
    return [apply_oos_threshold(p, threshold, oos_label).intent for p in predictions]


def measure_latency(
    model: IntentRouterModel,
    texts: Sequence[str],
    *,
    queries: int = LATENCY_QUERIES,
    batch_sizes: Sequence[int] = (BATCH_SIZE,),
) -> dict[str, Any]:
    """Single-query latency end to end (tokenizer included), and batched throughput over all texts.

    `batch_qps` is at the first batch size; `batch_qps_by_size` has each. Texts are repeated up to 512 so
    a small evaluation set still fills several batches of the largest size.
    """
    sample = [texts[i % len(texts)] for i in range(min(queries, max(len(texts), 1)))]
    timings = []
    for text in sample:
        started = time.perf_counter()
        model.predict(text)
        timings.append((time.perf_counter() - started) * 1000.0)
    pool = [texts[i % len(texts)] for i in range(max(len(texts), 512))]
    by_size: dict[int, float] = {}
    for size in batch_sizes:
        started = time.perf_counter()
        for start in range(0, len(pool), size):
            model.predict_batch(pool[start : start + size])
        elapsed = time.perf_counter() - started
        by_size[size] = len(pool) / elapsed if elapsed > 0 else float("inf")
    return {
        "p50_ms": float(np.percentile(timings, 50)),
        "p99_ms": float(np.percentile(timings, 99)),
        "batch_qps": by_size[batch_sizes[0]],
        "batch_qps_by_size": by_size,
    }


def quality_metrics(model: IntentRouterModel, examples: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Accuracy, macro-F1 and (when the data has the model's oos label) oos recall of a loaded model."""
    texts = [t for t, _ in examples]
    gold = [g for _, g in examples]
    predictions: list[IntentPrediction] = []
    for start in range(0, len(texts), BATCH_SIZE):
        predictions.extend(model.predict_batch(texts[start : start + BATCH_SIZE]))
    oos_label = model.oos_label if model.oos_label in set(gold) else None
    return classification_metrics(gold, final_predictions(model, predictions), oos_label=oos_label)


def evaluate_model(
    model: IntentRouterModel,
    examples: Sequence[tuple[str, str]],
    *,
    batch_sizes: Sequence[int] = (BATCH_SIZE,),
) -> dict[str, Any]:
    if not examples:
        raise ConfigError("router evaluation data holds no examples")
    model.warm_up()
    metrics = quality_metrics(model, examples)
    metrics.update(measure_latency(model, [t for t, _ in examples], batch_sizes=batch_sizes))
    metrics["engine"] = model.engine
    return metrics


def evaluate_router(
    model_dir: Path,
    data: Path,
    *,
    text_col: str = "text",
    label_col: str = "label",
    engine: Engine = "onnx",
    threads: int = 1,
    max_length: int = 64,
    quantized: bool = False,
) -> dict[str, Any]:
    """{"accuracy", "macro_f1", "oos_recall" (when the data has the oos class), "in_scope_accuracy",
    "p50_ms", "p99_ms", "batch_qps", "examples", ...}."""
    model = IntentRouterModel(
        Path(model_dir), threads=threads, max_length=max_length, engine=engine, quantized=quantized
    )
    examples = read_labelled(Path(data), text_col=text_col, label_col=label_col)
    return evaluate_model(model, examples)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m services.router.evaluation --model DIR --data FILE` (as `hybridllm eval router`)."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--engine", choices=["onnx", "torch"], default="onnx")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--int8", action="store_true")
    args = parser.parse_args(argv)
    try:
        metrics = evaluate_router(
            args.model, args.data, engine=args.engine, threads=args.threads, quantized=args.int8
        )
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    sys.stdout.write(json.dumps(metrics) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
