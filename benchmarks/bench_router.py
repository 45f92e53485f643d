"""Router latency and quality: torch (merged) vs ONNX fp32 vs ONNX int8, side by side in one run.

    python -m benchmarks.bench_router --model var/router --data corpus/router/test.jsonl \
        [--generalization corpus/router/generalization_sourcegraph.jsonl] [--threads 1 2] [--name NAME]

Writes benchmarks/results/<name>.json and .md; prints one JSON object as the last stdout line.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from services.router.classifier import IntentRouterModel
from services.router.evaluation import evaluate_model, read_labelled

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS: tuple[tuple[str, str, bool], ...] = (
    ("torch", "torch", False),
    ("onnx_fp32", "onnx", False),
    ("onnx_int8", "onnx", True),
)
KEYS = (
    "accuracy",
    "macro_f1",
    "in_scope_accuracy",
    "oos_recall",
    "p50_ms",
    "p99_ms",
    "batch_qps",
    "batch_qps_by_size",
)


def run(
    model_dir: Path,
    data: Path,
    generalization: Path | None,
    threads: list[int],
    batch_sizes: list[int],
) -> dict[str, Any]:
    load_at_start = os.getloadavg()[0]
    examples = read_labelled(data)
    general = read_labelled(generalization) if generalization else []
    rows: list[dict[str, Any]] = []
    for count in threads:
        for name, engine, quantized in VARIANTS:
            model = IntentRouterModel(model_dir, threads=count, engine=engine, quantized=quantized)  # type: ignore[arg-type]
            row: dict[str, Any] = {"variant": name, "threads": count}
            row.update(
                {
                    k: v
                    for k, v in evaluate_model(model, examples, batch_sizes=batch_sizes).items()
                    if k in KEYS
                }
            )
            if general:
                gen = evaluate_model(model, general)
                row["generalization"] = {
                    k: gen.get(k) for k in ("accuracy", "macro_f1", "in_scope_accuracy", "oos_recall")
                }
            rows.append(row)
    for row in rows:
        torch_row = next(r for r in rows if r["variant"] == "torch" and r["threads"] == row["threads"])
        row["speedup_p50_vs_torch"] = torch_row["p50_ms"] / row["p50_ms"]
    return {
        "model": str(model_dir),
        "data": str(data),
        "examples": len(examples),
        "cpu_count": os.cpu_count(),
        "batch_sizes": batch_sizes,
        "load_average_at_start": round(load_at_start, 2),
        "rows": rows,
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Router benchmark ({result['examples']} examples of `{Path(result['data']).name}`)",
        "",
        "| variant | threads | accuracy | macro-F1 | oos recall | p50 ms | p99 ms "
        + "".join(f"| q/s, batch {size} " for size in result["batch_sizes"])
        + "| p50 speed-up vs torch | generalisation acc |",
        "|---|---|---|---|---|---|---|" + "---|" * len(result["batch_sizes"]) + "---|---|",
    ]
    for r in result["rows"]:
        gen = r.get("generalization", {}).get("accuracy")
        qps = "".join(f"{r['batch_qps_by_size'][size]:.0f} | " for size in result["batch_sizes"])
        lines.append(
            f"| {r['variant']} | {r['threads']} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | "
            f"{(r.get('oos_recall') or 0):.4f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {qps}"
            f"{r['speedup_p50_vs_torch']:.2f}x | {'' if gen is None else f'{gen:.4f}'} |"
        )
    lines.append("")
    lines.append(
        "Single query: end to end incl. tokenizer, one text at a time. Batch: texts per predict_batch call "
        "(sorted by length into sub-batches of 32 inside). "
        f"Load average at start: {result['load_average_at_start']}."
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=Path("var/router"))
    parser.add_argument("--data", type=Path, default=Path("corpus/router/test.jsonl"))
    parser.add_argument("--generalization", type=Path, default=None)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--name", default="router_bench")
    args = parser.parse_args()
    result = run(args.model, args.data, args.generalization, args.threads, args.batch_sizes)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{args.name}.md").write_text(markdown(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
