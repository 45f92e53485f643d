"""The openai backend's HTTP client (aiohttp) against the fixture upstream: answers, streams, and a session
per event loop (a session's pooled connections belong to the loop that opened them)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from benchmarks.harness.fixture_upstream import MODEL_NAME, FixtureBehaviour, running_fixture_upstream
from services.core.errors import GenerationError
from services.core.settings import OpenAIGeneratorSettings
from services.core.types import ChatMessage, GenerationParams, TokenDelta
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
