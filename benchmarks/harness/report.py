"""Write benchmark results: a JSON file, a Markdown report with tables, PNG plots (matplotlib, Agg)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness.environment import environment_markdown

STAGE_ORDER: tuple[str, ...] = ("privacy", "route", "embed", "search", "rerank", "select", "generate")


def fmt(value: Any, digits: int = 1) -> str:
    """Table cell: numbers rounded, missing values as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if value != 0 and abs(value) < 10 ** (-digits):
            return f"{value:.2e}"
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 1) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(cell, digits) for cell in row) + " |")
    return "\n".join(lines)


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")


def run_label(run: Mapping[str, Any]) -> str:
    if run.get("mode") == "open":
        return f"{run['pipeline']} @ {run['rate']:g} req/s"
    return f"{run['pipeline']} @ c={run['concurrency']}"


def serving_table(runs: Sequence[Mapping[str, Any]]) -> str:
    headers = [
        "run", "ok", "failed", "req/s", "out tok/s", "TTFT p50", "TTFT p99", "TPOT p50", "ITL p50",
        "E2E mean", "E2E p50", "E2E p90", "E2E p95", "E2E p99", "goodput req/s",
    ]  # fmt: skip
    rows = []
    for run in runs:
        s = run["summary"]
        goodput = s.get("goodput", {}).get("request_goodput")
        rows.append([
            run_label(run), s["completed"], s["failed"], s["request_throughput"], s["output_throughput"],
            s["ttft_ms"].get("p50"), s["ttft_ms"].get("p99"), s["tpot_ms"].get("p50"), s["itl_ms"].get("p50"),
            s["e2e_ms"].get("mean"), s["e2e_ms"].get("p50"), s["e2e_ms"].get("p90"), s["e2e_ms"].get("p95"),
            s["e2e_ms"].get("p99"), goodput,
        ])  # fmt: skip
    return markdown_table(headers, rows, digits=2) + "\n\nLatencies in ms (client side)."


def stage_table(runs: Sequence[Mapping[str, Any]]) -> str:
    """Server-side time and cost per stage, from the /metrics deltas of each run."""
    rows = []
    for run in runs:
        completed = max(run["summary"]["completed"], 1)
        stages = run.get("server", {}).get("stages", {})
        for pipeline, per_stage in sorted(stages.items()):
            for stage, numbers in sorted(per_stage.items(), key=lambda kv: _stage_rank(kv[0])):
                rows.append([
                    run_label(run), pipeline, stage, int(numbers["count"]), numbers["mean_ms"],
                    numbers["seconds"] * 1000.0 / completed, numbers["cost_usd"] * 1000.0 / completed,
                ])  # fmt: skip
    if not rows:
        return "_The server exposed no `hybrid_stage_duration_seconds` samples for these runs._"
    headers = ["run", "pipeline", "stage", "calls", "mean ms/call", "ms per request", "USD per 1k requests"]
    return markdown_table(headers, rows, digits=3)


def _stage_rank(stage: str) -> int:
    return STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER)


def stage_ms_per_request(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """{pipeline: {stage: server ms per completed request}}, pooled over the runs of each pipeline."""
    seconds: dict[str, dict[str, float]] = {}
    completed: dict[str, int] = {}
    for run in runs:
        completed[run["pipeline"]] = completed.get(run["pipeline"], 0) + run["summary"]["completed"]
        for pipeline, per_stage in run.get("server", {}).get("stages", {}).items():
            if pipeline != run["pipeline"]:
                continue
            for stage, numbers in per_stage.items():
                bucket = seconds.setdefault(pipeline, {})
                bucket[stage] = bucket.get(stage, 0.0) + numbers["seconds"]
    return {
        pipeline: {stage: s * 1000.0 / max(completed.get(pipeline, 0), 1) for stage, s in stages.items()}
        for pipeline, stages in seconds.items()
    }


def write_plots(runs: Sequence[Mapping[str, Any]], out_dir: Path) -> list[str]:
    """latency_cdf.png, p99_vs_load.png, stage_breakdown.png; returns the file names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[str] = []
    out_dir.mkdir(parents=True, exist_ok=True)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in runs:
        values = sorted(run.get("e2e_ms", []))
        if values:
            ax.plot(values, [(i + 1) / len(values) for i in range(len(values))], label=run_label(run))
    ax.set_xlabel("end-to-end latency (ms)")
    ax.set_ylabel("fraction of requests")
    ax.set_title("Latency CDF per pipeline")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "latency_cdf.png", dpi=110)
    plt.close(fig)
    written.append("latency_cdf.png")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for mode, key, xlabel in (
        ("closed", "concurrency", "concurrency"),
        ("open", "rate", "offered rate (req/s)"),
    ):
        for pipeline in sorted({r["pipeline"] for r in runs if r.get("mode") == mode}):
            points = sorted(
                (r[key], r["summary"]["e2e_ms"].get("p99", math.nan))
                for r in runs
                if r.get("mode") == mode and r["pipeline"] == pipeline
            )
            if points:
                ax.plot(
                    [p[0] for p in points], [p[1] for p in points], marker="o", label=f"{pipeline} ({mode})"
                )
                ax.set_xlabel(xlabel)
    ax.set_ylabel("p99 end-to-end latency (ms)")
    ax.set_title("p99 latency vs load")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "p99_vs_load.png", dpi=110)
    plt.close(fig)
    written.append("p99_vs_load.png")

    breakdown = stage_ms_per_request(runs)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    pipelines = sorted(breakdown)
    stages = sorted({s for per in breakdown.values() for s in per}, key=_stage_rank)
    bottoms = [0.0] * len(pipelines)
    for stage in stages:
        heights = [breakdown[p].get(stage, 0.0) for p in pipelines]
        ax.bar(pipelines, heights, bottom=bottoms, label=stage)
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    ax.set_ylabel("server ms per request")
    ax.set_title("Where the time goes (from /metrics)")
    if stages:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no stage metrics", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(out_dir / "stage_breakdown.png", dpi=110)
    plt.close(fig)
    written.append("stage_breakdown.png")
    return written


def write_load_report(results: Mapping[str, Any], out_dir: Path) -> dict[str, str]:
    """results.json, report.md and the plots into out_dir; returns {kind: path}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "results.json"
    write_json(json_path, results)
    runs = results["runs"]
    plots = write_plots(runs, out_dir)
    config = results.get("config", {})
    parts = [
        f"# Load benchmark: {results.get('name', 'load')}",
        "",
        environment_markdown(results.get("environment")),
        "",
        f"Target `{results.get('base_url')}`, {config.get('stream') and 'streaming' or 'non-streaming'}, "
        f"max_tokens {config.get('max_tokens')}, started {results.get('started_at')}.",
        f"Load generator: {results.get('load_generator', 'this process')}.",
        "",
        "## Serving numbers",
        "",
        serving_table(runs),
        "",
        "## Server-side stages (delta of /metrics before and after each run)",
        "",
        stage_table(runs),
        "",
    ]
    return write_markdown_report(out_dir, parts, plots, json_path)


def write_markdown_report(
    out_dir: Path, parts: Sequence[str], plots: Sequence[str], json_path: Path
) -> dict[str, str]:
    """report.md from `parts` and a Plots section; the paths of everything the report consists of."""
    lines = [*parts, "## Plots", "", *[f"![{name}]({name})" for name in plots], ""]
    md_path = out_dir / "report.md"
    md_path.write_text("\n".join(lines), encoding="utf-8")
    return {"json": str(json_path), "markdown": str(md_path), **{p: str(out_dir / p) for p in plots}}
