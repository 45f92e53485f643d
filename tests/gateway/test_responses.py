"""Typed response bodies write exactly the JSON the service sent as plain dicts: same keys, same order,
optional members left out until they apply, unset values as null."""

from __future__ import annotations

import json

import pytest

from services.core.types import RouteDecision
from services.gateway.chat import build_extension
from services.gateway.errors import error_body
from services.gateway.responses import (
    ChatCompletionChunk,
    ChunkChoice,
    ChunkDelta,
    PromptTokensDetails,
    Usage,
)
from services.llm.prompts import TemplateRef
from services.pipelines.base import RequestTrace
from services.pipelines.runner import Outcome

pytestmark = pytest.mark.unit


def _outcome() -> Outcome:
    return Outcome(
        text="Hi.",
        prompt_tokens=7,
        completion_tokens=2,
        cached_prompt_tokens=3,
        cost_usd={"generate": 1e-05, "total": 1e-05},
    )


def test_extension_of_a_plain_answer_has_the_fixed_members_only() -> None:
    trace = RequestTrace(pipeline="prompt")
    trace.timings.add("generate", 12.34567)
    trace.template = TemplateRef(name="direct", version="1")
    trace.backend, trace.backend_trust = "local", "internal"
    body = build_extension(trace, _outcome()).json_body()
    assert list(body) == [
        "pipeline", "route", "sources", "timings_ms", "tokens", "cost_usd", "privacy", "index_version",
        "template", "backend",
    ]  # fmt: skip
    assert body["route"] is None and body["privacy"] is None and body["index_version"] is None
    assert body["timings_ms"] == {"generate": 12.346}
    assert body["tokens"] == {"prompt": 7, "completion": 2, "context": 0, "cached_prompt": 3}
    assert body["template"] == {"name": "direct", "version": "1"}
    assert body["backend"] == {"name": "local", "trust": "internal"}
    # The stdlib encoder writes the values as it did from plain dicts.
    assert json.dumps(body["cost_usd"]) == '{"generate": 1e-05, "total": 1e-05}'


def test_extension_adds_optional_members_when_they_apply() -> None:
    trace = RequestTrace(pipeline="hybrid")
    trace.route = RouteDecision(
        intent="knowledge", confidence=0.912345, scores={"knowledge": 0.912345}, target="rag"
    )
    trace.sources = [{"source": "benefits/vacation.md", "chunk_id": "abc", "score": 0.8123}]
    trace.adapter, trace.adapter_version = "tuned", "v2"
    trace.fallback = {"from": "local", "to": "fallback"}
    trace.degraded = "retrieval_unavailable"
    trace.privacy = {
        "findings": ["email"], "action": "redact", "backend_trust": "internal", "classification": "internal",
        "injection": [],
    }  # fmt: skip
    trace.groundedness = {
        "score": 0.9,
        "unsupported": [],
        "abstained": False,
        "threshold": 0.5,
        "action": "pass",
    }
    body = build_extension(trace, None).json_body()
    assert list(body)[-4:] == ["adapter", "fallback", "degraded", "groundedness"]
    assert body["route"] == {
        "intent": "knowledge",
        "confidence": 0.9123,
        "scores": {"knowledge": 0.9123},
        "target": "rag",
    }
    assert body["sources"] == trace.sources
    assert body["privacy"] == trace.privacy and list(body["privacy"]) == list(trace.privacy)
    assert body["groundedness"] == trace.groundedness and list(body["groundedness"]) == list(
        trace.groundedness
    )
    assert body["adapter"] == {"name": "tuned", "version": "v2"}
    assert body["fallback"] == {"from": "local", "to": "fallback"}
    assert body["tokens"] == {"prompt": 0, "completion": 0, "context": 0, "cached_prompt": 0}
    assert body["cost_usd"] == {}


def test_the_privacy_report_carries_what_the_gate_did_to_retrieved_context() -> None:
    trace = RequestTrace(pipeline="rag")
    trace.privacy = {
        "findings": ["email", "iban"], "action": "redact", "backend_trust": "internal",
        "classification": "confidential", "injection": [],
        "context_action": "redact", "context_injection": [(2, ("ignore_previous",))],
    }  # fmt: skip
    body = json.loads(json.dumps(build_extension(trace, None).json_body()))
    assert body["privacy"]["context_action"] == "redact"
    assert body["privacy"]["context_injection"] == [[2, ["ignore_previous"]]]


def test_time_to_first_token_is_reported_as_the_client_saw_it_and_as_the_model_produced_it() -> None:
    generated = Outcome(text="Hi.", ttft_s=0.1234, model_ttft_s=0.0805, generated=True)
    body = build_extension(RequestTrace(pipeline="prompt"), generated).json_body()
    assert body["ttft_ms"] == {"visible": 123.4, "model": 80.5}
    # A fixed answer (a refusal) reaches the client without a model.
    refused = build_extension(RequestTrace(pipeline="hybrid"), Outcome(text="No.", ttft_s=0.002)).json_body()
    assert refused["ttft_ms"] == {"visible": 2.0, "model": None}


def test_chunks_leave_out_what_a_chunk_does_not_carry() -> None:
    def chunk(delta: ChunkDelta, finish_reason: str | None = None) -> ChatCompletionChunk:
        choice = ChunkChoice(index=0, delta=delta, finish_reason=finish_reason, logprobs=None)
        return ChatCompletionChunk(
            id="c", object="chat.completion.chunk", created=1, model="m", choices=[choice]
        )

    first = chunk(ChunkDelta(role="assistant", content="")).json_body()
    assert first == {
        "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None,
                     "logprobs": None}],
    }  # fmt: skip
    assert chunk(ChunkDelta(content="Hi")).json_body()["choices"][0]["delta"] == {"content": "Hi"}
    usage_chunk = chunk(ChunkDelta())
    usage_chunk.choices = []
    details = PromptTokensDetails(cached_tokens=1)
    usage_chunk.usage = Usage(
        prompt_tokens=1, completion_tokens=2, total_tokens=3, prompt_tokens_details=details
    )
    body = usage_chunk.json_body()
    assert list(body) == ["id", "object", "created", "model", "choices", "usage"]
    assert body["choices"] == []
    assert body["usage"] == {
        "prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3,
        "prompt_tokens_details": {"cached_tokens": 1},
    }  # fmt: skip


def test_error_body_is_the_openai_error_object() -> None:
    body = error_body(
        "bad", type_="invalid_request_error", code="invalid_request", param="messages"
    ).json_body()
    assert body == {
        "error": {
            "message": "bad",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "invalid_request",
        }
    }
