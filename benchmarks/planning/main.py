"""`hybridllm plan`: CPU cores, replicas, index memory and $ / month per architecture for a request
rate, a traffic mix and a p95 SLO, from the comparison's measured costs. Markdown on stdout, then the
same plan as JSON on the last line; bad input is one JSON line naming the value, exit 2."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.planning.capacity import CpuPrices, Demand, Plan, demand_of, plan_cpu, plan_gpu
from benchmarks.planning.costs import PlanInputError, StageCosts, extract_stage_costs, skipped_pipelines
from benchmarks.planning.inputs import (
    batching_gain,
    index_memory_bytes,
    load_gpu_profile,
    load_prices,
    measured_cores_of,
    parse_mix,
    parse_slo_ms,
    read_results,
    read_structured,
    tail_ratio,
)
from services.core.errors import ConfigError
from services.core.settings import Settings, load_settings

ARCHITECTURES = ("prompt", "rag", "tuned", "hybrid")
RETRIEVING = ("rag", "hybrid")
DEFAULT_RESULTS = Path("benchmarks/results/compare/results.json")
DEFAULT_SERVING = Path("benchmarks/results/serving.json")
RULE = (
    "generator pool M/M/c (Erlang C): the fewest servers (machines of the measured cores, or GPUs) "
    "at or under --max-utilisation whose p95 wait fits in SLO - unloaded p95; gateway stages at "
    "--max-utilisation; "
    "CPU-seconds of a stage = its unloaded wall time x measured cores"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hybridllm plan", description=__doc__)
    parser.add_argument("--config", type=Path, help="service settings YAML (generator, data_dir, prices)")
    add_plan_arguments(parser)
    return parser


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rps", type=float, required=True, help="requests per second to serve")
    parser.add_argument(
        "--mix",
        default="knowledge=0.5,direct=0.33,out_of_scope=0.17",
        help="traffic shares by eval class: knowledge (rag route), direct, out_of_scope",
    )
    parser.add_argument("--slo-p95", required=True, help="p95 latency target, e.g. 2s or 1500ms")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="bench compare results.json")
    parser.add_argument(
        "--serving",
        type=Path,
        default=DEFAULT_SERVING,
        help="bench serving results (batching gain of the generator)",
    )
    parser.add_argument("--gpu-profile", type=Path, help="YAML/JSON of vLLM throughput per GPU type")
    parser.add_argument("--prices", type=Path, help="YAML with a `prices` section (default: the settings')")
    parser.add_argument("--index", type=Path, help="index folder to size (default <data_dir>/index)")
    parser.add_argument(
        "--measured-cores",
        type=int,
        help="cores of the machine the results were measured on (default: the results')",
    )
    parser.add_argument("--max-utilisation", type=float, default=0.8, help="utilisation cap per server")


def _architecture_costs(
    results: Mapping[str, Any], mix: Mapping[str, float]
) -> tuple[dict[str, Demand], dict[str, str], dict[str, dict[str, str]]]:
    """Demand per architecture, reasons for the ones not planned, and where each figure came from."""
    runs = results.get("runs")
    if not isinstance(runs, list) or not runs:
        raise PlanInputError("results: missing field runs (no measured run to plan from)")
    measured = {run.get("pipeline") for run in runs if isinstance(run, dict)}
    costs: dict[str, StageCosts] = {
        p: extract_stage_costs(results, p) for p in ARCHITECTURES if p in measured
    }
    demands: dict[str, Demand] = {}
    skipped: dict[str, str] = {}
    sources: dict[str, dict[str, str]] = {}
    for architecture in ARCHITECTURES:
        if architecture not in costs:
            listed = " (listed in skipped_pipelines)" if architecture in skipped_pipelines(results) else ""
            skipped[architecture] = f"not run in the results{listed}: no measured stage costs or token counts"
            continue
        ratio, ratio_source = tail_ratio(results, architecture)
        own = costs[architecture]
        sources[architecture] = own.sources | {"p95 / mean": ratio_source}
        if architecture != "hybrid":
            demands[architecture] = demand_of(own, ratio)
            continue
        missing = [p for p in ("rag", "prompt") if p not in costs]
        if missing:
            skipped[architecture] = (
                f"composes the rag and prompt pipelines' costs; not run: {', '.join(missing)}"
            )
            continue
        routed_to = {"rag": costs["rag"], "prompt": costs["prompt"]}
        demands[architecture] = demand_of(own, ratio, routed_to=routed_to, mix=mix)
        # Its own per-token figures are not used: each target pays that pipeline's generation.
        sources[architecture] = {
            key: value for key, value in sources[architecture].items() if "token" not in key
        }
        sources[architecture]["retrieval and generation"] = "the rag and prompt pipelines' figures, by target"
    return demands, skipped, sources


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        raise PlanInputError(f"--config: {str(exc).splitlines()[0]}") from None


def make_plan(args: argparse.Namespace) -> dict[str, Any]:
    """The whole plan as one JSON-ready dict; raises PlanInputError on bad input."""
    if not args.rps > 0:
        raise PlanInputError(f"--rps must be > 0, got {args.rps:g}")
    if not 0 < args.max_utilisation < 1:
        raise PlanInputError(f"--max-utilisation must be in (0, 1), got {args.max_utilisation:g}")
    mix = parse_mix(args.mix)
    slo_ms = parse_slo_ms(args.slo_p95)
    results = read_results(args.results)
    demands, skipped, sources = _architecture_costs(results, mix)
    cores = args.measured_cores if args.measured_cores is not None else measured_cores_of(results)
    if cores is None:
        raise PlanInputError(f"--measured-cores: {args.results} records no core count (machine); pass it")
    if cores < 1:
        raise PlanInputError(f"--measured-cores must be >= 1, got {cores}")
    settings = _settings(args.config)
    price_card = load_prices(args.prices) if args.prices is not None else settings.prices
    gpus = load_gpu_profile(args.gpu_profile) if args.gpu_profile is not None else []
    serving = read_structured(args.serving, "--serving") if args.serving.is_file() else None
    gain, gain_source = batching_gain(serving, settings.generator.max_concurrency)
    index_bytes, index_source = index_memory_bytes(args.index or settings.data_dir / "index")
    prices = CpuPrices(
        price_card.cpu_core_hour_usd, price_card.self_hosted_hour_usd.get(settings.generator.name)
    )
    plans: list[Plan] = []
    for architecture, demand in demands.items():
        limits = {"rps": args.rps, "slo_ms": slo_ms, "max_utilisation": args.max_utilisation}
        plans.append(
            plan_cpu(architecture, demand, **limits, measured_cores=cores, batching_gain=gain, prices=prices)
        )
        plans.extend(
            plan_gpu(architecture, demand, gpu, **limits, measured_cores=cores, prices=prices) for gpu in gpus
        )
    return {
        "rps": args.rps,
        "mix": mix,
        "slo_p95_ms": slo_ms,
        "measured_cores": cores,
        "rule": RULE,
        "plans": [
            asdict(plan)
            | {
                "index_bytes_per_replica": index_bytes if plan.architecture in RETRIEVING else 0,
                "knowledge_answer_contains": knowledge_quality(results, plan.architecture),
            }
            for plan in plans
        ],
        "skipped": skipped,
        "sources": sources
        | {
            "batching gain": {"value": f"{gain:g}", "from": gain_source},
            "index memory": {"from": index_source},
        },
        "results": str(args.results),
        "prices": {
            "cpu_core_hour_usd": prices.core_hour_usd,
            "generator_machine_hour_usd": prices.generator_machine_hour_usd,
        },
    }


COLUMNS = (
    "architecture", "hardware", "SLO met", "unloaded p95 s", "generator utilisation", "gateway cores",
    "generator cores",
    "gateway replicas", "generator replicas", "index MiB / replica", "$ / month", "binding stage",
    "knowledge answer_contains",
)  # fmt: skip


def knowledge_quality(results: Mapping[str, Any], pipeline: str) -> float | None:
    """The comparison's answer quality on knowledge questions, shown beside the cost it buys."""
    value = results.get("pipelines", {}).get(pipeline, {}).get("knowledge_answer_contains")
    return float(value) if isinstance(value, int | float) else None


