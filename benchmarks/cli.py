"""`hybridllm bench` (an entry point in the `hybridllm.commands` group, extra `bench`): the load generator,
the gateway overhead, serving (batching), streaming and TTFT benches, the crash matrix, ingestion's embedding
throughput, the architecture comparison and the own-documents walkthrough. The bench modules load when the
command runs. `hybridllm plan` (entry point `plan`, same extra): capacity per architecture from the
comparison's measured costs (benchmarks/planning)."""

from __future__ import annotations

import argparse

from services.cli import Subparsers, add_command


def bench_command(args: argparse.Namespace) -> None:
    rest: list[str] = list(args.rest)
    if args.kind == "load":
        from benchmarks.harness.load import bench_load_main

        raise SystemExit(bench_load_main(rest))
    if args.kind == "overhead":
        from benchmarks.system.overhead import bench_overhead_main

        raise SystemExit(bench_overhead_main(rest))
    if args.kind == "serving":
        from benchmarks.system.serving import main as bench_serving_main

        raise SystemExit(bench_serving_main(rest))
    if args.kind == "faults":
        from benchmarks.system.crash_matrix import main as bench_faults_main

        raise SystemExit(bench_faults_main(rest))
    if args.kind == "streaming":
        from benchmarks.system.streaming import main as bench_streaming_main

        raise SystemExit(bench_streaming_main(rest))
    if args.kind == "ttft":
        from benchmarks.system.ttft import main as bench_ttft_main

        raise SystemExit(bench_ttft_main(rest))
    if args.kind == "ingest":
        from benchmarks.components.ingest import main as bench_ingest_main

        raise SystemExit(bench_ingest_main(rest))
    if args.kind == "own-documents":
        from benchmarks.system.own_documents import main as bench_own_documents_main

        raise SystemExit(bench_own_documents_main(rest))
    from benchmarks.system.compare import bench_compare_main

    raise SystemExit(bench_compare_main(rest))


def register_bench(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "bench", help="load generator and architecture comparison (benchmarks/)"
    )
    parser.add_argument(
        "kind",
        choices=[
            "load",
            "compare",
            "overhead",
            "serving",
            "streaming",
            "ttft",
            "faults",
            "ingest",
            "own-documents",
        ],
    )
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
