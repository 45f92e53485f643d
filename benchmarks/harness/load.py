"""Load generator for the OpenAI-compatible API: closed loop at concurrency levels, open loop at Poisson rate.

    python -m benchmarks.harness.load --pipeline hybrid,rag --concurrency 1,4,8 --requests 64
    python -m benchmarks.harness.load --rate 5 --duration 60 --goodput ttft:500 tpot:50 e2e:3000

Prints one JSON object as the last stdout line and writes results.json, report.md and PNG plots to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.harness import prom
from benchmarks.harness.client import PromptItem, send_chat
from benchmarks.harness.environment import environment
from benchmarks.harness.paths import RESULTS_ROOT
from benchmarks.harness.report import run_label, write_load_report
from benchmarks.harness.stats import RequestRecord, parse_goodput, summarize_records
from benchmarks.harness.workload import Bounds, load_prompts, run_closed_loop, run_open_loop

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True, slots=True)
class LoadConfig:
    base_url: str = DEFAULT_BASE_URL
    pipelines: tuple[str, ...] = ("hybrid",)
    concurrencies: tuple[int, ...] = ()
    rates: tuple[float, ...] = ()
    bounds: Bounds = field(default_factory=lambda: Bounds(requests=32, duration_s=None))
    max_tokens: int = 64
    stream: bool = True
    slos: dict[str, float] = field(default_factory=dict)
    api_key: str | None = None
    warmup: int = 2
    timeout_s: float = 300.0
    seed: int = 0
    drain_timeout_s: float | None = 60.0

    def __post_init__(self) -> None:
        if not self.pipelines:
            raise ValueError("at least one pipeline is needed")
        if any(c <= 0 for c in self.concurrencies):
            raise ValueError(f"concurrency levels must be > 0, got {self.concurrencies}")
        if any(r <= 0 for r in self.rates):
            raise ValueError(f"rates must be > 0, got {self.rates}")
        if self.max_tokens <= 0:
            raise ValueError(f"max_tokens must be > 0, got {self.max_tokens}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")


def display_path(path: Path) -> str:
    """Relative to the working directory where possible: reports must not carry this machine's paths."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def make_http_client(max_connections: int, timeout_s: float) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    return httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), limits=limits)


def run_entry(
    pipeline: str,
    mode: str,
    level: float,
    records: list[RequestRecord],
    duration_s: float,
    slos: dict[str, float],
    server_delta: prom.Scrape,
) -> dict[str, Any]:
    """One run's result: the summary, server-side attribution and the raw latencies for plots."""
    return {
        "pipeline": pipeline,
        "mode": mode,
        "concurrency": int(level) if mode == "closed" else None,
        "rate": float(level) if mode == "open" else None,
        "summary": summarize_records(records, duration_s, slos),
        "server": prom.summarize_delta(server_delta),
        "e2e_ms": [r.e2e_s * 1000.0 for r in records if r.ok],
    }


async def run_load(
    config: LoadConfig, prompts: Sequence[PromptItem]
) -> tuple[list[dict[str, Any]], dict[str, list[RequestRecord]]]:
    """Every (pipeline, level) run in turn; returns run entries and the raw records keyed by run label."""
    levels: list[tuple[str, float]] = [("closed", float(c)) for c in config.concurrencies]
    levels += [("open", r) for r in config.rates]
    if not levels:
        levels = [("closed", 1.0)]
    max_conn = max([int(c) for c in config.concurrencies] + [256 if config.rates else 1])
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else None
    runs: list[dict[str, Any]] = []
    raw: dict[str, list[RequestRecord]] = {}
    async with make_http_client(max_conn, config.timeout_s) as client:
        for pipeline in config.pipelines:

            async def send(item: PromptItem, pipeline: str = pipeline) -> RequestRecord:
                return await send_chat(
                    client,
                    config.base_url,
                    item,
                    pipeline=pipeline,
                    max_tokens=config.max_tokens,
                    stream=config.stream,
                    headers=headers,
                )

            for item in prompts[: config.warmup]:
                await send(item)
            for mode, level in levels:
                before = await prom.scrape(client, config.base_url)
                if mode == "closed":
                    records, duration = await run_closed_loop(send, prompts, int(level), config.bounds)
                else:
                    records, duration = await run_open_loop(
                        send,
                        prompts,
                        level,
                        config.bounds,
                        seed=config.seed,
                        drain_timeout_s=config.drain_timeout_s,
                    )
                after = await prom.scrape(client, config.base_url)
                entry = run_entry(
                    pipeline, mode, level, records, duration, config.slos, prom.delta(before, after)
                )
                runs.append(entry)
                raw[run_label(entry)] = records
                s = entry["summary"]
                logger.info(
                    "%s: %d ok, %d failed, %.2f req/s, e2e p50 %.1f ms",
                    run_label(entry),
                    s["completed"],
                    s["failed"],
                    s["request_throughput"],
                    s["e2e_ms"].get("p50", float("nan")),
                )
    return runs, raw


