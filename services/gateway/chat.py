"""Chat completions: validate limits, run the pipeline, shape OpenAI responses (JSON or SSE).

Metrics and the one-line request log are recorded exactly once per request, in `_finish`, whatever
path the request took (answer, refusal, client error, server error, disconnect).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from fastapi.responses import JSONResponse, StreamingResponse

from services.cache.service import CacheReport
from services.core import errors
from services.core.types import ChatMessage, GenerationParams, Role
from services.gateway import responses
from services.gateway.errors import error_body, status_for
from services.gateway.limits import report_usage
from services.gateway.logging_setup import redacted_exchange
from services.gateway.responses import (
    AdapterInfo,
    AssistantMessage,
    BackendInfo,
    CacheInfo,
    ChatCompletionChunk,
    Choice,
    ChunkChoice,
    ChunkDelta,
    ErrorResponse,
    FallbackInfo,
    GroundednessReport,
    HybridExtension,
    PrivacyReport,
    PromptTokensDetails,
    RouteInfo,
    SourceRef,
    TemplateInfo,
    TimeToFirstToken,
    TokenCounts,
    Usage,
)
from services.gateway.schemas import ChatCompletionRequest
from services.gateway.state import GatewayState
from services.llm.structured_output import parse_response_format
from services.pipelines.base import PipelineRequest, RequestTrace
from services.pipelines.runner import Outcome

logger = logging.getLogger("services.gateway.requests")

DEFAULT_MAX_TOKENS = 256

T = TypeVar("T")


def _to_messages(body: ChatCompletionRequest) -> tuple[ChatMessage, ...]:
    messages: list[ChatMessage] = []
    for index, message in enumerate(body.messages):
        if message.role == "user" and message.content is None:
            # OpenAI requires content on user messages; only assistant messages may go without.
            field = f"messages[{index}].content"
            raise errors.InvalidRequest(f"{field}: a user message needs content", param=field)
        # OpenAI's newer `developer` role is the system role of older models.
        role: Role = "system" if message.role == "developer" else message.role
        messages.append(ChatMessage(role=role, content=message.text()))
    if not any(m.role == "user" for m in messages):
        raise errors.InvalidRequest("messages: at least one message must have role 'user'", param="messages")
    return tuple(messages)


def _params(body: ChatCompletionRequest, state: GatewayState) -> GenerationParams:
    limits = state.settings.server
    max_tokens = body.requested_max_tokens() or min(DEFAULT_MAX_TOKENS, limits.max_completion_tokens)
    if max_tokens > limits.max_completion_tokens:
        raise errors.InvalidRequest(
            f"max_tokens: {max_tokens} exceeds the limit of {limits.max_completion_tokens}",
            param="max_tokens",
        )
    parse_response_format(body.response_format)  # a malformed schema is the client's 400, up front
    return GenerationParams(
        max_tokens=max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=body.stop_sequences(),
        response_format=body.response_format,
    )


def _check_limits(messages: tuple[ChatMessage, ...], state: GatewayState) -> None:
    limits = state.settings.server
    if len(messages) > limits.max_messages:
        raise errors.InvalidRequest(
            f"messages: {len(messages)} messages exceed the limit of {limits.max_messages}", param="messages"
        )
    generator = state.require_components().primary
    prompt_tokens = sum(generator.count_tokens(m.content) for m in messages)
    if prompt_tokens > limits.max_prompt_tokens:
        raise errors.InvalidRequest(
            f"messages: {prompt_tokens} prompt tokens exceed the limit of {limits.max_prompt_tokens}",
            param="messages",
        )


def build_extension(trace: RequestTrace, outcome: Outcome | None) -> HybridExtension:
    extension = HybridExtension(
        pipeline=trace.pipeline,
        route=RouteInfo(**trace.route.as_dict()) if trace.route is not None else None,
        sources=[SourceRef(**source) for source in trace.sources],
        timings_ms={k: round(v, 3) for k, v in trace.timings.ms.items()},
        tokens=TokenCounts(
            prompt=outcome.prompt_tokens if outcome else 0,
            completion=outcome.completion_tokens if outcome else 0,
            context=trace.context_tokens,
            cached_prompt=outcome.cached_prompt_tokens if outcome else 0,
        ),
        cost_usd=outcome.cost_usd if outcome else {},
        privacy=PrivacyReport.model_validate(trace.privacy) if trace.privacy is not None else None,
        index_version=trace.index_version,
        template=TemplateInfo(**trace.template.as_dict()) if trace.template else None,
        backend=BackendInfo(name=trace.backend, trust=trace.backend_trust) if trace.backend else None,
    )
    # Optional members are sent only when they apply (set here, so `json_body` includes them).
    if trace.adapter is not None:
        extension.adapter = AdapterInfo(name=trace.adapter, version=trace.adapter_version)
    if trace.fallback is not None:
        extension.fallback = FallbackInfo.model_validate(trace.fallback)
    if trace.degraded is not None:
        extension.degraded = trace.degraded
    if trace.groundedness is not None:
        extension.groundedness = GroundednessReport.model_validate(trace.groundedness)
    if trace.cache is not None:
        extension.cache = cache_info(trace.cache)
    if outcome is not None and outcome.ttft_s is not None:
        model = outcome.model_ttft_s
        model_ms = round(model * 1000.0, 3) if model is not None else None
        extension.ttft_ms = TimeToFirstToken(visible=round(outcome.ttft_s * 1000.0, 3), model=model_ms)
    return extension


def cache_info(report: CacheReport) -> CacheInfo:
    """`hybrid.cache`: the hit kind (null on a miss or bypass), its similarity and age."""
    hit = {"hit_exact": "exact", "hit_semantic": "semantic"}.get(report.result)
    info = CacheInfo(hit=hit)
    if hit is not None:
        info.similarity = round(report.similarity, 4) if report.similarity is not None else 1.0
        info.age_s = round(report.age_s or 0.0, 3)
        info.saved_usd = report.saved_usd
    return info


def _usage(outcome: Outcome) -> Usage:
    return Usage(
        prompt_tokens=outcome.prompt_tokens,
        completion_tokens=outcome.completion_tokens,
        total_tokens=outcome.prompt_tokens + outcome.completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=outcome.cached_prompt_tokens),
    )


class ChatCompletion:
    """One chat-completions request from validation to the last byte."""

    def __init__(self, state: GatewayState, body: ChatCompletionRequest, request_id: str) -> None:
        self._state = state
        self._body = body
        self._request_id = request_id
        self._completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self._created = int(time.time())
        self._started = time.perf_counter()
        self._started_ns = time.time_ns()  # wall clock, for trace spans
        self._pipeline_name = body.model or state.settings.default_pipeline
        # Adapter versions as the request arrived: one that ends after a swap reports the version it ran
        # with, and the response cache keys on them.
        self._trace = RequestTrace(
            pipeline=self._pipeline_name, request_id=request_id, adapter_versions=dict(state.adapter_versions)
        )
        self._finished = False

    def _resolve(self) -> tuple[Any, PipelineRequest]:
        components = self._state.require_components()
        pipeline = components.pipelines.get(self._pipeline_name)
        if pipeline is None:
            valid = ", ".join(sorted(components.pipelines))
            raise errors.UnknownModel(
                f"model {self._pipeline_name!r} does not exist or is not ready; available: {valid}",
                param="model",
            )
        messages = _to_messages(self._body)
        _check_limits(messages, self._state)
        request = PipelineRequest(
            messages=messages, params=_params(self._body, self._state), request_id=self._request_id
        )
        return pipeline, request

    def _finish(self, outcome: Outcome | None, status: str, error: str | None = None) -> None:
        if self._finished:
            return
        self._finished = True
        seconds = time.perf_counter() - self._started
        self._state.metrics.observe_request(self._trace, outcome, status, seconds)
        record: dict[str, Any] = {
            "request_id": self._request_id,
            "pipeline": self._trace.pipeline,
            "route": self._trace.route_label,
            "status": status,
            "stream": self._body.stream,
            "duration_ms": round(seconds * 1000, 2),
            "timings_ms": {k: round(v, 2) for k, v in self._trace.timings.ms.items()},
        }
        if outcome is not None:
            used_tokens = outcome.prompt_tokens + outcome.completion_tokens
            report_usage(used_tokens, outcome.cost_usd.get("total", 0.0))
            record["tokens"] = {
                "prompt": outcome.prompt_tokens,
                "completion": outcome.completion_tokens,
                "cached_prompt": outcome.cached_prompt_tokens,
                "context": self._trace.context_tokens,
            }
            record["cost_usd"] = outcome.cost_usd.get("total", 0.0)
        if self._trace.cache is not None:
            record["cache"] = self._trace.cache.result
        if error is not None:
            record["error"] = error
        tracer = self._state.metrics.tracer
        if tracer is not None:
            try:
                record["trace_id"] = tracer.record(
                    self._trace,
                    outcome,
                    status=status,
                    stream=self._body.stream,
                    started_ns=self._started_ns,
                    ended_ns=self._started_ns + int(seconds * 1e9),
                )
            except Exception:  # tracing is best effort; the answer and its metrics are not
                logger.exception("recording trace spans failed")
        if self._state.settings.observability.log_prompts:
            messages = [(m.role, m.text()) for m in self._body.messages]
            answer = outcome.text if outcome is not None else None
            record.update(redacted_exchange(self._state.settings.privacy, messages, answer))
        logger.info("request", extra={"fields": record})

    def _status_of(self, outcome: Outcome) -> str:
        refused = self._trace.route is not None and self._trace.route.target == "refuse"
        return "refused" if refused else "ok"

    async def _within_deadline(self, step: Awaitable[T]) -> T:
        """Await one step of the request within what is left of server.request_timeout_s (-> 504)."""
        timeout_s = self._state.settings.server.request_timeout_s
        remaining_s = max(0.0, timeout_s - (time.perf_counter() - self._started))
        try:
            async with asyncio.timeout(remaining_s) as deadline:
                return await step
        except TimeoutError as exc:
            if not deadline.expired():
                raise
            raise errors.GenerationTimeout(
                f"request exceeded its deadline of {timeout_s:g} s (server.request_timeout_s)"
            ) from exc

    def _error_status(self, exc: errors.HybridError) -> str:
        status, _ = status_for(exc)
        return "client_error" if status < 500 else "server_error"

    async def respond(self) -> JSONResponse | StreamingResponse:
        self._state.metrics.in_flight.inc()
        try:
            pipeline, request = self._resolve()
            if self._body.stream:
                return await self._stream_response(pipeline, request)
            runner = self._state.require_components().runner
            outcome = await self._within_deadline(runner.complete(pipeline, request, self._trace))
        except errors.HybridError as exc:
            self._finish(None, self._error_status(exc), exc.code)
            self._state.metrics.in_flight.dec()
            raise
        except BaseException:
            self._finish(None, "server_error", "internal_error")
            self._state.metrics.in_flight.dec()
            raise
        self._finish(outcome, self._status_of(outcome))
        self._state.metrics.in_flight.dec()
        return JSONResponse(
            self._completion_body(outcome).json_body(), headers={"x-request-id": self._request_id}
        )

    def _extension(self, outcome: Outcome) -> HybridExtension:
        if self._trace.adapter is not None:
            self._trace.adapter_version = self._trace.adapter_versions.get(self._trace.adapter, "initial")
        return build_extension(self._trace, outcome)

    def _completion_body(self, outcome: Outcome) -> responses.ChatCompletion:
        return responses.ChatCompletion(
            id=self._completion_id,
            object="chat.completion",
            created=self._created,
            model=self._pipeline_name,
            choices=[
                Choice(
                    index=0,
                    message=AssistantMessage(role="assistant", content=outcome.text),
                    finish_reason=outcome.finish_reason,
                    logprobs=None,
                )
            ],
            usage=_usage(outcome),
            hybrid=self._extension(outcome),
        )

    def _chunk(self, delta: ChunkDelta, finish_reason: str | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self._completion_id,
            object="chat.completion.chunk",
            created=self._created,
            model=self._pipeline_name,
            choices=[ChunkChoice(index=0, delta=delta, finish_reason=finish_reason, logprobs=None)],
        )

    async def _stream_response(self, pipeline: Any, request: PipelineRequest) -> StreamingResponse:
        runner = self._state.require_components().runner
        items = runner.stream(pipeline, request, self._trace)
        # Pull the first item before answering 200, so routing, policy and retrieval errors still
        # get their proper status code instead of an error event inside a 200 stream.
        first = await self._within_deadline(items.__anext__())
        return StreamingResponse(
            self._sse(first, items),
            media_type="text/event-stream",
            headers={"x-request-id": self._request_id, "Cache-Control": "no-cache"},
        )

    async def _sse(self, first: str | Outcome, items: AsyncIterator[str | Outcome]) -> AsyncIterator[bytes]:
        include_usage = bool(self._body.stream_options and self._body.stream_options.include_usage)
        outcome: Outcome | None = None
        status = "ok"
        try:
            yield _event(self._chunk(ChunkDelta(role="assistant", content="")))
            pending: list[str | Outcome] = [first]
            while True:
                item = pending.pop() if pending else await self._within_deadline(items.__anext__())
                if isinstance(item, Outcome):
                    outcome = item
                    break
                yield _event(self._chunk(ChunkDelta(content=item)))
            final = self._chunk(ChunkDelta(), finish_reason=outcome.finish_reason)
            extension = self._extension(outcome)
            if include_usage:
                yield _event(final)
                usage_chunk = self._chunk(ChunkDelta())
                usage_chunk.choices = []
                usage_chunk.usage = _usage(outcome)
                usage_chunk.hybrid = extension
                yield _event(usage_chunk)
            else:
                final.hybrid = extension
                yield _event(final)
            yield b"data: [DONE]\n\n"
            status = self._status_of(outcome)
        except errors.HybridError as exc:
            # Mid-stream failure: an explicit error event, never a silent truncation.
            status = self._error_status(exc)
            _, type_ = status_for(exc)
            yield _event(error_body(exc.message, type_=type_, code=exc.code))
            yield b"data: [DONE]\n\n"
        except Exception:
            status = "server_error"
            logger.exception("stream failed")
            yield _event(error_body("internal server error", type_="server_error", code="internal_error"))
            yield b"data: [DONE]\n\n"
        finally:
            if outcome is None and status == "ok":
                status = "client_error"  # the client went away before the end
            await _aclose(items)
            self._finish(outcome, status)
            self._state.metrics.in_flight.dec()


async def _aclose(items: AsyncIterator[Any]) -> None:
    close = getattr(items, "aclose", None)
    if close is not None:
        await close()


def _event(payload: ChatCompletionChunk | ErrorResponse) -> bytes:
    body = payload.json_body()
    return b"data: " + json.dumps(body, separators=(",", ":")).encode("utf-8") + b"\n\n"
