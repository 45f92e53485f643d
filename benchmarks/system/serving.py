"""Serving under load: the embedded generator unbatched (max_concurrency 1) and with each batch scheduler.

    python -m benchmarks.system.serving                      # both workloads, concurrency 1,2,4,8
    python -m benchmarks.system.serving --requests 8 --concurrency 1,4 --workloads prompt --modes off,cohort

One `hybridllm serve` process per mode, with the embedded defaults, serves the same handbook index: `off`
with `generator.max_concurrency` 1 (one og.Generator per request), `held` the same with the GIL held while
the generator computes (`generator.release_gil: false`), `engine` and `cohort` with the batch size
as max_concurrency and that `generator.batch_scheduler`. For each workload and concurrency level the modes
run back to back, in an order that rotates from level to level, so a drift of the machine's load touches
all of them.
Workloads: `prompt` sends the built-in prompts through the `prompt` pipeline, `rag` sends corpus/eval's
knowledge questions through `rag`. Each level is a closed loop of --requests streamed requests; ratios are
taken against concurrency 1 of the same mode, and the issue's goals are checked on the batched mode.
The 1-minute load average is recorded at the start and end of every run. Prints one JSON object as the last
stdout line; writes serving.md, serving.json and serving.png into benchmarks/results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.harness import prom
from benchmarks.harness.client import PromptItem, send_chat
from benchmarks.harness.environment import environment, environment_markdown
from benchmarks.harness.load import configure_logging, make_http_client
from benchmarks.harness.paths import REPO_ROOT, RESULTS_ROOT
from benchmarks.harness.report import markdown_table, write_json
from benchmarks.harness.stats import summarize_records
from benchmarks.harness.workload import Bounds, load_prompts, run_closed_loop
from benchmarks.system.grounding import knowledge_items

HANDBOOK_EVAL = REPO_ROOT / "corpus" / "eval" / "handbook_eval.jsonl"
DEFAULT_INDEX = REPO_ROOT / "var" / "index"
WORKLOAD_PIPELINES = {"prompt": "prompt", "rag": "rag"}
MODES = ("off", "held", "engine", "cohort")
BATCHED_MODES = ("engine", "cohort")
GOAL_LEVEL = 4


@dataclass(frozen=True, slots=True)
class Goal:
    """One of the issue's goals, checked on each batched mode at GOAL_LEVEL against concurrency 1."""

    workload: str
    metric: str  # "throughput" (req/s ratio, at least) or "p95" (e2e p95 ratio, at most)
    target: float


GOALS = (Goal("prompt", "throughput", 2.5), Goal("rag", "throughput", 2.0), Goal("rag", "p95", 2.0))


def mode_env(mode: str, batch_size: int) -> dict[str, str]:
    """The service's overrides for a mode: max_concurrency, and the batch scheduler when batched."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    unbatched = {"HYBRID_GENERATOR__MAX_CONCURRENCY": "1"}
    if mode == "off":
        return unbatched
    if mode == "held":  # `off` as it ran before oga_native.py: the binding holds the GIL while it computes
        return {**unbatched, "HYBRID_GENERATOR__RELEASE_GIL": "false"}
    return {
        "HYBRID_GENERATOR__MAX_CONCURRENCY": str(batch_size),
        "HYBRID_GENERATOR__BATCH_SCHEDULER": mode,
    }


def workload_prompts(workload: str) -> list[PromptItem]:
    if workload == "prompt":
        return load_prompts(None)
    if workload == "rag":
        return [PromptItem(r["id"], r["question"], r) for r in knowledge_items(HANDBOOK_EVAL, None)]
    raise ValueError(f"unknown workload {workload!r}; known: {sorted(WORKLOAD_PIPELINES)}")


def stage_ms_per_request(server: Mapping[str, Any], pipeline: str, completed: int) -> dict[str, float]:
    """Server seconds per pipeline stage (from the /metrics delta of one run), as ms per completed request."""
    stages = server.get("stages", {}).get(pipeline, {})
    return {stage: v["seconds"] * 1000.0 / max(completed, 1) for stage, v in stages.items()}


def run_row(
    workload: str,
    mode: str,
    concurrency: int,
    summary: Mapping[str, Any],
    load_1m: Sequence[float],
    stage_ms: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The few numbers of one run that the report and the ratios need."""
    e2e = summary["e2e_ms"]
    completed = max(summary["completed"], 1)
    return {
        "workload": workload,
        "mode": mode,
        "concurrency": concurrency,
        "completed": summary["completed"],
        "failed": summary["failed"],
        "req_per_s": summary["request_throughput"],
        "out_tok_per_s": summary["output_throughput"],
        "ttft_p50_ms": summary["ttft_ms"].get("p50"),
        "e2e_p50_ms": e2e.get("p50"),
        "e2e_p95_ms": e2e.get("p95"),
        "e2e_p99_ms": e2e.get("p99"),
        "mean_prompt_tokens": summary["total_prompt_tokens"] / completed,
        "mean_output_tokens": summary["total_output_tokens"] / completed,
        "stage_ms_per_request": dict(stage_ms or {}),
        "load_1m": [round(value, 2) for value in load_1m],
        "errors": summary.get("errors", {}),
    }


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0 or math.isnan(value) or math.isnan(base):
        return None
    return value / base


