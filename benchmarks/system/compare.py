"""Architecture comparison: the same mixed workload through `prompt`, `rag`, `tuned` and `hybrid`.

    python -m benchmarks.system.compare --quick        # starts the service itself on corpus/handbook
    python -m benchmarks.system.compare --base-url http://127.0.0.1:8000 --concurrency 1,4,8

The workload is drawn from the eval set at a traffic mix (`--mix`, seeded). Per pipeline: quality (route
accuracy, hit@5, answer_contains, refusals), latency under load, goodput within a latency SLO, cost per 1,000
requests (from the `hybrid` extension and from /metrics deltas), context and egress tokens, update cost;
then a six-dimension scorecard, cost/p95/quality against the knowledge share (computed from the per-class
requests), a router-threshold sweep, shadow-mode counts and routing regret from the answers collected.
Prints one JSON object as the last stdout line; writes results.json, report.md and plots to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.harness import prom
from benchmarks.harness.client import PromptItem, send_chat
from benchmarks.harness.environment import environment
from benchmarks.harness.load import configure_logging, display_path, make_http_client, run_entry
from benchmarks.harness.paths import REPO_ROOT, RESULTS_ROOT
from benchmarks.harness.stats import RequestRecord, summarize_records
from benchmarks.harness.workload import Bounds, run_closed_loop, run_open_loop
from benchmarks.system.compare_report import goals, write_compare_report
from benchmarks.system.goodput import DEFAULT_SLO_MS, goodput_table, offered_rates, parse_load_factors
from benchmarks.system.mix import DEFAULT_MIX_TEXT, MIX_REASON, Mix, draw_workload, measured_mix, parse_mix
from benchmarks.system.mix_sweep import mix_sweep_results
from benchmarks.system.regret import routing_regret
from benchmarks.system.sweep import SweepItem, analyse, p_knowledge
from services.core.errors import HybridError
from services.evaluation.scoring import EvalItem, ItemScore, aggregate, load_eval_items, score_answer

logger = logging.getLogger(__name__)

DEFAULT_DATA = REPO_ROOT / "corpus" / "eval" / "handbook_eval.jsonl"
DEFAULT_CORPUS = REPO_ROOT / "corpus" / "handbook"
DEFAULT_PIPELINES = ("prompt", "rag", "tuned", "hybrid")
QUICK_LIMIT = 30
UPDATE_COST_FILE = RESULTS_ROOT / "update_cost.json"
ADAPTERS_DIR = REPO_ROOT / "var" / "adapters"
OPEN_LOOP_DRAIN_S = 120.0
# rag variants of the grounding work (benchmarks/results/grounding.md), each served by a service of its own:
# row name -> (the service settings that make it, the adapter it needs, if any).
RAG_VARIANTS: dict[str, tuple[dict[str, str], str | None]] = {
    "rag+grounded": ({"HYBRID_RAG__ADAPTER": "grounded"}, "grounded"),
    "rag+chunks": ({"HYBRID_RAG__CONTEXT__MODE": "chunks"}, None),
    "rag+pass": ({"HYBRID_RAG__GROUNDING__UNSUPPORTED_ANSWER": "pass"}, None),
}


def spread_sample(items: Sequence[EvalItem], n: int | None) -> list[EvalItem]:
    """n items evenly spaced over the file, so a file grouped by route keeps its route mix."""
    if n is None or n >= len(items):
        return list(items)
    if n <= 0:
        raise ValueError(f"limit must be > 0, got {n}")
    return [items[i * len(items) // n] for i in range(n)]


async def list_models(client: httpx.AsyncClient, base_url: str, headers: dict[str, str] | None) -> list[str]:
    response = await client.get(f"{base_url.rstrip('/')}/v1/models", headers=headers)
    response.raise_for_status()
    return [str(m["id"]) for m in response.json().get("data", [])]


def score_records(
    items_by_id: dict[str, EvalItem], records: Sequence[RequestRecord], pipeline: str
) -> list[ItemScore]:
    return [
        score_answer(
            items_by_id[r.item_id], pipeline=pipeline, answer=r.answer, hybrid=r.hybrid,
            latency_ms=r.e2e_s * 1000.0, ok=r.ok, error=r.error,
        )
        for r in records
    ]  # fmt: skip


@dataclass(slots=True)
class PipelineRun:
    """One pipeline's runs: per-level entries, the first level's records (for quality), every record, the
    /metrics delta over all levels and the last scrape (for gauges)."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    first_records: list[RequestRecord] = field(default_factory=list)
    all_records: list[RequestRecord] = field(default_factory=list)
    server_delta: prom.Scrape = field(default_factory=dict)
    last_scrape: prom.Scrape = field(default_factory=dict)


