"""Router latency and quality: models x engines (torch, ONNX fp32, ONNX int8) x threads, side by side.

    python -m benchmarks.components.router --model var/router [--model fast=var/router-4layers ...] \
        --data corpus/router/test.jsonl [--generalization corpus/router/generalization_sourcegraph.jsonl] \
        [--threads 1 2] [--variants torch onnx_fp32 onnx_int8] [--rounds 3] [--name NAME]

Every configuration is loaded first; then the timing loop runs in rounds, each round timing every
configuration once, so a burst of load on a shared machine hits all of them alike. Figures are the
median over rounds, with the spread (min-max) alongside, and ratios against the first configuration at the
same thread count. Writes benchmarks/results/<name>.{json,md,png}; prints the JSON as the last stdout line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness.environment import environment, environment_markdown
from benchmarks.harness.paths import RESULTS_ROOT
from services.core.errors import ConfigError
from services.router.classifier import Engine, IntentRouterModel
from services.router.evaluation import measure_latency, quality_metrics, read_labelled

VARIANTS: dict[str, tuple[Engine, bool]] = {
    "torch": ("torch", False),
    "onnx_fp32": ("onnx", False),
    "onnx_int8": ("onnx", True),
}
QUALITY_KEYS = ("accuracy", "macro_f1", "in_scope_accuracy", "oos_recall")


@dataclass
class Config:
    model_name: str
    variant: str
    threads: int
    router: IntentRouterModel

    @property
    def label(self) -> str:
        return f"{self.model_name} {self.variant} {self.threads}t"


def parse_model(item: str) -> tuple[str, Path]:
    """`NAME=DIR`, or a bare `DIR` named after its folder."""
    name, sep, path = item.partition("=")
    if not sep:
        return Path(item).name, Path(item)
    if not name or not path:
        raise ConfigError(f"--model wants DIR or NAME=DIR, got {item!r}")
    return name, Path(path)


def quality(router: IntentRouterModel, examples: list[tuple[str, str]]) -> dict[str, Any]:
    metrics = quality_metrics(router, examples)
    return {k: metrics.get(k) for k in QUALITY_KEYS}


def _median_and_spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run(
    models: list[tuple[str, Path]],
    data: Path,
    generalization: Path | None,
    threads: list[int],
    variants: list[str],
    batch_sizes: list[int],
    rounds: int,
) -> dict[str, Any]:
    load_at_start = os.getloadavg()[0]
    examples = read_labelled(data)
    general = read_labelled(generalization) if generalization else []
    texts = [t for t, _ in examples]
    configs: list[Config] = []
    for count in threads:
        for model_name, model_dir in models:
            for variant in variants:
                engine, quantized = VARIANTS[variant]
                router = IntentRouterModel(model_dir, threads=count, engine=engine, quantized=quantized)
                router.warm_up()
                configs.append(Config(model_name, variant, count, router))
    # quality does not depend on the thread count: score each (model, variant) once
    scored: dict[tuple[str, str], dict[str, Any]] = {}
    for c in configs:
        if (c.model_name, c.variant) not in scored:
            scored[(c.model_name, c.variant)] = {
                "test": quality(c.router, examples),
                "generalization": quality(c.router, general) if general else None,
            }
    timings: dict[str, list[dict[str, Any]]] = {c.label: [] for c in configs}
    for _ in range(rounds):
        for c in configs:
            timings[c.label].append(measure_latency(c.router, texts, batch_sizes=batch_sizes))
    rows: list[dict[str, Any]] = []
    for c in configs:
        samples = timings[c.label]
        row: dict[str, Any] = {
            "model": c.model_name,
            "variant": c.variant,
            "threads": c.threads,
            **scored[(c.model_name, c.variant)],
            "p50_ms": _median_and_spread([s["p50_ms"] for s in samples]),
            "p99_ms": _median_and_spread([s["p99_ms"] for s in samples]),
            "batch_qps": {
                str(size): _median_and_spread([s["batch_qps_by_size"][size] for s in samples])
                for size in batch_sizes
            },
        }
        rows.append(row)
    for row in rows:
        base = next(r for r in rows if r["threads"] == row["threads"])
        largest = str(batch_sizes[-1])
        row["p50_speedup_vs_first"] = base["p50_ms"]["median"] / row["p50_ms"]["median"]
        row["qps_ratio_vs_first"] = row["batch_qps"][largest]["median"] / base["batch_qps"][largest]["median"]
    return {
        "environment": environment(),
        "models": {name: str(path) for name, path in models},
        "data": str(data),
        "examples": len(examples),
        "generalization_examples": len(general),
        "cpu_count": os.cpu_count(),
        "batch_sizes": batch_sizes,
        "rounds": rounds,
        "load_average_at_start": round(load_at_start, 2),
        "rows": rows,
    }


def _spread(stat: dict[str, float], fmt: str) -> str:
    return f"{stat['median']:{fmt}} ({stat['min']:{fmt}}-{stat['max']:{fmt}})"


def markdown(result: dict[str, Any], plot_name: str) -> str:
    sizes = result["batch_sizes"]
    lines = [
        f"# Router benchmark ({result['examples']} examples of `{Path(result['data']).name}`)",
        "",
        environment_markdown(result.get("environment")),
        "",
        "| model | variant | threads | accuracy | macro-F1 | oos recall | p50 ms | p99 ms "
        + "".join(f"| q/s, batch {size} " for size in sizes)
        + "| p50 speed-up | q/s ratio | generalisation acc |",
        "|---|---|---|---|---|---|---|---|" + "---|" * len(sizes) + "---|---|---|",
    ]
    for r in result["rows"]:
        test, gen = r["test"], r["generalization"]
        gen_accuracy = "" if gen is None else f"{gen['accuracy']:.4f}"
        qps = "".join(f"{_spread(r['batch_qps'][str(size)], '.0f')} | " for size in sizes)
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['threads']} | {test['accuracy']:.4f} | "
            f"{test['macro_f1']:.4f} | {(test.get('oos_recall') or 0):.4f} | {_spread(r['p50_ms'], '.2f')} | "
            f"{_spread(r['p99_ms'], '.2f')} | {qps}{r['p50_speedup_vs_first']:.2f}x | "
            f"{r['qps_ratio_vs_first']:.2f}x | {gen_accuracy} |"
        )
    lines += [
        "",
        f"Median over {result['rounds']} interleaved rounds (min-max in brackets). Single query: end to end "
        "incl. tokenizer, one text at a time. Batch: texts per predict_batch call (sorted by length into "
        "sub-batches of 32). Ratios are "
        f"against the first row with the same thread count. Load average at start: "
        f"{result['load_average_at_start']}.",
        "",
        f"![router latency and throughput]({plot_name})",
        "",
    ]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    rows = result["rows"]
    labels = [f"{r['model']}\n{r['variant']} {r['threads']}t" for r in rows]
    largest = str(result["batch_sizes"][-1])
    figure, (left, right) = plt.subplots(1, 2, figsize=(max(8, 1.1 * len(rows)), 4.5))
    positions = list(range(len(rows)))
    left.bar(positions, [r["p50_ms"]["median"] for r in rows], color="tab:blue")
    left.set_ylabel("single-query p50, ms")
    right.bar(positions, [r["batch_qps"][largest]["median"] for r in rows], color="tab:green")
    right.set_ylabel(f"queries/s, batches of {largest}")
    for axis in (left, right):
        axis.set_xticks(positions, labels, rotation=60, ha="right", fontsize=7)
    figure.suptitle(f"Router: {result['examples']} queries, median of {result['rounds']} rounds")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append", default=[], metavar="[NAME=]DIR")
    parser.add_argument("--data", type=Path, default=Path("corpus/router/test.jsonl"))
    parser.add_argument("--generalization", type=Path, default=None)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--name", default="router_bench")
    parser.add_argument("--out", type=Path, default=RESULTS_ROOT)
    args = parser.parse_args(argv)
    try:
        if args.rounds < 1 or min(args.threads) < 1 or min(args.batch_sizes) < 1:
            raise ConfigError("--rounds, --threads and --batch-sizes must be >= 1")
        models = [parse_model(item) for item in args.model or ["var/router"]]
        result = run(
            models, args.data, args.generalization, args.threads, args.variants, args.batch_sizes, args.rounds
        )
    except (ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (args.out / f"{args.name}.md").write_text(markdown(result, f"{args.name}.png"), encoding="utf-8")
    plot(result, args.out / f"{args.name}.png")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
