"""`hybridllm bench` (an entry point in the `hybridllm.commands` group, extra `bench`): the load generator,
the gateway overhead, serving (batching), streaming, TTFT and event-loop benches, the crash matrix,
ingestion's embedding throughput, and the architecture comparison. The bench modules load when the
command runs. `hybridllm plan` (entry point `plan`, same extra): capacity per architecture from the
comparison's measured costs (benchmarks/planning)."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

from services.cli import Subparsers, add_command

# `hybridllm bench KIND`: the module and function that run each bench, imported only when it runs.
BENCHES: dict[str, tuple[str, str]] = {
    "load": ("benchmarks.harness.load", "bench_load_main"),
    "compare": ("benchmarks.system.compare", "bench_compare_main"),
    "overhead": ("benchmarks.system.overhead", "bench_overhead_main"),
    "serving": ("benchmarks.system.serving", "main"),
    "streaming": ("benchmarks.system.streaming", "main"),
    "ttft": ("benchmarks.system.ttft", "main"),
    "prefix-cache": ("benchmarks.system.prefix_cache", "main"),
    "loop-responsiveness": ("benchmarks.system.loop_responsiveness", "main"),
    "faults": ("benchmarks.system.crash_matrix", "main"),
    "ingest": ("benchmarks.components.ingest", "main"),
    "retrieval-options": ("benchmarks.components.retrieval_options", "main"),
    "own-documents": ("benchmarks.system.own_documents", "main"),
    "upstream-client": ("benchmarks.components.upstream_client", "main"),
    "reranker": ("benchmarks.components.reranker", "main"),
    "batching-micro": ("benchmarks.system.batching_micro", "main"),
}


def bench_command(args: argparse.Namespace) -> None:
    module, function = BENCHES[args.kind]
    run: Callable[[list[str]], int] = getattr(importlib.import_module(module), function)
    raise SystemExit(run(list(args.rest)))


def register_bench(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "bench", help="load generator and architecture comparison (benchmarks/)"
    )
    parser.add_argument("kind", choices=list(BENCHES))
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    parser.set_defaults(handler=bench_command, config=None)
    return parser


def plan_command(args: argparse.Namespace) -> None:
    from benchmarks.planning.main import run_plan

    raise SystemExit(run_plan(args))


def register_plan(subparsers: Subparsers) -> argparse.ArgumentParser:
    from benchmarks.planning.main import add_plan_arguments

    parser = add_command(
        subparsers,
        "plan",
        plan_command,
        "cores, replicas and $ / month per architecture (benchmarks/planning)",
    )
    add_plan_arguments(parser)
    return parser