async def run_pipeline(
    client: httpx.AsyncClient,
    base_url: str,
    pipeline: str,
    prompts: Sequence[PromptItem],
    concurrencies: Sequence[int],
    *,
    max_tokens: int,
    stream: bool,
    headers: dict[str, str] | None,
    slos: dict[str, float],
    load_factors: Sequence[float] = (),
) -> PipelineRun:
    """Each concurrency level once over the whole workload; then, per load factor, one open-loop run at
    that multiple of the first level's throughput."""

    async def send(item: PromptItem) -> RequestRecord:
        return await send_chat(
            client, base_url, item, pipeline=pipeline, max_tokens=max_tokens, stream=stream, headers=headers
        )

    await send(prompts[0])  # warm-up: lazy loads and caches are not what we measure
    result = PipelineRun()
    before_all = await prom.scrape(client, base_url)
    for concurrency in concurrencies:
        before = await prom.scrape(client, base_url)
        records, duration = await run_closed_loop(send, prompts, concurrency, Bounds(len(prompts), None))
        after = await prom.scrape(client, base_url)
        entry = run_entry(pipeline, "closed", concurrency, records, duration, slos, prom.delta(before, after))
        result.runs.append(entry)
        result.all_records += records
        if not result.first_records:
            result.first_records = records
        s = entry["summary"]
        logger.info(
            "%s c=%d: %d ok, %d failed, e2e p50 %.0f ms p95 %.0f ms",
            pipeline, concurrency, s["completed"], s["failed"],
            s["e2e_ms"].get("p50", float("nan")), s["e2e_ms"].get("p95", float("nan")),
        )  # fmt: skip
    if load_factors and result.runs and result.runs[0]["summary"]["request_throughput"] > 0:
        for rate in offered_rates(result.runs[0]["summary"]["request_throughput"], load_factors):
            before = await prom.scrape(client, base_url)
            records, duration = await run_open_loop(
                send, prompts, rate, Bounds(len(prompts), None), drain_timeout_s=OPEN_LOOP_DRAIN_S
            )
            after = await prom.scrape(client, base_url)
            entry = run_entry(pipeline, "open", rate, records, duration, slos, prom.delta(before, after))
            result.runs.append(entry)
            result.all_records += records
            logger.info("%s @ %.2f req/s offered: %d failed", pipeline, rate, entry["summary"]["failed"])
    result.last_scrape = await prom.scrape(client, base_url)
    result.server_delta = prom.delta(before_all, result.last_scrape)
    return result


async def measure_at_mix(
    client: httpx.AsyncClient,
    base_url: str,
    pipeline: str,
    prompts: Sequence[PromptItem],
    *,
    max_tokens: int,
    stream: bool,
    headers: dict[str, str] | None,
) -> dict[str, Any]:
    """p95 and cost per 1k of one real concurrency-1 run over a workload (the mix sweep's validation)."""

    async def send(item: PromptItem) -> RequestRecord:
        return await send_chat(
            client, base_url, item, pipeline=pipeline, max_tokens=max_tokens, stream=stream, headers=headers
        )

    records, duration = await run_closed_loop(send, prompts, 1, Bounds(len(prompts), None))
    costs = [c for r in records if (c := _response_cost(r)) is not None]
    return {
        "p95_ms": summarize_records(records, duration)["e2e_ms"].get("p95"),
        "cost_per_1k_usd": sum(costs) / len(costs) * 1000.0 if costs else None,
        "requests": len(records),
    }


def _response_cost(record: RequestRecord) -> float | None:
    total = (record.hybrid.get("cost_usd") or {}).get("total")
    return float(total) if isinstance(total, int | float) and record.ok else None


