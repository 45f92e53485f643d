"""The openai backend's HTTP client (aiohttp) against the fixture upstream: answers, streams, and a session
per event loop (a session's pooled connections belong to the loop that opened them)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from benchmarks.harness.fixture_upstream import MODEL_NAME, FixtureBehaviour, running_fixture_upstream
from services.core.errors import GenerationError
from services.core.settings import OpenAIGeneratorSettings
from services.core.types import ChatMessage, GenerationParams, GenerationResult, TokenDelta
from services.llm.openai_backend import OpenAICompatibleGenerator

MESSAGES = (ChatMessage(role="user", content="Say something."),)
PARAMS = GenerationParams(max_tokens=8)


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with running_fixture_upstream(FixtureBehaviour(delay_s=0.0, tokens=8)) as url:
        yield url


def backend_for(url: str, **overrides: object) -> OpenAICompatibleGenerator:
    settings = {"backend": "openai", "base_url": f"{url}/v1", "model": MODEL_NAME, **overrides}
    return OpenAICompatibleGenerator(OpenAIGeneratorSettings.model_validate(settings))


def test_one_backend_answers_from_two_event_loops_in_turn(upstream: str) -> None:
    backend = backend_for(upstream)

    async def ask() -> int:
        return (await backend.complete(MESSAGES, PARAMS)).completion_tokens

    assert asyncio.run(ask()) == 8
    assert asyncio.run(ask()) == 8  # the first session belonged to a closed loop: a new one is made

    async def close() -> None:
        await backend.aclose()

    asyncio.run(close())


def test_a_stream_arrives_piece_by_piece_with_the_upstreams_counts(upstream: str) -> None:
    backend = backend_for(upstream)

    async def stream() -> list[TokenDelta]:
        try:
            return [delta async for delta in backend.stream(MESSAGES, PARAMS)]
        finally:
            await backend.aclose()

    deltas = asyncio.run(stream())
    assert len(deltas) >= 3 and "".join(delta.text for delta in deltas).strip()
    final = deltas[-1]
    assert final.finish_reason is not None and final.completion_tokens == 8


def test_an_unreachable_upstream_is_a_generation_error_naming_it() -> None:
    backend = backend_for("http://127.0.0.1:9", max_retries=0)

    async def ask() -> None:
        try:
            await backend.complete(MESSAGES, PARAMS)
        finally:
            await backend.aclose()

    with pytest.raises(GenerationError, match="cannot reach upstream at http://127.0.0.1:9"):
        asyncio.run(ask())


# As vLLM (with prefix caching) and OpenAI report it: of the prompt's tokens, those served from a cache.
CACHED_USAGE = {
    "prompt_tokens": 40, "completion_tokens": 2, "total_tokens": 42,
    "prompt_tokens_details": {"cached_tokens": 32},
}  # fmt: skip
USAGE = web.AppKey("usage", dict[str, Any])


async def _answer_with_usage(request: web.Request) -> web.StreamResponse:
    """A two-word answer whose usage is whatever `request.app[USAGE]` holds, whole or streamed."""
    body: dict[str, Any] = await request.json()
    usage = request.app[USAGE]
    base = {"id": "c", "created": 0, "model": MODEL_NAME}
    if not body.get("stream"):
        message = {"role": "assistant", "content": "two words"}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        return web.json_response({**base, "object": "chat.completion", "choices": [choice], "usage": usage})
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    chunk = {**base, "object": "chat.completion.chunk"}
    events = [
        {**chunk, "choices": [{"index": 0, "delta": {"content": "two words"}, "finish_reason": None}]},
        {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {**chunk, "choices": [], "usage": usage},
    ]
    for event in events:
        await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")
    await response.write(b"data: [DONE]\n\n")
    return response


@pytest.fixture
async def usage_upstream() -> AsyncIterator[tuple[web.Application, str]]:
    app = web.Application()
    app[USAGE] = CACHED_USAGE
    app.router.add_post("/v1/chat/completions", _answer_with_usage)
    async with TestServer(app, host="127.0.0.1") as server:
        yield app, str(server.make_url("")).rstrip("/")


async def _whole_and_streamed(url: str) -> tuple[GenerationResult, TokenDelta]:
    """One answer asked for whole, then one streamed: the result and the stream's final delta."""
    backend = backend_for(url)
    try:
        whole = await backend.complete(MESSAGES, PARAMS)
        final = [delta async for delta in backend.stream(MESSAGES, PARAMS)][-1]
    finally:
        await backend.aclose()
    return whole, final


async def test_the_upstreams_cached_prompt_tokens_pass_through(
    usage_upstream: tuple[web.Application, str],
) -> None:
    _, url = usage_upstream
    whole, final = await _whole_and_streamed(url)
    assert (whole.prompt_tokens, whole.cached_prompt_tokens) == (40, 32)
    assert (final.prompt_tokens, final.cached_prompt_tokens) == (40, 32)


async def test_an_upstream_without_prompt_tokens_details_reports_none_cached(
    usage_upstream: tuple[web.Application, str],
) -> None:
    app, url = usage_upstream
    app[USAGE] = {key: value for key, value in CACHED_USAGE.items() if key != "prompt_tokens_details"}
    whole, final = await _whole_and_streamed(url)
    assert whole.cached_prompt_tokens == 0  # GenerationResult counts it as 0
    assert final.cached_prompt_tokens is None  # a stream says "not reported"; the runner counts 0
