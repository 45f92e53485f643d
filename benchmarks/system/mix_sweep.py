"""Cost, p95 and quality at any traffic mix, computed from requests measured once per request class.

Each architecture's concurrency-1 requests are pooled by class (knowledge, direct, out_of_scope). At a mix,
cost per 1k requests and quality are the share-weighted class means (exact); p95 is read from a seeded
resample of the pools at the mix's shares, since a percentile of a mixture is not a mix of percentiles.
Requests at concurrency 1 do not queue behind one another, so a request's latency does not depend on
what the others were; that is the assumption the validation run checks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.harness.stats import percentile
from benchmarks.system.compare_report import GOAL_COST_RATIO, GOAL_KNOWLEDGE_GAP, GOAL_P95_RATIO
from benchmarks.system.mix import CLASS_ROUTES, ROUTE_CLASSES, Mix, with_knowledge_share

DEFAULT_SHARES: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))
RESAMPLE_DRAWS = 20_000


@dataclass(frozen=True, slots=True)
class MeasuredRequest:
    """A request measured at concurrency 1: class, latency, cost, whether the answer held the fact."""

    request_class: str
    latency_ms: float
    cost_usd: float
    answer_contains: bool | None


def pool_by_class(scores: Sequence[Mapping[str, Any]]) -> dict[str, list[MeasuredRequest]]:
    """Answered requests per class, from per-item scores as results.json holds them (ItemScore.to_dict);
    failed ones carry no latency or cost to resample."""
    pools: dict[str, list[MeasuredRequest]] = {name: [] for name in CLASS_ROUTES}
    for s in scores:
        if not s["ok"]:
            continue
        name = ROUTE_CLASSES[s["route"]]
        pools[name].append(
            MeasuredRequest(name, float(s["latency_ms"]), float(s["cost_usd"] or 0.0), s["answer_contains"])
        )
    return pools


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def at_mix(
    pools: Mapping[str, Sequence[MeasuredRequest]], mix: Mix, *, seed: int, draws: int = RESAMPLE_DRAWS
) -> dict[str, Any] | None:
    """One architecture at one mix; None when a class the mix sends requests to has none measured."""
    shares = mix.as_dict()
    active = [name for name in CLASS_ROUTES if shares[name] > 0]
    if any(not pools.get(name) for name in active):
        return None
    cost = sum(shares[n] * (_mean([r.cost_usd for r in pools[n]]) or 0.0) for n in active)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(draws, [shares[n] for n in CLASS_ROUTES])
    sample: list[float] = []
    for name, count in zip(CLASS_ROUTES, counts, strict=True):
        if count:
            latencies = np.array([r.latency_ms for r in pools[name]])
            sample += rng.choice(latencies, size=int(count)).tolist()
    quality = {
        n: _mean([float(r.answer_contains) for r in pools[n] if r.answer_contains is not None])
        for n in active
    }
    judged = {n: q for n, q in quality.items() if q is not None}
    weight = sum(shares[n] for n in judged)
    knowledge = _mean(
        [float(r.answer_contains) for r in pools.get("knowledge", []) if r.answer_contains is not None]
    )
    return {
        "cost_per_1k_usd": cost * 1000.0,
        "p95_ms": percentile(sample, 95),
        "p50_ms": percentile(sample, 50),
        "knowledge_answer_contains": knowledge,
        "answer_contains": sum(shares[n] * q for n, q in judged.items()) / weight if weight else None,
    }


def sweep_mixes(
    pools: Mapping[str, Mapping[str, Sequence[MeasuredRequest]]],
    base: Mix,
    *,
    shares: Sequence[float] = DEFAULT_SHARES,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One point per knowledge share; the other classes split as in `base`. Same seed at every point."""
    points = []
    for share in shares:
        mix = with_knowledge_share(share, base)
        points.append(
            {
                "knowledge_share": share,
                "mix": mix.as_dict(),
                "pipelines": {p: at_mix(per_class, mix, seed=seed) for p, per_class in pools.items()},
            }
        )
    return points