def pipeline_summary(pipeline: str, run: PipelineRun, scores: Sequence[ItemScore]) -> dict[str, Any]:
    """Quality (first level), latency per level, cost per 1k requests two ways over the same requests,
    tokens and egress for one pipeline."""
    quality = aggregate(scores)
    quality.pop("items")
    costs = [c for r in run.all_records if (c := _response_cost(r)) is not None]
    contexts = [s.context_tokens for s in scores if s.context_tokens is not None]
    delta = prom.summarize_delta(run.server_delta)
    metrics_cost = delta["cost_usd_by_pipeline"].get(pipeline)
    # The warm-up request precedes the first scrape, so the server delta covers exactly these requests.
    served = max(sum(1 for r in run.all_records if r.ok), 1)
    return {
        "pipeline": pipeline,
        "quality": quality,
        "knowledge_answer_contains": (quality["per_route"].get("rag") or {}).get("answer_contains"),
        "latency": {
            str(r["concurrency"]): {k: r["summary"]["e2e_ms"].get(k) for k in ("mean", "p50", "p95", "p99")}
            | {
                "ttft_p50": r["summary"]["ttft_ms"].get("p50"),
                "req_per_s": r["summary"]["request_throughput"],
            }
            for r in run.runs
        },
        "cost_per_1k_usd": {
            "from_responses": sum(costs) / len(costs) * 1000.0 if costs else None,
            "from_metrics": metrics_cost / served * 1000.0 if metrics_cost is not None else None,
        },
        "mean_context_tokens": sum(contexts) / len(contexts) if contexts else None,
        "egress_tokens": delta["egress_tokens"],
        "egress_tokens_per_request": {
            f"{backend}/{trust}": value / served
            for backend, per_trust in delta["egress_tokens"].items()
            for trust, value in per_trust.items()
        },
        "privacy_actions": _count_privacy(run.first_records),
        "with_sources": sum(1 for s in scores if s.sources) / len(scores) if scores else None,
        "index_chunks": _gauge(run.last_scrape, "hybrid_index_chunks"),
    }


def _gauge(scrape: prom.Scrape, name: str) -> float | None:
    values = prom.sample_values(scrape, name)
    return values[0] if values else None


def sweep_items(scores: dict[str, list[ItemScore]]) -> list[SweepItem]:
    """Items answered by hybrid, prompt and rag, with substrings to judge, where hybrid reported scores."""
    by_pipeline = {p: {s.item_id: s for s in scores.get(p, [])} for p in ("hybrid", "prompt", "rag")}
    items = []
    for item_id, h in by_pipeline["hybrid"].items():
        p, r = by_pipeline["prompt"].get(item_id), by_pipeline["rag"].get(item_id)
        if p is None or r is None or p.answer_contains is None or r.answer_contains is None:
            continue
        if h.route == "out_of_scope":
            continue
        route = {"scores": h.route_scores, "intent": h.intent, "confidence": h.confidence}
        prob = p_knowledge(route)
        if prob is None:
            continue
        items.append(
            SweepItem(
                item_id=item_id, p_knowledge=prob, prompt_correct=bool(p.answer_contains),
                rag_correct=bool(r.answer_contains), prompt_cost=p.cost_usd or 0.0,
                rag_cost=r.cost_usd or 0.0,
                target=h.target,
            )
        )  # fmt: skip
    return items


def read_update_cost(path: Path = UPDATE_COST_FILE) -> dict[str, Any] | None:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return loaded if isinstance(loaded, dict) else None


async def compare(
    base_url: str,
    items: Sequence[EvalItem],
    *,
    pipelines: Sequence[str],
    concurrencies: Sequence[int],
    max_tokens: int,
    stream: bool,
    api_key: str | None,
    shadow_sample: int | None,
    slo_ms: float = DEFAULT_SLO_MS,
    load_factors: Sequence[float] = (),
    validation_items: Sequence[EvalItem] = (),
) -> dict[str, Any]:
    prompts = [PromptItem(i.item_id, i.question, {}) for i in items]
    validation_prompts = [PromptItem(i.item_id, i.question, {}) for i in validation_items]
    slos = {"e2e": slo_ms / 1000.0}
    items_by_id = {i.item_id: i for i in items}
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    async with make_http_client(max(concurrencies), timeout_s=600.0) as client:
        available = await list_models(client, base_url, headers)
        chosen = [p for p in pipelines if p in available]
        skipped = [p for p in pipelines if p not in available]
        if skipped:
            logger.info("skipping pipelines the service does not list: %s", skipped)
        all_runs: list[dict[str, Any]] = []
        summaries: dict[str, dict[str, Any]] = {}
        scores: dict[str, list[ItemScore]] = {}
        measured: dict[str, dict[str, Any]] = {}
        for pipeline in chosen:
            run = await run_pipeline(
                client, base_url, pipeline, prompts, concurrencies, max_tokens=max_tokens, stream=stream,
                headers=headers, slos=slos, load_factors=load_factors,
            )  # fmt: skip
            all_runs += run.runs
            scores[pipeline] = score_records(items_by_id, run.first_records, pipeline)
            summaries[pipeline] = pipeline_summary(pipeline, run, scores[pipeline])
            if validation_prompts:
                measured[pipeline] = await measure_at_mix(
                    client, base_url, pipeline, validation_prompts, max_tokens=max_tokens, stream=stream,
                    headers=headers,
                )  # fmt: skip
    sweep_input = sweep_items(scores)
    if shadow_sample is not None:
        sweep_input = sweep_input[:shadow_sample]
    return {
        "pipelines": summaries,
        "skipped_pipelines": skipped,
        "runs": all_runs,
        "items": {p: [s.to_dict() for s in per] for p, per in scores.items()},
        "sweep": analyse(sweep_input),
        "routing_regret": routing_regret(sweep_input),
        "goodput": goodput_table(all_runs, slo_ms),
        "update_cost": read_update_cost(),
        "validation_measured": measured,
    }