def with_ratios(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each row with throughput and p95 as ratios against concurrency 1 of its workload and mode."""
    base = {(r["workload"], r["mode"]): r for r in rows if r["concurrency"] == 1}
    out = []
    for row in rows:
        one = base.get((row["workload"], row["mode"]))
        out.append(
            {
                **row,
                "req_per_s_x": _ratio(row["req_per_s"], one["req_per_s"]) if one else None,
                "out_tok_per_s_x": _ratio(row["out_tok_per_s"], one["out_tok_per_s"]) if one else None,
                "e2e_p95_x": _ratio(row["e2e_p95_ms"], one["e2e_p95_ms"]) if one else None,
            }
        )
    return out


def check_goals(rows: Sequence[Mapping[str, Any]], level: int = GOAL_LEVEL) -> list[dict[str, Any]]:
    """Each goal per batched mode with its measured ratio (`level` against 1), whether met, by how much."""
    results = []
    for mode, goal in [(mode, goal) for mode in BATCHED_MODES for goal in GOALS]:
        row = next(
            (
                r
                for r in rows
                if r["workload"] == goal.workload and r["mode"] == mode and r["concurrency"] == level
            ),
            None,
        )
        key = "req_per_s_x" if goal.metric == "throughput" else "e2e_p95_x"
        measured = row.get(key) if row else None
        met: bool | None = None
        if measured is not None:
            met = measured >= goal.target if goal.metric == "throughput" else measured <= goal.target
        results.append(
            {
                "mode": mode,
                "workload": goal.workload,
                "metric": goal.metric,
                "target": goal.target,
                "measured": measured,
                "met": met,
                # The fraction of the target reached (throughput) or the excess over it (p95).
                "versus_target": None if measured is None else measured / goal.target,
            }
        )
    return results


def render_markdown(results: Mapping[str, Any]) -> str:
    config = results["config"]
    lines = [
        "# Serving under load: batched generation in the embedded engine",
        "",
        environment_markdown(results.get("environment")),
        "",
        f"Run {results['started_at']} on {results['machine']}. Embedded defaults (SmolLM2 int8, ONNX Runtime "
        f"GenAI), streamed requests, {config['max_tokens']} max tokens, greedy, "
        f"{config['requests']} requests per level (closed loop). `off`: `generator.max_concurrency` 1 "
        "(one `og.Generator` per request, queued, with the default prompt-prefix cache, which batched "
        "requests do not use); `held`: the same with `generator.release_gil: false`, so the GIL is held "
        "through each prefill and decode step as the Python binding does; `engine` and `cohort`: "
        "max_concurrency "
        f"{config['batch_size']} with that `generator.batch_scheduler` (`og.Engine`'s static batches, or "
        "cohorts of one batched `og.Generator`). At each level the modes ran back to back, in an order "
        "rotating from level to level. Ratios (x) are against concurrency 1 of the same workload and mode. "
        "Regenerate with `python -m benchmarks.system.serving`.",
        "",
    ]
    headers = [
        "workload", "mode", "c", "ok", "failed", "req/s", "x", "out tok/s", "x", "TTFT p50 ms",
        "E2E p50 ms", "E2E p95 ms", "p95 x", "E2E p99 ms", "load 1m (start, end)",
    ]  # fmt: skip
    table_rows = [
        [
            r["workload"], r["mode"], r["concurrency"], r["completed"], r["failed"], r["req_per_s"],
            r["req_per_s_x"], r["out_tok_per_s"], r["out_tok_per_s_x"], r["ttft_p50_ms"], r["e2e_p50_ms"],
            r["e2e_p95_ms"], r["e2e_p95_x"], r["e2e_p99_ms"], ", ".join(f"{v:.2f}" for v in r["load_1m"]),
        ]
        for r in results["runs"]
    ]  # fmt: skip
    lines += [
        markdown_table(headers, table_rows, digits=2),
        "",
        f"## Goals (each batched mode, concurrency {GOAL_LEVEL} against 1)",
        "",
    ]
    goal_rows = [
        [
            g["mode"],
            g["workload"],
            "throughput >= target x" if g["metric"] == "throughput" else "p95 <= target x",
            g["target"],
            g["measured"],
            g["met"],
            g["versus_target"],
        ]
        for g in results["goals"]
    ]
    lines += [
        markdown_table(
            ["mode", "workload", "goal", "target", "measured", "met", "measured / target"], goal_rows, 2
        )
    ]
    stage_names = sorted({stage for r in results["runs"] for stage in r.get("stage_ms_per_request", {})})
    if stage_names:
        lines += [
            "",
            "## Server time per request by stage (ms, from /metrics; under load a stage includes its waits)",
            "",
        ]
        stage_rows = [
            [
                r["workload"],
                r["mode"],
                r["concurrency"],
                r.get("mean_prompt_tokens"),
                r.get("mean_output_tokens"),
            ]
            + [r.get("stage_ms_per_request", {}).get(stage) for stage in stage_names]
            for r in results["runs"]
        ]
        headers = ["workload", "mode", "c", "prompt tokens", "output tokens", *stage_names]
        lines += [markdown_table(headers, stage_rows, 1)]
    notes = results.get("notes")
    if notes:
        lines += ["", notes.strip()]
    lines += ["", "![throughput and p95 against concurrency](serving.png)", ""]
    return "\n".join(lines)


def write_plot(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for workload in sorted({r["workload"] for r in rows}):
        for mode in MODES:
            points = sorted(
                (r["concurrency"], r["req_per_s"], r["e2e_p95_ms"] or math.nan)
                for r in rows
                if r["workload"] == workload and r["mode"] == mode
            )
            if not points:
                continue
            style = {"off": ":", "held": "-.", "engine": "--"}.get(mode, "-")
            label = f"{workload}, {mode}"
            left.plot([p[0] for p in points], [p[1] for p in points], style, marker="o", label=label)
            right.plot([p[0] for p in points], [p[2] for p in points], style, marker="o", label=label)
    for ax, ylabel in ((left, "requests / s"), (right, "p95 end-to-end latency (ms)")):
        ax.set_xlabel("concurrency (closed loop)")
        ax.set_ylabel(ylabel)
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    left.set_title("Throughput")
    right.set_title("p95 latency")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


async def measure(
    base_urls: Mapping[str, str],
    workloads: Sequence[str],
    concurrencies: Sequence[int],
    requests: int,
    max_tokens: int,
    warmup: int,
) -> list[dict[str, Any]]:
    """Every (workload, level) for every mode, in an order rotating by level; one row per run."""
    modes = list(base_urls)
    rows: list[dict[str, Any]] = []
    async with make_http_client(max(concurrencies), 600.0) as client:
        for workload in workloads:
            prompts = workload_prompts(workload)
            pipeline = WORKLOAD_PIPELINES[workload]
            for mode in modes:
                for item in prompts[:warmup]:
                    await send_chat(
                        client, base_urls[mode], item, pipeline=pipeline, max_tokens=max_tokens, stream=True
                    )
            for index, concurrency in enumerate(concurrencies):
                for mode in [*modes[index % len(modes) :], *modes[: index % len(modes)]]:

                    async def send(
                        item: PromptItem, base_url: str = base_urls[mode], pipeline: str = pipeline
                    ) -> Any:
                        return await send_chat(
                            client, base_url, item, pipeline=pipeline, max_tokens=max_tokens, stream=True
                        )

                    load_start = os.getloadavg()[0]
                    before = await prom.scrape(client, base_urls[mode])
                    records, duration = await run_closed_loop(
                        send, prompts, concurrency, Bounds(requests=requests, duration_s=None)
                    )
                    load_end = os.getloadavg()[0]
                    server = prom.summarize_delta(
                        prom.delta(before, await prom.scrape(client, base_urls[mode]))
                    )
                    summary = summarize_records(records, duration)
                    stages = stage_ms_per_request(server, pipeline, summary["completed"])
                    row = run_row(workload, mode, concurrency, summary, [load_start, load_end], stages)
                    rows.append(row)
                    print(json.dumps(row, default=str), file=sys.stderr, flush=True)
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.system.serving", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--workloads", default="prompt,rag")
    parser.add_argument("--modes", default=",".join(MODES), help=f"any of {','.join(MODES)}")
    parser.add_argument("--concurrency", default="1,2,4,8", help="closed-loop levels")
    parser.add_argument("--requests", type=int, default=16, help="requests per level and mode")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=2, help="requests per workload and mode first")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="max_concurrency when on (default: top level)"
    )
    parser.add_argument("--index", type=Path, default=DEFAULT_INDEX, help="handbook index to serve")
    parser.add_argument("--notes", type=Path, default=None, help="Markdown appended to the report (analysis)")
    parser.add_argument("--out", type=Path, default=RESULTS_ROOT, help="folder for serving.md/.json/.png")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    args = build_parser().parse_args(argv)
    from services.evaluation.local_server import running_service

    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    concurrencies = sorted({int(c) for c in args.concurrency.split(",") if c.strip()})
    if not concurrencies or concurrencies[0] < 1 or args.requests < 1:
        print(json.dumps({"error": "concurrency levels and --requests must be >= 1"}))
        return 2
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        print(json.dumps({"error": f"--modes must name some of {list(MODES)}, got {args.modes!r}"}))
        return 2
    batch_size = args.batch_size or max(concurrencies)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    with contextlib.ExitStack() as stack:
        base_urls = {
            mode: stack.enter_context(
                running_service(None, extra_env=mode_env(mode, batch_size), index_dir=args.index)
            )
            for mode in modes
        }
        rows = asyncio.run(
            measure(base_urls, workloads, concurrencies, args.requests, args.max_tokens, args.warmup)
        )
    runs = with_ratios(rows)
    results: dict[str, Any] = {
        "started_at": started,
        "environment": environment(),
        "machine": f"{os.cpu_count()} cores",
        "config": {
            "workloads": workloads,
            "concurrency": concurrencies,
            "requests": args.requests,
            "max_tokens": args.max_tokens,
            "batch_size": batch_size,
            "modes": modes,
            "index": str(args.index.relative_to(REPO_ROOT))
            if args.index.is_relative_to(REPO_ROOT)
            else "given",
        },
        "runs": runs,
        "goals": check_goals(runs),
        "notes": args.notes.read_text(encoding="utf-8") if args.notes else None,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "serving.json", results)
    (args.out / "serving.md").write_text(render_markdown(results), encoding="utf-8")
    write_plot(runs, args.out / "serving.png")
    print(json.dumps({"report": str(args.out / "serving.md"), "goals": results["goals"]}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