def _ratio(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None, key: str) -> float | None:
    if a is None or b is None or a.get(key) is None or not b.get(key):
        return None
    return float(a[key]) / float(b[key])


def goal_at(point: Mapping[str, Any]) -> dict[str, Any]:
    """hybrid against always-RAG at one point: cost and p95 ratios, knowledge quality gap, and verdicts."""
    hybrid, rag = point["pipelines"].get("hybrid"), point["pipelines"].get("rag")
    cost, p95 = _ratio(hybrid, rag, "cost_per_1k_usd"), _ratio(hybrid, rag, "p95_ms")
    gap = None
    if hybrid and rag and hybrid["knowledge_answer_contains"] is not None:
        if rag["knowledge_answer_contains"] is not None:
            gap = rag["knowledge_answer_contains"] - hybrid["knowledge_answer_contains"]
    return {
        "knowledge_share": point["knowledge_share"],
        "cost_vs_rag": cost,
        "p95_vs_rag": p95,
        "knowledge_gap_vs_rag": gap,
        "cost_met": None if cost is None else cost <= GOAL_COST_RATIO,
        "p95_met": None if p95 is None else p95 <= GOAL_P95_RATIO,
        "quality_met": None if gap is None else gap <= GOAL_KNOWLEDGE_GAP,
        "hybrid_knowledge_answer_contains": (hybrid or {}).get("knowledge_answer_contains"),
    }


def goal_region(points: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Where on the curve hybrid reaches <= 0.6x RAG's cost and <= 0.7x its p95: every such knowledge share,
    the largest one (the goal gets harder as more requests need retrieval), and the quality kept there."""
    verdicts = [goal_at(p) for p in points]
    met = [v for v in verdicts if v["cost_met"] and v["p95_met"]]
    largest = max(met, key=lambda v: v["knowledge_share"]) if met else None
    return {"per_share": verdicts, "shares_met": [v["knowledge_share"] for v in met], "largest": largest}


def validation(
    computed: Mapping[str, Mapping[str, Any] | None], measured: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Computed against measured p95 and cost per architecture at the same mix, side by side."""
    out: dict[str, dict[str, Any]] = {}
    for pipeline, real in measured.items():
        calc = computed.get(pipeline) or {}
        out[pipeline] = {
            "measured_p95_ms": real.get("p95_ms"),
            "computed_p95_ms": calc.get("p95_ms"),
            "measured_cost_per_1k_usd": real.get("cost_per_1k_usd"),
            "computed_cost_per_1k_usd": calc.get("cost_per_1k_usd"),
        }
    return out


def mix_sweep_results(
    items: Mapping[str, Sequence[Mapping[str, Any]]],
    base: Mix,
    *,
    seed: int,
    measured: Mapping[str, Mapping[str, Any]],
    validation_mix: Mix,
    same_requests: bool,
) -> dict[str, Any]:
    """The sweep over the knowledge share, where hybrid meets its goals on it, and the computed figures at
    `validation_mix` beside the measured ones (`same_requests`: measured on the very requests pooled, which
    checks the computation; otherwise on a separate real run, which checks the method)."""
    pools = {pipeline: pool_by_class(rows) for pipeline, rows in items.items()}
    points = sweep_mixes(pools, base, seed=seed)
    computed = {
        pipeline: at_mix(per_class, validation_mix, seed=seed) for pipeline, per_class in pools.items()
    }
    return {
        "base_mix": base.as_dict(),
        "seed": seed,
        "draws": RESAMPLE_DRAWS,
        "pooled_requests": {p: {n: len(r) for n, r in per.items()} for p, per in pools.items()},
        "points": points,
        "goal_region": goal_region(points),
        "validation": {
            "mix": validation_mix.as_dict(),
            "same_requests": same_requests,
            "pipelines": validation(computed, measured),
        },
    }