def _count_privacy(records: Sequence[RequestRecord]) -> dict[str, dict[str, int]]:
    """How often the privacy gate took each action, and which backend trust level answered."""
    actions: dict[str, int] = {}
    trust: dict[str, int] = {}
    for r in records:
        privacy = r.hybrid.get("privacy") or {}
        action = str(privacy.get("action") or "none")
        actions[action] = actions.get(action, 0) + 1
        level = privacy.get("backend_trust") or (r.hybrid.get("backend") or {}).get("trust")
        if level:
            trust[str(level)] = trust.get(str(level), 0) + 1
    return {"actions": actions, "backend_trust": trust}


def _int_list(text: str) -> tuple[int, ...]:
    levels = tuple(int(part) for part in text.split(",") if part.strip())
    if not levels or any(c <= 0 for c in levels):
        raise argparse.ArgumentTypeError(f"concurrency levels must be positive integers, got {text!r}")
    return levels


def _mix_arg(text: str) -> Mix | None:
    """`file` keeps the eval file's own mix (items evenly spaced over it); anything else is a mix."""
    if text.strip() == "file":
        return None
    try:
        return parse_mix(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _factors_arg(text: str) -> tuple[float, ...]:
    try:
        return parse_load_factors(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _positive_ms(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"SLO must be milliseconds, got {text!r}") from exc
    if value <= 0:
        raise argparse.ArgumentTypeError(f"SLO must be > 0 ms, got {text!r}")
    return value


def _variants_arg(text: str) -> tuple[str, ...]:
    names = tuple(f"rag+{part.strip()}" for part in text.split(",") if part.strip())
    for name in names:
        if name not in RAG_VARIANTS:
            known = ", ".join(v.removeprefix("rag+") for v in RAG_VARIANTS)
            raise argparse.ArgumentTypeError(f"rag variant must be one of {known}, got {name[4:]!r}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hybridllm bench compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default=None, help="a running service; without it one is started")
    parser.add_argument(
        "--corpus", type=Path, default=DEFAULT_CORPUS, help="corpus to serve when starting one"
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="e2e eval JSONL (the workload)")
    parser.add_argument("--pipelines", default=",".join(DEFAULT_PIPELINES))
    parser.add_argument(
        "--concurrency", type=_int_list, default=None, help="closed-loop levels (default 1,4)"
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="workload size (default: the eval file's size)"
    )
    parser.add_argument(
        "--mix", type=_mix_arg, default=parse_mix(DEFAULT_MIX_TEXT),
        help=f"traffic mix to draw the workload at, or `file` (default {DEFAULT_MIX_TEXT})",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of the workload draw and the resampling")
    parser.add_argument(
        "--validate-limit", type=int, default=0,
        help="requests of a separate concurrency-1 run per pipeline at --target-mix, to check the mix "
        "sweep against (0: check it against the main run's own requests)",
    )  # fmt: skip
    parser.add_argument(
        "--target-mix", type=_mix_arg, default=parse_mix(DEFAULT_MIX_TEXT),
        help="the mix the sweep splits non-knowledge requests by, and the validation run's mix "
        f"(default {DEFAULT_MIX_TEXT})",
    )  # fmt: skip
    parser.add_argument(
        "--slo", type=_positive_ms, default=DEFAULT_SLO_MS,
        help=f"end-to-end latency SLO in ms for goodput (default {DEFAULT_SLO_MS:.0f})",
    )  # fmt: skip
    parser.add_argument(
        "--open-loads", type=_factors_arg, default=(),
        help="open-loop runs at these multiples of the first level's throughput, e.g. 2,4,8",
    )  # fmt: skip
    parser.add_argument(
        "--rag-variants", type=_variants_arg, default=(),
        help=f"extra rag rows, each on a service of its own: {', '.join(v[4:] for v in RAG_VARIANTS)}",
    )  # fmt: skip
    parser.add_argument(
        "--adapters-dir", type=Path, default=ADAPTERS_DIR,
        help="where a started service finds the tuned and grounded adapters (default var/adapters)",
    )  # fmt: skip
    parser.add_argument("--max-tokens", type=int, default=None, help="default 64 (48 with --quick)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_LIMIT} items, c=1,4, 48 tokens")
    parser.add_argument("--no-stream", action="store_true")
    parser.add_argument(
        "--shadow-sample", type=int, default=None, help="items for the sweep/shadow (default all)"
    )
    parser.add_argument("--api-key", default=os.environ.get("HYBRID_API_KEY"))
    parser.add_argument("--name", default="compare")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/<name>")
    return parser


def adapter_env(adapters_dir: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """HYBRID_GENERATOR__ADAPTERS for a started service: every adapter folder under `adapters_dir` by its
    name (`tuned` makes the tuned pipeline listed), unless the caller set that variable already."""
    if "HYBRID_GENERATOR__ADAPTERS" in environ or not adapters_dir.is_dir():
        return {}
    found = {p.name: str(p) for p in sorted(adapters_dir.iterdir()) if (p / "adapter_config.json").exists()}
    return {"HYBRID_GENERATOR__ADAPTERS": json.dumps(found)} if found else {}


@contextlib.contextmanager
def _service(base_url: str | None, corpus: Path, extra_env: Mapping[str, str]) -> Iterator[str]:
    if base_url is not None:
        yield base_url
        return
    from services.evaluation.local_server import running_service

    with running_service(corpus, extra_env=extra_env) as started:
        yield started


def variant_skip_reason(variant: str, base_url: str | None, adapters: Mapping[str, str]) -> str | None:
    """Why a rag variant cannot run here, or None."""
    if base_url is not None:
        return "needs a service the bench starts (its setting is served, not per request)"
    needed = RAG_VARIANTS[variant][1]
    if needed is not None and needed not in json.loads(adapters.get("HYBRID_GENERATOR__ADAPTERS", "{}")):
        return f"no '{needed}' adapter (make {needed})"
    return None


def _renamed_server(server: Mapping[str, Any], variant: str) -> dict[str, Any]:
    """A run's /metrics summary with the `rag` label of its per-pipeline tables read as the variant's."""
    return {
        key: {variant if k == "rag" else k: v for k, v in value.items()}
        if key.endswith("_by_pipeline") or key == "stages"
        else value
        for key, value in server.items()
    }


def merge_variant(results: dict[str, Any], variant: str, run: Mapping[str, Any]) -> None:
    """A variant service's `rag` results, renamed to the variant's row."""
    if "rag" not in run["pipelines"]:
        results["skipped_variants"][variant] = "its service did not list rag"
        return
    results["pipelines"][variant] = {**run["pipelines"]["rag"], "pipeline": variant}
    results["runs"] += [
        {**r, "pipeline": variant, "server": _renamed_server(r["server"], variant)} for r in run["runs"]
    ]
    results["items"][variant] = [{**row, "pipeline": variant} for row in run["items"]["rag"]]
    results["goodput"] += [{**row, "pipeline": variant} for row in run["goodput"]]
    if "rag" in run["validation_measured"]:
        results["validation_measured"][variant] = run["validation_measured"]["rag"]


def _mean_cost_per_1k(scores: Sequence[Mapping[str, Any]]) -> float | None:
    """Mean cost per 1k of the answered requests among `scores` (the first level's, as results.json holds)."""
    costs = [float(s["cost_usd"] or 0.0) for s in scores if s["ok"]]
    return sum(costs) / len(costs) * 1000.0 if costs else None


def bench_compare_main(argv: list[str]) -> int:
    """`hybridllm bench compare ...`; exit 2 on bad input, 1 when the service could not be run."""
    configure_logging()
    args = build_parser().parse_args(argv)
    limit = args.limit if args.limit is not None else (QUICK_LIMIT if args.quick else None)
    concurrencies = tuple(sorted(args.concurrency or (1, 4)))
    max_tokens = args.max_tokens or (48 if args.quick else 64)
    target_mix = args.target_mix or parse_mix(DEFAULT_MIX_TEXT)
    try:
        every = load_eval_items(args.data)
        items = spread_sample(every, limit) if args.mix is None else draw_workload(
            every, args.mix, limit or len(every), args.seed
        )  # fmt: skip
        validation_items = (
            draw_workload(every, target_mix, args.validate_limit, args.seed + 1)
            if args.validate_limit > 0
            else []
        )
    except (HybridError, ValueError, OSError) as exc:
        print(json.dumps({"error": str(exc)}))
        return 2
    pipelines = [p.strip() for p in args.pipelines.split(",") if p.strip()]
    started = datetime.now(UTC).isoformat(timespec="seconds")
    adapters = adapter_env(args.adapters_dir, os.environ) if args.base_url is None else {}
    # The adapters a started service gets: the caller's HYBRID_GENERATOR__ADAPTERS, else the folders found.
    served = {"HYBRID_GENERATOR__ADAPTERS": os.environ.get("HYBRID_GENERATOR__ADAPTERS", "{}"), **adapters}
    options: dict[str, Any] = {
        "concurrencies": concurrencies, "max_tokens": max_tokens, "stream": not args.no_stream,
        "api_key": args.api_key, "shadow_sample": args.shadow_sample, "slo_ms": args.slo,
        "load_factors": args.open_loads, "validation_items": validation_items,
    }  # fmt: skip
    try:
        with _service(args.base_url, args.corpus, adapters) as base_url:
            results = asyncio.run(compare(base_url, items, pipelines=pipelines, **options))
        results["skipped_variants"] = {}
        for variant in args.rag_variants:
            reason = variant_skip_reason(variant, args.base_url, served)
            if reason is not None:
                results["skipped_variants"][variant] = reason
                continue
            with _service(None, args.corpus, {**adapters, **RAG_VARIANTS[variant][0]}) as variant_url:
                merge_variant(
                    results, variant, asyncio.run(compare(variant_url, items, pipelines=["rag"], **options))
                )
    except (RuntimeError, TimeoutError, httpx.HTTPError) as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}))
        return 1
    results["mix"] = {
        "asked": None if args.mix is None else args.mix.as_dict(),
        "drawn": measured_mix(items),
        "seed": args.seed,
        "reason": None if args.mix is None else MIX_REASON,
    }
    measured = results.pop("validation_measured")
    same = not validation_items
    if same:
        low = str(concurrencies[0])
        measured = {
            p: {"p95_ms": s["latency"][low]["p95"], "cost_per_1k_usd": _mean_cost_per_1k(results["items"][p])}
            for p, s in results["pipelines"].items()
        }
    results["mix_sweep"] = mix_sweep_results(
        results["items"], target_mix, seed=args.seed, measured=measured,
        validation_mix=target_mix if validation_items else Mix(tuple(results["mix"]["drawn"].items())),
        same_requests=same,
    )  # fmt: skip
    results["config"] = {
        "base_url": args.base_url or f"started on {display_path(args.corpus)}",
        "data": display_path(args.data),
        "items": len(items),
        "concurrency": list(concurrencies),
        "open_loads": list(args.open_loads),
        "slo_ms": args.slo,
        "max_tokens": max_tokens,
        "stream": not args.no_stream,
        "started_at": started,
        "adapters": None if args.base_url else json.loads(served["HYBRID_GENERATOR__ADAPTERS"]),
    }
    results["environment"] = environment()
    results["goals"] = goals(results["pipelines"], max(concurrencies))
    out_dir = args.out or RESULTS_ROOT / args.name
    files = write_compare_report(results, out_dir)
    headline = {
        p: {
            "answer_contains": s["quality"]["answer_contains"],
            "knowledge_answer_contains": s["knowledge_answer_contains"],
            "hit@5": s["quality"]["hit@5"],
            "route_accuracy": s["quality"]["route_accuracy"],
            "refusal_accuracy": s["quality"]["refusal_accuracy"],
            "cost_per_1k_usd": s["cost_per_1k_usd"]["from_responses"],
            "p95_ms": s["latency"][str(max(concurrencies))]["p95"],
            "errors": s["quality"]["errors"],
        }
        for p, s in results["pipelines"].items()
    }
    print(json.dumps({"name": args.name, "out": str(out_dir), "report": files["markdown"],
                      "items": len(items), "mix": results["mix"]["drawn"],
                      "pipelines": headline, "goals": results["goals"],
                      "mix_goal_shares": results["mix_sweep"]["goal_region"]["shares_met"],
                      "sweep_auc": results["sweep"].get("auc")}, default=str))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(bench_compare_main(sys.argv[1:]))
