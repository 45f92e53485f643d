"""OpenTelemetry spans: one span per request, a child span per pipeline stage. Off by default.

Spans are written when the request ends, from the request's trace: stage durations are the ones the
metrics and the `hybrid` extension report, so the three never disagree. Each stage span ends when its
stage was recorded (`ClockedStageTimings.ended_ns`); stages recorded together after the fact (the
retrieval service measures embed, search and rerank in one call) are laid back to back, ending at the
time they were recorded, which is where they ran since the stages of one request run one after another.

Attributes are bounded (pipeline, route, status, intent, backend, token counts): no request id, no text.
The trace id goes into the request's log line instead, which is how a log line and a trace are joined.

A caller's W3C `traceparent` (and `tracestate`) makes the request span its child, in the caller's trace;
one that does not parse is ignored and the request starts a trace of its own. The middleware hands the
headers over in `incoming_trace_context`, a context variable, since spans are written when the request ends.

The OpenTelemetry packages are optional: they are imported only when `observability.otel_enabled` is set
(or a test passes its own exporter), so the service runs without them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from types import MappingProxyType
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from services.core.errors import ConfigError
from services.core.settings import ObservabilitySettings
from services.pipelines.base import ClockedStageTimings, RequestTrace

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer

    from services.pipelines.runner import Outcome

logger = logging.getLogger(__name__)

SERVICE_NAME = "hybridllm"
REQUEST_SPAN = "chat.completions"
# Stage spans are named by their stage; anything else recorded in the timings (e.g. "total") is not a span.
STAGE_SPANS = ("privacy", "route", "embed", "search", "rerank", "select", "generate", "verify")
# The W3C trace context headers a caller may send (lower case, as ASGI gives them).
TRACE_HEADERS = ("traceparent", "tracestate")
# This request's trace context headers, set by the gateway middleware for the request's tasks.
incoming_trace_context: ContextVar[Mapping[str, str]] = ContextVar(
    "incoming_trace_context", default=MappingProxyType({})
)


def otlp_exporter(endpoint: str) -> SpanExporter:
    """OTLP/HTTP when the endpoint names the traces path (`.../v1/traces`, the 4318 convention), else gRPC.

    The gRPC exporter is imported only when chosen, so an HTTP-only install works.
    """
    parsed = urlparse(endpoint)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"otel_endpoint must be an http(s) URL, got {endpoint!r}")
    if parsed.path.rstrip("/").endswith("/v1/traces"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return HttpExporter(endpoint=endpoint)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

    return GrpcExporter(endpoint=endpoint, insecure=parsed.scheme == "http")


def build_tracer_provider(exporter: SpanExporter, *, batch: bool = True) -> TracerProvider:
    """A provider of its own (the global one is left alone, so two apps in one process stay apart)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    # Batching keeps export off the request path; a test exporter wants spans the moment they end.
    provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
    return provider


def stage_windows(trace: RequestTrace, started_ns: int) -> list[tuple[str, int, int]]:
    """(stage, start_ns, end_ns) for each stage span, in the order the stages ran."""
    durations = [(name, int(ms * 1_000_000)) for name, ms in trace.timings.ms.items() if name in STAGE_SPANS]
    timings = trace.timings
    ended = timings.ended_ns if isinstance(timings, ClockedStageTimings) else {}
    windows: list[tuple[str, int, int]] = []
    if any(name not in ended for name, _ in durations):
        # No clock marks: back to back from the request start (durations exact, offsets approximate).
        cursor = started_ns
        for name, length in durations:
            windows.append((name, cursor, cursor + length))
            cursor += length
        return windows
    next_start: int | None = None
    for name, length in reversed(durations):
        end = ended[name] if next_start is None else min(ended[name], next_start)
        start = max(started_ns, end - length)
        windows.append((name, start, max(start, end)))
        next_start = start
    windows.reverse()
    return windows


class RequestTracer:
    """Writes the spans of finished requests to a tracer provider."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self._tracer: Tracer = provider.get_tracer("services.gateway")

    def record(
        self,
        trace: RequestTrace,
        outcome: Outcome | None,
        *,
        status: str,
        stream: bool,
        started_ns: int,
        ended_ns: int,
    ) -> str:
        """Write the request span and its stage spans; returns the trace id (32 hex digits)."""
        from opentelemetry.trace import Status, StatusCode, set_span_in_context

        caller = _caller_context(incoming_trace_context.get())
        request_span = self._tracer.start_span(REQUEST_SPAN, context=caller, start_time=started_ns)
        request_span.set_attributes(_request_attributes(trace, outcome, status=status, stream=stream))
        if status == "server_error":
            request_span.set_status(Status(StatusCode.ERROR))
        parent = set_span_in_context(request_span)
        for stage, start, end in stage_windows(trace, started_ns):
            span = self._tracer.start_span(stage, context=parent, start_time=start)
            span.set_attributes({"hybrid.stage": stage, "hybrid.pipeline": trace.pipeline})
            if stage == "generate" and trace.backend is not None:
                span.set_attributes(_backend_attributes(trace))
            span.end(end_time=end)
        request_span.end(end_time=max(ended_ns, started_ns))
        return format(request_span.get_span_context().trace_id, "032x")

    def shutdown(self) -> None:
        self.provider.shutdown()


def _caller_context(headers: Mapping[str, str]) -> Context | None:
    """The caller's span as the parent, from its W3C headers; an empty context (a new trace) if they do
    not parse; None (the current context) when there are none."""
    if not headers:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract(headers)


def _backend_attributes(trace: RequestTrace) -> dict[str, str]:
    return {"hybrid.backend": trace.backend or "", "hybrid.backend_trust": trace.backend_trust or ""}


def _request_attributes(
    trace: RequestTrace, outcome: Outcome | None, *, status: str, stream: bool
) -> dict[str, str | bool | int | float | Sequence[str]]:
    attributes: dict[str, str | bool | int | float | Sequence[str]] = {
        "hybrid.pipeline": trace.pipeline,
        "hybrid.route": trace.route_label,
        "hybrid.status": status,
        "hybrid.stream": stream,
    }
    if trace.route is not None:
        attributes["hybrid.intent"] = trace.route.intent
        attributes["hybrid.router_confidence"] = round(trace.route.confidence, 4)
    if trace.backend is not None:
        attributes.update(_backend_attributes(trace))
    if trace.privacy_counts:
        attributes["hybrid.privacy_findings"] = sorted(trace.privacy_counts)
    if outcome is not None:
        attributes["hybrid.tokens.prompt"] = outcome.prompt_tokens
        attributes["hybrid.tokens.cached_prompt"] = outcome.cached_prompt_tokens
        attributes["hybrid.tokens.completion"] = outcome.completion_tokens
        attributes["hybrid.tokens.context"] = trace.context_tokens
        attributes["hybrid.finish_reason"] = outcome.finish_reason
    return attributes


def tracer_from_settings(settings: ObservabilitySettings) -> RequestTracer | None:
    """The service's tracer: None unless `otel_enabled`, then OTLP to `otel_endpoint`."""
    if not settings.otel_enabled:
        return None
    try:
        exporter = otlp_exporter(settings.otel_endpoint)
    except ImportError as exc:
        raise ConfigError(
            "observability.otel_enabled needs opentelemetry-sdk and an OTLP exporter "
            f"(opentelemetry-exporter-otlp-proto-grpc or -http): {exc}"
        ) from exc
    logger.info("tracing: OTLP spans to %s", settings.otel_endpoint)
    return RequestTracer(build_tracer_provider(exporter))