def headline(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The few numbers per run that go on the last stdout line."""
    out = []
    for run in runs:
        s = run["summary"]
        row = {
            "run": run_label(run),
            "completed": s["completed"],
            "failed": s["failed"],
            "req_per_s": round(s["request_throughput"], 3),
            "out_tok_per_s": round(s["output_throughput"], 2),
            "ttft_p50_ms": _round(s["ttft_ms"].get("p50")),
            "e2e_p50_ms": _round(s["e2e_ms"].get("p50")),
            "e2e_p99_ms": _round(s["e2e_ms"].get("p99")),
        }
        if "goodput" in s:
            row["goodput_req_per_s"] = round(s["goodput"]["request_goodput"], 3)
        out.append(row)
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _int_list(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def _float_list(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(",") if part.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hybridllm bench load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default=DEFAULT_BASE_URL, help="the service (default: %(default)s)")
    parser.add_argument("--pipeline", default="hybrid", help="comma-separated pipelines (`model` field)")
    parser.add_argument("--concurrency", type=_int_list, default=(), help="closed-loop levels, e.g. 1,4,8")
    parser.add_argument(
        "--rate", type=_float_list, default=(), help="open-loop Poisson rates in req/s, e.g. 5"
    )
    parser.add_argument(
        "--requests", type=int, default=None, help="requests per run (default 32 without --duration)"
    )
    parser.add_argument("--duration", type=float, default=None, help="seconds per run")
    parser.add_argument("--data", type=Path, default=None, help="e2e eval JSONL to take prompts from")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--no-stream", action="store_true", help="non-streaming requests (no TTFT / ITL)")
    parser.add_argument(
        "--goodput", nargs="*", default=[], metavar="METRIC:MS", help="SLOs: ttft:500 tpot:50 e2e:3000"
    )
    parser.add_argument(
        "--api-key", default=os.environ.get("HYBRID_API_KEY"), help="default: $HYBRID_API_KEY"
    )
    parser.add_argument("--warmup", type=int, default=2, help="requests per pipeline before measuring")
    parser.add_argument("--timeout", type=float, default=300.0, help="per-request timeout in seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=60.0,
        help="open loop: seconds to wait for requests still in flight after the last arrival (then failed)",
    )
    parser.add_argument("--name", default="load")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/<name>")
    return parser


def config_from_args(args: argparse.Namespace) -> LoadConfig:
    requests = args.requests
    if requests is None and args.duration is None:
        requests = 32
    return LoadConfig(
        base_url=args.base_url,
        pipelines=tuple(p.strip() for p in args.pipeline.split(",") if p.strip()),
        concurrencies=args.concurrency,
        rates=args.rate,
        bounds=Bounds(requests=requests, duration_s=args.duration),
        max_tokens=args.max_tokens,
        stream=not args.no_stream,
        slos=parse_goodput(args.goodput),
        api_key=args.api_key,
        warmup=args.warmup,
        timeout_s=args.timeout,
        seed=args.seed,
        drain_timeout_s=args.drain_timeout,
    )


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # One line per request from httpx would drown the run summaries.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def bench_load_main(argv: list[str]) -> int:
    """`hybridllm bench load ...`: run, write the report, print one JSON line. Exit 2 on bad input."""
    configure_logging()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
        prompts = load_prompts(args.data)
    except (ValueError, OSError) as exc:
        print(json.dumps({"error": str(exc)}))
        return 2
    started = datetime.now(UTC).isoformat(timespec="seconds")
    runs, _ = asyncio.run(run_load(config, prompts))
    out_dir = args.out or RESULTS_ROOT / args.name
    results = {
        "name": args.name,
        "base_url": config.base_url,
        "started_at": started,
        "environment": environment(),
        "load_generator": f"process {os.getpid()} ({os.cpu_count()} cores visible), httpx",
        "config": {
            "pipelines": list(config.pipelines),
            "concurrency": list(config.concurrencies),
            "rate": list(config.rates),
            "requests": config.bounds.requests,
            "duration_s": config.bounds.duration_s,
            "max_tokens": config.max_tokens,
            "stream": config.stream,
            "slos_ms": {k: v * 1000 for k, v in config.slos.items()},
            "prompts": display_path(args.data) if args.data else "built-in",
        },
        "runs": runs,
    }
    files = write_load_report(results, out_dir)
    failed = sum(r["summary"]["failed"] for r in runs)
    print(json.dumps({"name": args.name, "out": str(out_dir), "report": files["markdown"], "failed": failed,
                      "runs": headline(runs)}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(bench_load_main(sys.argv[1:]))
