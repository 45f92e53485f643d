"""Scrape `/metrics` and attribute time, cost and tokens to stages and pipelines from two scrapes.

Counters and histogram sums only grow, so the delta between a scrape before and one after a run is what
that run cost the server (assuming nothing else drove it meanwhile, which benchmarks arrange).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

SampleKey = tuple[str, tuple[tuple[str, str], ...]]
Scrape = dict[SampleKey, float]


def parse_metrics(text: str) -> Scrape:
    """Flatten Prometheus exposition text to {(sample name, sorted labels): value}."""
    samples: Scrape = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            samples[key] = float(sample.value)
    return samples


def _metrics_url(base_url: str) -> str:
    return f"{base_url.rstrip('/')}/metrics"


def _parse_response(response: httpx.Response) -> Scrape:
    return parse_metrics(response.text) if response.status_code == 200 else {}


async def scrape(client: httpx.AsyncClient, base_url: str, timeout_s: float = 10.0) -> Scrape:
    """One scrape; an empty scrape when the server has no /metrics (an upstream fixture, say)."""
    try:
        return _parse_response(await client.get(_metrics_url(base_url), timeout=timeout_s))
    except httpx.HTTPError:
        return {}


def scrape_blocking(base_url: str, timeout_s: float = 10.0) -> Scrape:
    """`scrape` for synchronous callers (a bench's control loop between runs)."""
    try:
        return _parse_response(httpx.get(_metrics_url(base_url), timeout=timeout_s))
    except httpx.HTTPError:
        return {}


def sample_values(scrape_: Scrape, sample: str) -> list[float]:
    """The values of one sample name, one per label set (a gauge, a counter)."""
    return [value for (name, _), value in scrape_.items() if name == sample]


def delta(before: Scrape, after: Scrape) -> Scrape:
    """after - before, for every sample present after; counter resets (negative) count from zero."""
    diff: Scrape = {}
    for key, value in after.items():
        change = value - before.get(key, 0.0)
        diff[key] = value if change < 0 else change
    return diff


def _by_labels(diff: Scrape, sample: str, *label_names: str) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = {}
    for (name, labels), value in diff.items():
        if name != sample:
            continue
        label_map = dict(labels)
        key = tuple(label_map.get(label, "") for label in label_names)
        out[key] = out.get(key, 0.0) + value
    return out


def attribute_stages(diff: Scrape) -> dict[str, dict[str, dict[str, float]]]:
    """{pipeline: {stage: {"seconds", "count", "mean_ms", "cost_usd"}}} from one delta."""
    seconds = _by_labels(diff, "hybrid_stage_duration_seconds_sum", "pipeline", "stage")
    counts = _by_labels(diff, "hybrid_stage_duration_seconds_count", "pipeline", "stage")
    costs = _by_labels(diff, "hybrid_cost_usd_total", "pipeline", "stage")
    result: dict[str, dict[str, dict[str, float]]] = {}
    for pipeline, stage in sorted(set(seconds) | set(costs)):
        total_s = seconds.get((pipeline, stage), 0.0)
        count = counts.get((pipeline, stage), 0.0)
        if total_s == 0 and count == 0 and costs.get((pipeline, stage), 0.0) == 0:
            continue
        result.setdefault(pipeline, {})[stage] = {
            "seconds": total_s,
            "count": count,
            "mean_ms": total_s / count * 1000.0 if count else 0.0,
            "cost_usd": costs.get((pipeline, stage), 0.0),
        }
    return result


def summarize_delta(diff: Scrape) -> dict[str, Any]:
    """Stage attribution plus the per-pipeline totals a comparison reports (cost, tokens, egress)."""
    cost = _by_labels(diff, "hybrid_cost_usd_total", "pipeline")
    tokens = _by_labels(diff, "hybrid_tokens_total", "pipeline", "kind")
    requests = _by_labels(diff, "hybrid_requests_total", "pipeline", "status")
    egress = _by_labels(diff, "hybrid_egress_tokens_total", "backend", "trust")
    routes = _by_labels(diff, "hybrid_route_decisions_total", "intent", "target")
    return {
        "stages": attribute_stages(diff),
        "cost_usd_by_pipeline": {p: v for (p,), v in cost.items() if v},
        "tokens_by_pipeline": _nest(tokens),
        "requests_by_pipeline": _nest(requests),
        "egress_tokens": _nest(egress),
        "route_decisions": _nest(routes),
    }


def _nest(flat: Mapping[tuple[str, ...], float]) -> dict[str, dict[str, float]]:
    nested: dict[str, dict[str, float]] = {}
    for (outer, inner), value in flat.items():
        if value:
            nested.setdefault(outer, {})[inner] = value
    return nested
