"""OpenTelemetry spans: a span per request, a child span per stage that ran, with bounded attributes.

Spans from a live gateway (router, retrieval, privacy gate real; `openai` backend on the benchmark fixture
upstream) go to the SDK's InMemorySpanExporter; the OTLP path is checked against a real OTLP/HTTP receiver
that decodes the protobuf the exporter sends.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from benchmarks.harness.fixture_upstream import FixtureBehaviour, running_fixture_upstream
from services.core.ports import free_port
from services.core.settings import ObservabilitySettings, load_settings
from services.gateway.app import create_app
from services.gateway.tracing import (
    REQUEST_SPAN,
    RequestTracer,
    build_tracer_provider,
    otlp_exporter,
    stage_windows,
    tracer_from_settings,
)
from services.pipelines.base import RequestTrace
from tests.conftest import serve_in_thread
from tests.gateway.test_metrics import ANSWER_TOKENS, chat, gateway_settings

ALLOWED_ATTRIBUTES = {
    "hybrid.pipeline", "hybrid.route", "hybrid.status", "hybrid.stream", "hybrid.intent",
    "hybrid.router_confidence", "hybrid.backend", "hybrid.backend_trust", "hybrid.privacy_findings",
    "hybrid.tokens.prompt", "hybrid.tokens.completion", "hybrid.tokens.context", "hybrid.finish_reason",
    "hybrid.stage", "hybrid.tokens.cached_prompt",
}  # fmt: skip
QUESTION = "How many vacation days do I get per year? Mail me at jane.doe@example.com"


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(scope="module")
def gateway(
    exporter: InMemorySpanExporter,
    handbook_index: Path,
    service_router: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("tracing-gw")
    with running_fixture_upstream(FixtureBehaviour(delay_s=0.005, tokens=ANSWER_TOKENS)) as upstream:
        settings = gateway_settings(
            upstream,
            tmp,
            default_pipeline="hybrid",
            rag={"index_dir": str(handbook_index), "watch_interval_s": 0, "rerank": {"reranker": "mmr"}},
            router={"model_dir": str(service_router), "min_confidence": 1.0},  # every request goes to rag
        )
        tracer = RequestTracer(build_tracer_provider(exporter, batch=False))
        with serve_in_thread(create_app(settings, tracer=tracer)) as url:
            yield url


def spans_of(exporter: InMemorySpanExporter, trace_id: int) -> list[ReadableSpan]:
    return [
        s for s in exporter.get_finished_spans() if s.context is not None and s.context.trace_id == trace_id
    ]


@pytest.mark.integration
@pytest.mark.parametrize("stream", [False, True])
def test_request_span_with_a_child_per_stage(
    gateway: str, exporter: InMemorySpanExporter, stream: bool
) -> None:
    exporter.clear()
    extension = chat(gateway, "hybrid", QUESTION, stream=stream)
    (request_span,) = [s for s in exporter.get_finished_spans() if s.name == REQUEST_SPAN]
    assert request_span.parent is None and request_span.context is not None
    spans = spans_of(exporter, request_span.context.trace_id)
    stages = [s for s in spans if s is not request_span]

    ran = [stage for stage in extension["timings_ms"] if stage != "total"]
    assert ran == ["privacy", "route", "embed", "search", "rerank", "select", "generate", "verify"]
    assert [s.name for s in sorted(stages, key=lambda s: s.start_time or 0)] == ran
    for span in stages:
        assert span.parent is not None and span.parent.span_id == request_span.context.span_id
        assert span.start_time is not None and span.end_time is not None
        assert request_span.start_time is not None and request_span.end_time is not None
        assert request_span.start_time <= span.start_time <= span.end_time <= request_span.end_time
        # The span lasts what the extension reports for the stage (ms rounded to 3 decimals there).
        ms = (span.end_time - span.start_time) / 1e6
        assert ms == pytest.approx(extension["timings_ms"][span.name], abs=2e-3)
    ordered = sorted(stages, key=lambda s: s.start_time or 0)
    for earlier, later in zip(ordered, ordered[1:], strict=False):
        assert (earlier.end_time or 0) <= (later.start_time or 0)  # stages run one after another

    attributes = dict(request_span.attributes or {})
    assert attributes["hybrid.pipeline"] == "hybrid"
    assert attributes["hybrid.route"] == "rag" and attributes["hybrid.status"] == "ok"
    assert attributes["hybrid.stream"] is stream
    assert attributes["hybrid.intent"] == extension["route"]["intent"]
    assert attributes["hybrid.tokens.completion"] == extension["tokens"]["completion"]
    assert attributes["hybrid.tokens.cached_prompt"] == extension["tokens"]["cached_prompt"]
    assert tuple(attributes["hybrid.privacy_findings"]) == ("email",)  # type: ignore[arg-type]
    for span in spans:
        keys = set((span.attributes or {}).keys())
        assert keys <= ALLOWED_ATTRIBUTES, keys - ALLOWED_ATTRIBUTES
        values = " ".join(str(v) for v in (span.attributes or {}).values())
        assert "jane.doe" not in values and "vacation" not in values


@pytest.mark.integration
def test_failed_request_gets_a_span_too(gateway: str, exporter: InMemorySpanExporter) -> None:
    exporter.clear()
    body = {"model": "no-such-pipeline", "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(gateway + "/v1/chat/completions", json=body, timeout=30).status_code == 404
    (span,) = exporter.get_finished_spans()
    assert span.name == REQUEST_SPAN
    assert (span.attributes or {})["hybrid.status"] == "client_error"


CALLER_TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
CALLER_SPAN_ID = 0x00F067AA0BA902B7
CALLER_TRACEPARENT = f"00-{CALLER_TRACE_ID:032x}-{CALLER_SPAN_ID:016x}-01"


def chat_with_headers(base_url: str, headers: dict[str, str], *, stream: bool) -> None:
    body = {"model": "prompt", "messages": [{"role": "user", "content": "Say hi."}], "stream": stream}
    url = base_url + "/v1/chat/completions"
    with httpx.stream("POST", url, json=body, headers=headers, timeout=30) as resp:
        assert resp.status_code == 200, resp.read()
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert not stream or events[-1] == "[DONE]"


@pytest.mark.integration
@pytest.mark.parametrize("stream", [False, True])
def test_a_callers_traceparent_is_the_parent_of_the_request(
    gateway: str, exporter: InMemorySpanExporter, stream: bool
) -> None:
    exporter.clear()
    headers = {"traceparent": CALLER_TRACEPARENT, "tracestate": "vendor=opaque"}
    chat_with_headers(gateway, headers, stream=stream)
    spans = exporter.get_finished_spans()
    (request_span,) = [s for s in spans if s.name == REQUEST_SPAN]
    assert request_span.parent is not None and request_span.parent.is_remote
    assert request_span.parent.span_id == CALLER_SPAN_ID
    assert request_span.context is not None and request_span.context.span_id != CALLER_SPAN_ID
    assert dict(request_span.context.trace_state) == {"vendor": "opaque"}
    assert len(spans) > 1  # the stages
    assert {s.context.trace_id for s in spans if s.context is not None} == {CALLER_TRACE_ID}


@pytest.mark.integration
@pytest.mark.parametrize(
    "traceparent",
    [
        "garbage",
        f"00-{0:032x}-{CALLER_SPAN_ID:016x}-01",  # all-zero trace id: invalid by the W3C spec
        f"00-{CALLER_TRACE_ID:032x}-{CALLER_SPAN_ID:016x}",  # flags missing
    ],
)
def test_an_invalid_traceparent_starts_a_new_trace(
    gateway: str, exporter: InMemorySpanExporter, traceparent: str
) -> None:
    exporter.clear()
    chat_with_headers(gateway, {"traceparent": traceparent}, stream=False)
    spans = exporter.get_finished_spans()
    (request_span,) = [s for s in spans if s.name == REQUEST_SPAN]
    assert request_span.parent is None and request_span.context is not None
    assert request_span.context.trace_id not in (0, CALLER_TRACE_ID)
    assert {s.context.trace_id for s in spans if s.context is not None} == {request_span.context.trace_id}


@pytest.mark.integration
def test_requests_without_a_traceparent_do_not_share_a_trace(
    gateway: str, exporter: InMemorySpanExporter
) -> None:
    exporter.clear()
    chat_with_headers(gateway, {"traceparent": CALLER_TRACEPARENT}, stream=False)
    chat_with_headers(gateway, {}, stream=False)
    requests = [s for s in exporter.get_finished_spans() if s.name == REQUEST_SPAN]
    assert [s.parent is not None for s in requests] == [True, False]
    assert requests[1].context is not None and requests[1].context.trace_id != CALLER_TRACE_ID


class _OtlpReceiver(BaseHTTPRequestHandler):
    received: list[ExportTraceServiceRequest] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["content-length"]))
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        type(self).received.append(message)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        return


@pytest.mark.integration
def test_spans_reach_an_otlp_http_receiver() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _OtlpReceiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
        tracer = tracer_from_settings(ObservabilitySettings(otel_enabled=True, otel_endpoint=endpoint))
        assert tracer is not None
        trace = RequestTrace(pipeline="prompt")
        trace.timings.add("privacy", 0.2)
        trace.timings.add("generate", 5.0)
        started = 1_700_000_000_000_000_000
        tracer.record(
            trace, None, status="ok", stream=False, started_ns=started, ended_ns=started + 9_000_000
        )
        tracer.shutdown()  # flushes the batch
    finally:
        server.shutdown()
        thread.join(timeout=5)
    names = [
        span.name
        for message in _OtlpReceiver.received
        for resource_spans in message.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]
    assert sorted(names) == sorted([REQUEST_SPAN, "privacy", "generate"])
    resource = _OtlpReceiver.received[0].resource_spans[0].resource
    assert {a.key: a.value.string_value for a in resource.attributes}["service.name"] == "hybridllm"


@pytest.mark.unit
def test_tracing_is_off_by_default() -> None:
    assert tracer_from_settings(ObservabilitySettings()) is None
    app = create_app(load_settings())
    assert app.state.gateway.metrics.tracer is None


@pytest.mark.unit
def test_exporter_follows_the_endpoint() -> None:
    assert isinstance(otlp_exporter("http://collector:4318/v1/traces"), HttpExporter)
    assert isinstance(otlp_exporter("http://collector:4317"), GrpcExporter)
    with pytest.raises(ValueError, match="otel_endpoint"):
        otlp_exporter("collector:4317")


@pytest.mark.unit
def test_stages_recorded_together_are_laid_back_to_back() -> None:
    trace = RequestTrace(pipeline="rag")
    # What the rag pipeline does: embed, search and rerank are measured in one call and recorded at once.
    for stage, ms in (("embed", 4.0), ("search", 1.0), ("rerank", 2.0)):
        trace.timings.add(stage, ms)
    trace.timings.add("total", 9.0)  # not a stage span
    ended = {"embed": 100_000_000, "search": 100_000_100, "rerank": 100_000_200}
    trace.timings.ended_ns.update(ended)  # type: ignore[attr-defined]
    windows = stage_windows(trace, started_ns=90_000_000)
    assert [name for name, _, _ in windows] == ["embed", "search", "rerank"]
    assert windows[-1] == ("rerank", 98_000_200, 100_000_200)
    assert windows[1] == ("search", 97_000_200, 98_000_200)
    assert windows[0] == ("embed", 93_000_200, 97_000_200)


@pytest.mark.unit
def test_stages_never_start_before_the_request() -> None:
    trace = RequestTrace(pipeline="prompt")
    trace.timings.add("generate", 50.0)
    trace.timings.ended_ns["generate"] = 1_010_000_000  # type: ignore[attr-defined]
    ((name, start, end),) = stage_windows(trace, started_ns=1_000_000_000)
    assert (name, start, end) == ("generate", 1_000_000_000, 1_010_000_000)
