"""Builds deploy/grafana/dashboard.json, the hybridllm Grafana dashboard.

The dashboard is generated rather than hand-edited so that every PromQL expression lives in one readable
place. Run `python deploy/grafana/build_dashboard.py` after changing it; a CI test
(tests/deploy/test_grafana.py) fails when the committed JSON differs from what this script builds, and
checks that every expression parses (through promtool) and names only metrics the service exports.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DASHBOARD_PATH = Path(__file__).with_name("dashboard.json")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Grafana picks a rate window of at least four scrape intervals; `$pipeline` is the dashboard's filter.
RATE = "$__rate_interval"
PIPE = 'pipeline=~"$pipeline"'
QUANTILES = (0.5, 0.95, 0.99)


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 12
    height: int = 8
    stacked: bool = False
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def quantile_queries(metric: str, by: str, matcher: str = PIPE) -> tuple[Query, ...]:
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{{{matcher}}}[{RATE}])))",
            f"p{round(q * 100)} {{{{{by}}}}}",
        )
        for q in QUANTILES
    )


ROWS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    (
        "Latency",
        (
            Panel(
                "Request latency by pipeline (p50 / p95 / p99)",
                quantile_queries("hybrid_request_duration_seconds", "pipeline"),
                unit="s",
            ),
            Panel(
                "Stage latency (p50 / p95 / p99)",
                quantile_queries("hybrid_stage_duration_seconds", "stage"),
                unit="s",
            ),
            Panel(
                "Stage breakdown: mean seconds per request (stacked)",
                (
                    Query(
                        f"sum by (stage) (rate(hybrid_stage_duration_seconds_sum{{{PIPE}}}[{RATE}]))"
                        f" / sum by (stage) (rate(hybrid_stage_duration_seconds_count{{{PIPE}}}[{RATE}]))",
                        "{{stage}}",
                    ),
                ),
                unit="s",
                stacked=True,
                description="Where a request's time goes: privacy, route, embed, search, rerank, select, "
                "generate.",
            ),
            Panel(
                "Stage latency by pipeline (p95)",
                (
                    Query(
                        "histogram_quantile(0.95, sum by (le, stage, pipeline) "
                        f"(rate(hybrid_stage_duration_seconds_bucket{{{PIPE}}}[{RATE}])))",
                        "{{pipeline}} / {{stage}}",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "Time to first token the client sees (p50 / p95 / p99)",
                quantile_queries("hybrid_time_to_first_token_seconds", "pipeline"),
                unit="s",
            ),
            Panel(
                "Model time to first token (p50 / p95 / p99)",
                quantile_queries("hybrid_model_time_to_first_token_seconds", "pipeline"),
                unit="s",
            ),
            Panel(
                "Time per output token (p50 / p95 / p99)",
                quantile_queries("hybrid_time_per_output_token_seconds", "pipeline"),
                unit="s",
            ),
        ),
    ),
    (
        "Traffic and routing",
        (
            Panel(
                "Requests per second by pipeline and status",
                (
                    Query(
                        f"sum by (pipeline, status) (rate(hybrid_requests_total{{{PIPE}}}[{RATE}]))",
                        "{{pipeline}} {{status}}",
                    ),
                ),
                unit="reqps",
                width=8,
            ),
            Panel(
                "Route mix (intent -> target)",
                (
                    Query(
                        f"sum by (intent, target) (rate(hybrid_route_decisions_total[{RATE}]))",
                        "{{intent}} -> {{target}}",
                    ),
                ),
                unit="reqps",
                width=8,
                stacked=True,
            ),
            Panel(
                "Requests in flight",
                (Query("sum(hybrid_requests_in_flight)", "in flight"),),
                width=8,
            ),
            Panel(
                "Router confidence (heatmap)",
                (
                    Query(
                        "sum by (le) (increase(hybrid_router_confidence_bucket[$__interval]))",
                        "{{le}}",
                    ),
                ),
                kind="heatmap",
                width=12,
                description="Low-confidence decisions go to the low_confidence_target (rag by default).",
            ),
            Panel(
                "Router confidence by intent (p50)",
                (
                    Query(
                        "histogram_quantile(0.5, sum by (le, intent) "
                        f"(rate(hybrid_router_confidence_bucket[{RATE}])))",
                        "{{intent}}",
                    ),
                ),
                unit="percentunit",
                width=12,
            ),
            Panel(
                "Requests by prompt template and version",
                (
                    Query(
                        f"sum by (template, version) (rate(hybrid_template_requests_total[{RATE}]))",
                        "{{template}} v{{version}}",
                    ),
                ),
                unit="reqps",
                width=24,
                stacked=True,
            ),
        ),
    ),
    (
        "Errors and fallbacks",
        (
            Panel(
                "Server error rate by pipeline",
                (
                    Query(
                        "sum by (pipeline) "
                        f'(rate(hybrid_requests_total{{status="server_error",{PIPE}}}[{RATE}]))'
                        f" / sum by (pipeline) (rate(hybrid_requests_total{{{PIPE}}}[{RATE}]))",
                        "{{pipeline}}",
                    ),
                ),
                unit="percentunit",
                width=8,
            ),
            Panel(
                "Refusals and client errors by pipeline",
                (
                    Query(
                        "sum by (pipeline, status) "
                        f'(rate(hybrid_requests_total{{status=~"refused|client_error",{PIPE}}}[{RATE}]))'
                        f" / ignoring(status) group_left sum by (pipeline) "
                        f"(rate(hybrid_requests_total{{{PIPE}}}[{RATE}]))",
                        "{{pipeline}} {{status}}",
                    ),
                ),
                unit="percentunit",
                width=8,
            ),
            Panel(
                "Fallback rate (share of requests)",
                (
                    Query(
                        f"sum by (from_backend, to_backend) (rate(hybrid_fallbacks_total[{RATE}]))"
                        f" / scalar(sum(rate(hybrid_requests_total[{RATE}])))",
                        "{{from_backend}} -> {{to_backend}}",
                    ),
                ),
                unit="percentunit",
                width=8,
            ),
            Panel(
                "Generator circuit state by backend",
                (Query("max by (backend) (hybrid_circuit_state)", "{{backend}}"),),
                width=12,
                description="0 closed (serving), 1 open (failing over to the fallback), 2 half-open.",
            ),
            Panel(
                "Wait for a generator slot (p50 / p95 / p99)",
                quantile_queries("hybrid_queue_wait_seconds", "backend", matcher=""),
                unit="s",
                width=12,
                description="Time a request queued for one of the backend's concurrent generation slots.",
            ),
            Panel(
                "Rate-limit store failures by action",
                (
                    Query(
                        f"sum by (action) (rate(hybrid_limit_store_failures_total[{RATE}]))",
                        "{{action}}",
                    ),
                ),
                unit="reqps",
                width=24,
                description="Redis (limits.backend: redis) did not answer: requests let through (allow) or "
                "refused with 503 (deny) by limits.on_store_failure, and finished requests whose usage "
                "was not debited (unrecorded).",
            ),
        ),
    ),
    (
        "Tokens, cost and privacy",
        (
            Panel(
                "Tokens per 1k requests by pipeline",
                (
                    Query(
                        f"1000 * sum by (pipeline, kind) (rate(hybrid_tokens_total{{{PIPE}}}[{RATE}]))"
                        " / on(pipeline) group_left sum by (pipeline) "
                        f"(rate(hybrid_requests_total{{{PIPE}}}[{RATE}]))",
                        "{{pipeline}} {{kind}}",
                    ),
                ),
                width=8,
            ),
            Panel(
                "Cost per 1k requests by pipeline",
                (
                    Query(
                        f"1000 * sum by (pipeline) (rate(hybrid_cost_usd_total{{{PIPE}}}[{RATE}]))"
                        f" / sum by (pipeline) (rate(hybrid_requests_total{{{PIPE}}}[{RATE}]))",
                        "{{pipeline}}",
                    ),
                ),
                unit="currencyUSD",
                width=8,
            ),
            Panel(
                "Cost per hour by stage",
                (
                    Query(
                        f"3600 * sum by (stage) (rate(hybrid_cost_usd_total{{{PIPE}}}[{RATE}]))",
                        "{{stage}}",
                    ),
                ),
                unit="currencyUSD",
                width=8,
                stacked=True,
            ),
            Panel(
                "Egress tokens by backend and trust",
                (
                    Query(
                        f"sum by (backend, trust) (rate(hybrid_egress_tokens_total[{RATE}]))",
                        "{{backend}} ({{trust}})",
                    ),
                ),
                width=12,
                description="Tokens sent to each generator backend; trust=external leaves your "
                "infrastructure.",
            ),
            Panel(
                "Privacy findings by kind and action",
                (
                    Query(
                        f"sum by (kind, action) (rate(hybrid_privacy_findings_total[{RATE}]))",
                        "{{kind}} {{action}}",
                    ),
                ),
                width=12,
            ),
        ),
    ),
    (
        "Grounded answers",
        (
            Panel(
                "Groundedness of checked answers (p10 / p50)",
                tuple(
                    Query(
                        f"histogram_quantile({q}, sum by (le, pipeline) "
                        f"(rate(hybrid_groundedness_score_bucket{{{PIPE}}}[{RATE}])))",
                        f"p{round(q * 100)} {{{{pipeline}}}}",
                    )
                    for q in (0.1, 0.5)
                ),
                unit="percentunit",
                description="The share of an answer's claims that one evidence sentence about the question "
                "supports (services/rag/groundedness.py).",
            ),
            Panel(
                "Checked answers by action (share)",
                (
                    Query(
                        f"sum by (action) (rate(hybrid_groundedness_actions_total{{{PIPE}}}[{RATE}])) "
                        f"/ ignoring(action) group_left "
                        f"sum(rate(hybrid_groundedness_actions_total{{{PIPE}}}[{RATE}]))",
                        "{{action}}",
                    ),
                ),
                unit="percentunit",
                stacked=True,
                description="What rag.grounding.unsupported_answer did: pass, flag, extract (answered with "
                "the quoted evidence) or abstain.",
            ),
        ),
    ),
    (
        "Response cache",
        (
            Panel(
                "Cache lookups by result (share)",
                (
                    Query(
                        f"sum by (result) (rate(hybrid_cache_requests_total{{{PIPE}}}[{RATE}])) "
                        f"/ ignoring(result) group_left "
                        f"sum(rate(hybrid_cache_requests_total{{{PIPE}}}[{RATE}]))",
                        "{{result}}",
                    ),
                ),
                unit="percentunit",
                width=6,
                stacked=True,
                description="hit_exact, hit_semantic, miss, or bypass (sampled, privacy findings, fixed "
                "answers, degraded).",
            ),
            Panel(
                "Cache lookup latency (p50 / p95 / p99)",
                tuple(
                    Query(
                        f"histogram_quantile({q}, sum by (le) "
                        f"(rate(hybrid_cache_lookup_seconds_bucket[{RATE}])))",
                        f"p{round(q * 100)}",
                    )
                    for q in QUANTILES
                ),
                unit="s",
                width=6,
            ),
            Panel(
                "Generation cost saved by the cache per hour",
                (
                    Query(
                        f"3600 * sum by (pipeline) (rate(hybrid_cache_saved_usd_total{{{PIPE}}}[{RATE}]))",
                        "{{pipeline}}",
                    ),
                ),
                unit="currencyUSD",
                width=6,
            ),  # fmt: skip
            Panel(
                "Cache store failures (served as misses)",
                (
                    Query(
                        f"sum by (operation) (rate(hybrid_cache_store_failures_total[{RATE}]))",
                        "{{operation}}",
                    ),
                ),
                width=6,
                description="Redis unreachable or slow: each lookup is a miss and nothing is stored.",
            ),
        ),
    ),
    (
        "Index",
        (
            Panel(
                "Index age",
                (Query("max(hybrid_index_age_seconds)", "age"),),
                unit="s",
                kind="stat",
                width=8,
                height=5,
            ),
            Panel(
                "Index chunks",
                (Query("max(hybrid_index_chunks)", "chunks"),),
                kind="stat",
                width=8,
                height=5,
            ),
            Panel(
                "Index version (per instance)",
                (Query("max by (instance, version) (hybrid_index_info)", "{{version}} @ {{instance}}"),),
                kind="stat",
                width=8,
                height=5,
                extra={
                    "options": {
                        "textMode": "name",
                        "colorMode": "none",
                        "reduceOptions": {"calcs": ["lastNotNull"]},
                    }
                },
            ),
        ),
    ),
    (
        "vLLM (GPU setups)",
        (
            Panel(
                "vLLM time to first token (p50 / p95 / p99)",
                quantile_queries("vllm:time_to_first_token_seconds", "model_name", matcher=""),
                unit="s",
            ),
            Panel(
                "vLLM end-to-end request latency (p50 / p95 / p99)",
                quantile_queries("vllm:e2e_request_latency_seconds", "model_name", matcher=""),
                unit="s",
            ),
            Panel(
                "vLLM requests running and waiting",
                (
                    Query("sum(vllm:num_requests_running)", "running"),
                    Query("sum(vllm:num_requests_waiting)", "waiting"),
                ),
            ),
            Panel(
                "vLLM generated tokens per second",
                (
                    Query(
                        f"sum by (model_name) (rate(vllm:generation_tokens_total[{RATE}]))", "{{model_name}}"
                    ),
                ),
            ),
        ),
    ),
)


def render_panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    targets = [
        {
            "datasource": DATASOURCE,
            "expr": query.expr,
            "legendFormat": query.legend,
            "refId": chr(ord("A") + i),
        }
        for i, query in enumerate(panel.queries)
    ]
    custom: dict[str, Any] = {}
    if panel.kind == "timeseries":
        custom = {"fillOpacity": 60 if panel.stacked else 10, "lineWidth": 1, "showPoints": "never"}
        if panel.stacked:
            custom["stacking"] = {"mode": "normal", "group": "A"}
    rendered: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": panel.unit, "custom": custom}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
    }
    if panel.kind == "heatmap":
        for target in targets:
            target["format"] = "heatmap"
        rendered["options"] = {
            "calculate": False,
            "yAxis": {"unit": "percentunit"},
            "color": {"scheme": "Oranges", "mode": "scheme"},
            "cellGap": 1,
        }
    rendered.update(panel.extra)
    return rendered


def build_dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    panel_id, y = 1, 0
    for row_title, row_panels in ROWS:
        panels.append(
            {
                "id": panel_id,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        panel_id, y, x, row_height = panel_id + 1, y + 1, 0, 0
        for panel in row_panels:
            if x + panel.width > 24:
                x, y, row_height = 0, y + row_height, 0
            panels.append(render_panel(panel, panel_id, x, y))
            panel_id, x, row_height = panel_id + 1, x + panel.width, max(row_height, panel.height)
        y += row_height
    return {
        "uid": "hybridllm-overview",
        "title": "hybridllm: pipelines, stages, routing, cost",
        "description": "Generated by deploy/grafana/build_dashboard.py; edit that file, not this JSON.",
        "tags": ["hybridllm", "llm"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                {
                    "name": "pipeline",
                    "label": "Pipeline",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "query": {"query": "label_values(hybrid_requests_total, pipeline)", "refId": "pipelines"},
                    "definition": "label_values(hybrid_requests_total, pipeline)",
                    "multi": True,
                    "includeAll": True,
                    "allValue": ".*",
                    "current": {"text": "All", "value": "$__all"},
                    "refresh": 2,
                    "hide": 0,
                },
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build_dashboard(), indent=2) + "\n"


def main() -> int:
    DASHBOARD_PATH.write_text(render(), encoding="utf-8")
    sys.stdout.write(f"wrote {DASHBOARD_PATH}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