def _share(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.2f}"


def _usd(value: float | None) -> str:
    return "unpriced" if value is None else f"{value:,.0f}"


def render_markdown(plan: Mapping[str, Any]) -> str:
    mix = ", ".join(f"{name} {share:g}" for name, share in plan["mix"].items())
    lines = [
        f"# Capacity plan: {plan['rps']:g} req/s, p95 <= {plan['slo_p95_ms'] / 1000:g} s, mix {mix}",
        "",
        f"From {plan['results']}, measured on {plan['measured_cores']} cores. Rule: {plan['rule']}.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in plan["plans"]:
        index_mib = row["index_bytes_per_replica"]
        index_cell = "unknown" if index_mib is None else f"{index_mib / 2**20:.1f}"
        lines.append(
            f"| {row['architecture']} | {row['hardware']} | {'yes' if row['slo_met'] else 'NO'} "
            f"| {row['p95_unloaded_ms'] / 1000:.2f} | {row['utilisation']:.2f} | {row['gateway_cores']:.1f} "
            f"| {row['generator_cores']:.1f} | {row['gateway_replicas']} | {row['generator_replicas']} "
            f"| {index_cell} | {_usd(row['usd_per_month'])} "
            f"| {row['binding_stage']} | {_share(row['knowledge_answer_contains'])} |"
        )
    if plan["plans"]:
        stages = list(plan["plans"][0]["stage_ms"])
        lines += [
            "",
            "Per request, unloaded ms by stage:",
            "",
            f"| architecture | hardware | {' | '.join(stages)} |",
        ]
        lines.append("|---|---|" + "---|" * len(stages))
        for row in plan["plans"]:
            cells = " | ".join(f"{ms:.1f}" for ms in row["stage_ms"].values())
            lines.append(f"| {row['architecture']} | {row['hardware']} | {cells} |")
    lines.append("")
    for architecture, reason in plan["skipped"].items():
        lines.append(f"- {architecture}: not planned, {reason}.")
    lines += ["", "Where the figures come from:", ""]
    for subject, figures in plan["sources"].items():
        lines.append(f"- {subject}: " + "; ".join(f"{key}: {value}" for key, value in figures.items()))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    return run_plan(build_parser().parse_args(argv))


def run_plan(args: argparse.Namespace) -> int:
    """Print the plan (Markdown, then JSON on the last line); 2 with one JSON error line on bad input."""
    try:
        plan = make_plan(args)
    except PlanInputError as exc:
        print(json.dumps({"error": str(exc)}))
        return 2
    print(render_markdown(plan))
    print(json.dumps(plan))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
