"""Goodput per architecture and load level: requests per second that finished within a latency SLO.

Closed-loop runs are labelled by their concurrency; open-loop runs by the offered rate, which is the
concurrency-1 throughput times a load factor (at a latency that does not grow, k concurrent users offer k
times the concurrency-1 rate), so the factors 2, 4, 8 stand for concurrency 2, 4, 8 without the closed
loop's self-throttling: a saturated server's queue shows in the latency instead of slowing the arrivals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# A chat answer within 2 s still reads as interactive; it is also the capacity planner's example SLO
# (issue 23: `hybridllm plan --slo-p95 2s`), so the planner and this table speak of the same target.
DEFAULT_SLO_MS = 2000.0


def parse_load_factors(text: str) -> tuple[float, ...]:
    """`2,4,8` -> (2.0, 4.0, 8.0); ValueError naming the bad part."""
    factors = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            value = float(part)
        except ValueError as exc:
            raise ValueError(f"load factor must be a number, got {part!r}") from exc
        if value <= 0:
            raise ValueError(f"load factor must be > 0, got {part!r}")
        factors.append(value)
    if not factors:
        raise ValueError(f"load factors needed, got {text!r}")
    return tuple(factors)


def offered_rates(c1_throughput: float, factors: Sequence[float]) -> list[float]:
    """Open-loop rates in req/s: the concurrency-1 throughput times each factor."""
    if c1_throughput <= 0:
        raise ValueError(f"concurrency-1 throughput must be > 0, got {c1_throughput}")
    return [c1_throughput * f for f in factors]


def goodput_row(run: Mapping[str, Any], slo_ms: float) -> dict[str, Any]:
    """One run's goodput line from its summary (which summarize_records gave an `e2e` SLO)."""
    s = run["summary"]
    good = s.get("goodput") or {}
    sent = s["completed"] + s["failed"]
    e2e = s["e2e_ms"]
    return {
        "pipeline": run["pipeline"],
        "mode": run["mode"],
        "concurrency": run.get("concurrency"),
        "offered_req_per_s": run.get("rate"),
        "req_per_s": s["request_throughput"],
        "goodput_req_per_s": good.get("request_goodput"),
        "good_fraction": good.get("good_fraction"),
        "slo_ms": slo_ms,
        "p50_ms": e2e.get("p50"),
        "p95_ms": e2e.get("p95"),
        "p99_ms": e2e.get("p99"),
        "ttft_p50_ms": s["ttft_ms"].get("p50"),
        "ttft_p95_ms": s["ttft_ms"].get("p95"),
        "requests": sent,
        "errors": s["failed"],
        "p95_within_slo": None if e2e.get("p95") is None else e2e["p95"] <= slo_ms,
    }


def goodput_table(runs: Sequence[Mapping[str, Any]], slo_ms: float) -> list[dict[str, Any]]:
    return [goodput_row(run, slo_ms) for run in runs]
