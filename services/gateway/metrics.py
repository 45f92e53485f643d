"""Prometheus metrics: names carry units, buckets fit what they time, labels are bounded.

Collecting (the request trace) is separate from exporting (this class). With several worker processes,
prometheus_client's multiprocess mode is used when PROMETHEUS_MULTIPROC_DIR is set (before
prometheus_client is imported: it picks its value store at import); gauges then declare how workers
combine, the folder is emptied of a previous server's files when a new server starts
(`claim_multiprocess_dir`), and a worker that stops marks its live gauges dead (`close`).
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_asgi_app, multiprocess
from starlette.types import ASGIApp, Receive, Scope, Send

from services.cache.service import CACHE_RESULTS, STORE_OPERATIONS
from services.core.privacy_settings import ACTION_ORDER
from services.pipelines.base import RequestTrace
from services.pipelines.runner import Outcome

if TYPE_CHECKING:
    from services.gateway.tracing import RequestTracer

logger = logging.getLogger(__name__)

STAGES = ("privacy", "route", "embed", "search", "rerank", "select", "generate", "verify")
# What the groundedness check did with an answer (services/pipelines/grounding.py).
GROUNDEDNESS_ACTIONS = ("pass", "flag", "extract", "abstain")
TOKEN_KINDS = ("prompt", "completion", "context", "cached_prompt")
COST_STAGES = ("privacy", "route", "retrieval", "generate")
STATUSES = ("ok", "client_error", "server_error", "refused")
INTENTS = ("direct", "knowledge", "out_of_scope")

# Seconds. Stages range from sub-millisecond (FAISS search, privacy regexes) to tens of seconds (CPU
# generation), so one bucket set spans both ends with roughly 2.5x steps.
STAGE_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0)
GROUNDEDNESS_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
CONFIDENCE_BUCKETS = (0.3, 0.4, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


def multiprocess_enabled() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


_OWNER_FILE = "server.owner"


def claim_multiprocess_dir(directory: Path, server_pid: int) -> bool:
    """Empty `directory` of another server's metric files, once per server; True when it was emptied.

    Every worker calls this at start, before it creates a metric; the workers of one server share a
    parent (uvicorn's supervisor), whose pid is the owner mark (a single-process server is its own).
    The first worker of a new server finds a foreign mark, deletes the old `*.db` files (counters would
    otherwise resume from the last run) and writes its own mark; the others, and workers restarted
    later, find the mark theirs and keep the files.
    """
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        owner = directory / _OWNER_FILE
        try:
            current = owner.read_text().strip()
        except FileNotFoundError:
            current = ""
        if current == str(server_pid):
            return False
        for stale in directory.glob("*.db"):
            stale.unlink(missing_ok=True)
        owner.write_text(str(server_pid))
        return True


class ServiceMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "hybrid_requests", "Requests by pipeline, route and outcome.",
            ["pipeline", "route", "status"], registry=r,
        )  # fmt: skip
        self.request_duration = Histogram(
            "hybrid_request_duration_seconds", "End-to-end request latency.",
            ["pipeline", "route"], buckets=REQUEST_BUCKETS, registry=r,
        )  # fmt: skip
        self.stage_duration = Histogram(
            "hybrid_stage_duration_seconds", "Latency of one pipeline stage.",
            ["stage", "pipeline"], buckets=STAGE_BUCKETS, registry=r,
        )  # fmt: skip
        self.ttft = Histogram(
            "hybrid_time_to_first_token_seconds",
            "Time from request to the first answer text the client sees.",
            ["pipeline"], buckets=TTFT_BUCKETS, registry=r,
        )  # fmt: skip
        self.model_ttft = Histogram(
            "hybrid_model_time_to_first_token_seconds",
            "Time from the start of generation to the model's first token (queue wait and filters excluded).",
            ["pipeline"], buckets=TTFT_BUCKETS, registry=r,
        )  # fmt: skip
        self.tpot = Histogram(
            "hybrid_time_per_output_token_seconds", "Decode time per output token after the first.",
            ["pipeline"], buckets=TPOT_BUCKETS, registry=r,
        )  # fmt: skip
        self.tokens = Counter(
            "hybrid_tokens", "Tokens by pipeline and kind (prompt, completion, context, cached_prompt: "
            "the prompt tokens a KV cache held instead of prefilling them).",
            ["pipeline", "kind"], registry=r,
        )  # fmt: skip
        self.cost = Counter(
            "hybrid_cost_usd", "Cost in USD from the price card, by pipeline and stage.",
            ["pipeline", "stage"], registry=r,
        )  # fmt: skip
        self.route_decisions = Counter(
            "hybrid_route_decisions", "Router decisions by intent and target pipeline.",
            ["intent", "target"], registry=r,
        )  # fmt: skip
        self.router_confidence = Histogram(
            "hybrid_router_confidence", "Router confidence of the chosen intent.",
            ["intent"], buckets=CONFIDENCE_BUCKETS, registry=r,
        )  # fmt: skip
        self.in_flight = Gauge(
            "hybrid_requests_in_flight", "Requests being served now.",
            registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.privacy_findings = Counter(
            "hybrid_privacy_findings", "Sensitive-data findings by kind and the action taken.",
            ["kind", "action"], registry=r,
        )  # fmt: skip
        self.egress_tokens = Counter(
            "hybrid_egress_tokens", "Prompt tokens sent to a generator backend, by backend and trust.",
            ["backend", "trust"], registry=r,
        )  # fmt: skip
        self.fallbacks = Counter(
            "hybrid_fallbacks", "Requests moved from a failing backend to its fallback.",
            ["from_backend", "to_backend"], registry=r,
        )  # fmt: skip
        self.index_chunks = Gauge(
            "hybrid_index_chunks", "Chunks in the serving index.",
            registry=r, multiprocess_mode="mostrecent",
        )  # fmt: skip
        self.index_age = Gauge(
            "hybrid_index_age_seconds", "Seconds since the serving index version was built.",
            registry=r, multiprocess_mode="mostrecent",
        )  # fmt: skip
        self.index_info = Gauge(
            "hybrid_index_info", "1 for the serving index version.",
            ["version"], registry=r, multiprocess_mode="mostrecent",
        )  # fmt: skip
        self.template_requests = Counter(
            "hybrid_template_requests", "Requests by prompt template name and version.",
            ["template", "version"], registry=r,
        )  # fmt: skip
        self.queue_wait = Histogram(
            "hybrid_queue_wait_seconds", "Time a request waited for a generator slot.",
            ["backend"], buckets=STAGE_BUCKETS, registry=r,
        )  # fmt: skip
        self.groundedness = Histogram(
            "hybrid_groundedness_score", "Share of an answer's words and numbers its evidence supports.",
            ["pipeline"], buckets=GROUNDEDNESS_BUCKETS, registry=r,
        )  # fmt: skip
        self.groundedness_actions = Counter(
            "hybrid_groundedness_actions", "Checked answers by what the check did with them.",
            ["pipeline", "action"], registry=r,
        )  # fmt: skip
        self.circuit_state = Gauge(
            "hybrid_circuit_state", "Circuit of a generator backend: 0 closed, 1 open, 2 half-open.",
            ["backend"], registry=r, multiprocess_mode="max",
        )  # fmt: skip
        self.cache_requests = Counter(
            "hybrid_cache_requests",
            "Response cache lookups by result (hit_exact, hit_semantic, miss, bypass).",
            ["pipeline", "result"], registry=r,
        )  # fmt: skip
        self.cache_lookup = Histogram(
            "hybrid_cache_lookup_seconds", "Time to look a request up in the response cache.",
            buckets=STAGE_BUCKETS, registry=r,
        )  # fmt: skip
        self.cache_saved = Counter(
            "hybrid_cache_saved_usd", "Generation cost the response cache saved, priced by the price card.",
            ["pipeline"], registry=r,
        )  # fmt: skip
        self.cache_store_failures = Counter(
            "hybrid_cache_store_failures", "Response cache store operations that failed (served as a miss).",
            ["operation"], registry=r,
        )  # fmt: skip
        self.limit_store_failures = Counter(
            "hybrid_limit_store_failures",
            "Rate-limit store calls that failed, by what the gateway did: allow or deny the request, "
            "or lose a finished request's debit (unrecorded).",
            ["action"], registry=r,
        )  # fmt: skip
        self._index_version: str | None = None
        self._index_built_at: float | None = None
        # Spans of finished requests (services.gateway.tracing); None while tracing is off.
        self.tracer: RequestTracer | None = None

    def initialise_labels(
        self,
        pipelines: Iterable[str],
        backends: Iterable[tuple[str, str]],
        *,
        route_targets: Iterable[str] = (),
        privacy_kinds: Iterable[str] = (),
    ) -> None:
        """Create every bounded series at zero, so rates and alerts work before the first request.

        `route_targets`: where the router may send a request (with a router); `privacy_kinds`: the
        detector kinds that run.
        """
        for intent in INTENTS:
            for target in route_targets:
                self.route_decisions.labels(intent=intent, target=target)
        for kind in privacy_kinds:
            for action in ACTION_ORDER:
                self.privacy_findings.labels(kind=kind, action=action)
        for pipeline in pipelines:
            for stage in STAGES:
                self.stage_duration.labels(stage=stage, pipeline=pipeline)
            for kind in TOKEN_KINDS:
                self.tokens.labels(pipeline=pipeline, kind=kind)
            for stage in COST_STAGES:
                self.cost.labels(pipeline=pipeline, stage=stage)
            for status in STATUSES:
                self.requests.labels(pipeline=pipeline, route=pipeline, status=status)
            self.ttft.labels(pipeline=pipeline)
            self.model_ttft.labels(pipeline=pipeline)
            self.tpot.labels(pipeline=pipeline)
            self.groundedness.labels(pipeline=pipeline)
            for check_action in GROUNDEDNESS_ACTIONS:
                self.groundedness_actions.labels(pipeline=pipeline, action=check_action)
            self.cache_saved.labels(pipeline=pipeline)
            for result in CACHE_RESULTS:
                self.cache_requests.labels(pipeline=pipeline, result=result)
        for intent in INTENTS:
            self.router_confidence.labels(intent=intent)
        for name, trust in backends:
            self.egress_tokens.labels(backend=name, trust=trust)
        for operation in STORE_OPERATIONS:
            self.cache_store_failures.labels(operation=operation)

    def observe_request(
        self, trace: RequestTrace, outcome: Outcome | None, status: str, seconds: float
    ) -> None:
        pipeline, route = trace.pipeline, trace.route_label
        self.requests.labels(pipeline=pipeline, route=route, status=status).inc()
        self.request_duration.labels(pipeline=pipeline, route=route).observe(seconds)
        for stage, ms in trace.timings.ms.items():
            if stage in STAGES:
                self.stage_duration.labels(stage=stage, pipeline=pipeline).observe(ms / 1000.0)
        if trace.route is not None:
            self.route_decisions.labels(intent=trace.route.intent, target=trace.route.target).inc()
            self.router_confidence.labels(intent=trace.route.intent).observe(trace.route.confidence)
        if trace.template is not None:
            self.template_requests.labels(template=trace.template.name, version=trace.template.version).inc()
        if trace.privacy:
            action = str(trace.privacy.get("action", "allow"))
            for kind, count in trace.privacy_counts.items():
                self.privacy_findings.labels(kind=kind, action=action).inc(count)
        if trace.cache is not None:
            self.cache_requests.labels(pipeline=pipeline, result=trace.cache.result).inc()
            if trace.cache.result != "bypass":
                self.cache_lookup.observe(trace.cache.lookup_s)
            if trace.cache.saved_usd:
                self.cache_saved.labels(pipeline=pipeline).inc(trace.cache.saved_usd)
        if outcome is None:
            return
        if trace.groundedness is not None:
            self.groundedness.labels(pipeline=pipeline).observe(float(trace.groundedness["score"]))
            check_action = str(trace.groundedness["action"])
            self.groundedness_actions.labels(pipeline=pipeline, action=check_action).inc()
        self.tokens.labels(pipeline=pipeline, kind="prompt").inc(outcome.prompt_tokens)
        self.tokens.labels(pipeline=pipeline, kind="completion").inc(outcome.completion_tokens)
        self.tokens.labels(pipeline=pipeline, kind="context").inc(trace.context_tokens)
        self.tokens.labels(pipeline=pipeline, kind="cached_prompt").inc(outcome.cached_prompt_tokens)
        for stage, usd in outcome.cost_usd.items():
            if stage != "total":
                self.cost.labels(pipeline=pipeline, stage=stage).inc(usd)
        if outcome.generated and trace.backend is not None:
            self.egress_tokens.labels(backend=trace.backend, trust=trace.backend_trust or "internal").inc(
                outcome.prompt_tokens
            )
        if outcome.model_ttft_s is not None:
            self.model_ttft.labels(pipeline=pipeline).observe(outcome.model_ttft_s)
        if outcome.ttft_s is not None:
            self.ttft.labels(pipeline=pipeline).observe(outcome.ttft_s)
            decode_s = seconds - outcome.ttft_s
            if outcome.completion_tokens > 1 and decode_s > 0:
                self.tpot.labels(pipeline=pipeline).observe(decode_s / (outcome.completion_tokens - 1))

    def set_index(self, version: str, chunks: int, age_s: float) -> None:
        if self._index_version is not None and self._index_version != version:
            self.index_info.labels(version=self._index_version).set(0)
        self._index_version = version
        self.index_info.labels(version=version).set(1)
        self.index_chunks.set(chunks)
        self.index_age.set(age_s)
        self._index_built_at = time.time() - age_s

    def close(self) -> None:
        """At worker exit: drop this process's live gauges (in-flight) from the multiprocess totals."""
        if multiprocess_enabled():
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    def asgi_app(self) -> ASGIApp:
        """The /metrics endpoint: prometheus_client's exporter over this registry, or over every
        worker's files in multiprocess mode."""
        if multiprocess_enabled():
            exported = CollectorRegistry()
            multiprocess.MultiProcessCollector(exported)  # type: ignore[no-untyped-call]
        else:
            exported = self.registry
        return _MetricsEndpoint(self, make_asgi_app(exported))

    def refresh_index_age(self) -> None:
        """The index age grows between index reloads; brought up to date before each scrape."""
        if self._index_built_at is not None:
            self.index_age.set(max(0.0, time.time() - self._index_built_at))


class _MetricsEndpoint:
    """An ASGI app (a class, so Starlette mounts it as one rather than as a request handler)."""

    def __init__(self, metrics: ServiceMetrics, exporter: ASGIApp) -> None:
        self._metrics = metrics
        self._exporter = exporter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._metrics.refresh_index_age()
        await self._exporter(scope, receive, send)


def exposition_names(registry: CollectorRegistry) -> frozenset[str]:
    """The name each metric of `registry` is scraped under: a counter's ends in `_total`; a histogram's
    samples add `_bucket`, `_sum` and `_count` to its name."""
    return frozenset(
        f"{family.name}_total" if family.type == "counter" else family.name for family in registry.collect()
    )


def service_metric_names() -> frozenset[str]:
    """Every metric the service exports, read from the metric objects themselves (a fresh registry)."""
    return exposition_names(ServiceMetrics().registry)
