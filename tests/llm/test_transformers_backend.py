"""The transformers backend on the real SmolLM2: streaming, stops, counts, limits, concurrency."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from services.core.errors import InvalidRequest, Overloaded
from services.core.settings import load_settings
from services.core.types import ChatMessage, GenerationParams
from services.llm.transformers_backend import TransformersGenerator
from tests.conftest import MODEL_CACHE

pytestmark = pytest.mark.integration

MESSAGES = (ChatMessage("user", "List three fruits."),)


@pytest.fixture(scope="module")
def generator() -> Iterator[TransformersGenerator]:
    settings = load_settings(generator={"backend": "transformers", "max_concurrency": 2, "max_queue": 0})
    gen = TransformersGenerator(settings.generator, MODEL_CACHE)
    gen.warm_up()
    yield gen


async def _stream_text(gen: TransformersGenerator, params: GenerationParams) -> tuple[str, object]:
    parts: list[str] = []
    last = None
    async for delta in gen.stream(MESSAGES, params):
        parts.append(delta.text)
        last = delta
    return "".join(parts), last


async def test_complete_equals_stream_and_counts_are_exact(generator: TransformersGenerator) -> None:
    params = GenerationParams(max_tokens=24)
    result = await generator.complete(MESSAGES, params)
    text, last = await _stream_text(generator, params)
    assert text == result.text and text.strip()
    assert result.prompt_tokens == generator.render_prompt_tokens(MESSAGES)
    # Re-tokenising the decoded answer gives the generated count (minus a trailing end-of-turn token).
    assert abs(generator.count_tokens(result.text) - result.completion_tokens) <= 1
    assert last.finish_reason == result.finish_reason  # type: ignore[attr-defined]


async def test_max_tokens_and_stop(generator: TransformersGenerator) -> None:
    short = await generator.complete(MESSAGES, GenerationParams(max_tokens=3))
    assert short.finish_reason == "length" and short.completion_tokens == 3
    free = await generator.complete(MESSAGES, GenerationParams(max_tokens=24))
    stop = free.text.split()[1]
    cut = await generator.complete(MESSAGES, GenerationParams(max_tokens=24, stop=(stop,)))
    assert cut.finish_reason == "stop"
    assert cut.text == free.text[: free.text.index(stop)]


async def test_seeded_sampling_is_reproducible(generator: TransformersGenerator) -> None:
    params = GenerationParams(max_tokens=16, temperature=1.0, top_p=0.95, seed=7)
    first = await generator.complete(MESSAGES, params)
    second = await generator.complete(MESSAGES, params)
    assert first.text == second.text


async def test_concurrency_is_bounded_and_queue_overflow_is_overloaded(
    generator: TransformersGenerator,
) -> None:
    params = GenerationParams(max_tokens=12)
    results = await asyncio.gather(
        generator.complete(MESSAGES, params),
        generator.complete(MESSAGES, params),
        generator.complete(MESSAGES, params),
        return_exceptions=True,
    )
    ok = [r for r in results if not isinstance(r, BaseException)]
    rejected = [r for r in results if isinstance(r, Overloaded)]
    assert len(ok) == 2 and len(rejected) == 1  # two slots, no queue
    assert ok[0].text == ok[1].text  # type: ignore[union-attr]


async def test_unknown_adapter_is_rejected(generator: TransformersGenerator) -> None:
    with pytest.raises(InvalidRequest, match="unknown adapter"):
        await generator.complete(MESSAGES, GenerationParams(adapter="nope"))


async def test_cancelling_a_stream_frees_the_slot(generator: TransformersGenerator) -> None:
    stream = generator.stream(MESSAGES, GenerationParams(max_tokens=200))
    async for _ in stream:
        break
    await stream.aclose()  # type: ignore[attr-defined]
    assert generator.slots.running == 0
