"""Batched generation in the ONNX backend with the real SmolLM2 (cohort and engine schedulers): same greedy
text as unbatched, own cancellation, bounded queue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import cast

import pytest

from services.core.errors import Overloaded
from services.core.settings import OnnxGeneratorSettings
from services.core.types import ChatMessage, GenerationParams, TokenDelta
from services.llm.onnx_backend import OnnxGenerator
from tests.llm.test_onnx_backend import loaded, onnx_data_dir, smollm2_onnx_dir, smollm2_settings

pytestmark = pytest.mark.integration
__all__ = ["onnx_data_dir", "smollm2_onnx_dir", "smollm2_settings"]  # session fixtures shared with that file

# Prompts of clearly different token lengths, so a batch mixes them.
PROMPTS = [
    [ChatMessage("user", "Name a colour.")],
    [ChatMessage("user", "Name three colours of the rainbow and say one sentence about each.")],
    [ChatMessage("user", "Why is the sky blue? Explain it to a curious ten year old in a few sentences.")],
    [
        ChatMessage("system", "You are a careful assistant who answers in plain English."),
        ChatMessage("user", "Write two sentences about the sea."),
    ],
]
GREEDY = GenerationParams(max_tokens=24)


def with_batch(settings: OnnxGeneratorSettings, batch_size: int, **extra: object) -> OnnxGeneratorSettings:
    return settings.model_copy(update={"max_concurrency": batch_size, **extra})


@pytest.fixture(scope="module")
def unbatched_references(
    smollm2_settings: OnnxGeneratorSettings, onnx_data_dir: Path, smollm2_onnx_dir: Path
) -> list[str]:
    """Each prompt alone through today's path (one og.Generator per request, max_concurrency 1)."""
    single = loaded(with_batch(smollm2_settings, 1), onnx_data_dir, smollm2_onnx_dir)

    async def run_all() -> list[str]:
        return [(await single.complete(prompt, GREEDY)).text for prompt in PROMPTS]

    return asyncio.run(run_all())


@pytest.fixture(params=["cohort", "engine"])
async def batched(
    request: pytest.FixtureRequest,
    smollm2_settings: OnnxGeneratorSettings,
    onnx_data_dir: Path,
    smollm2_onnx_dir: Path,
) -> AsyncGenerator[OnnxGenerator, None]:
    """A backend batching up to 4 requests, with each batch scheduler."""
    settings = with_batch(smollm2_settings, 4, batch_window_ms=20, batch_scheduler=request.param)
    generator = loaded(settings, onnx_data_dir, smollm2_onnx_dir)
    yield generator
    await generator.aclose()


async def test_batched_greedy_equals_unbatched_for_prompts_of_different_lengths(
    batched: OnnxGenerator, unbatched_references: list[str]
) -> None:
    lengths = {batched.render_prompt_tokens(prompt) for prompt in PROMPTS}
    assert len(lengths) == len(PROMPTS)
    results = await asyncio.gather(*(batched.complete(prompt, GREEDY) for prompt in PROMPTS))
    assert [r.text for r in results] == unbatched_references
    assert batched.batch_scheduler is not None
    # They really shared decode steps, prompts of different lengths in one batch. How many joined the first
    # batch depends on when each took its place (a GC pause on the event loop can split them), not on them.
    assert batched.batch_scheduler.peak_batch_size >= 2
    assert all(r.completion_tokens <= GREEDY.max_tokens for r in results)
    assert batched.slots.running == 0


async def test_cancelling_one_request_frees_its_place_and_leaves_the_others_intact(
    batched: OnnxGenerator, unbatched_references: list[str]
) -> None:
    doomed = cast(
        AsyncGenerator[TokenDelta, None], batched.stream(PROMPTS[0], GenerationParams(max_tokens=200))
    )
    others = [asyncio.ensure_future(batched.complete(prompt, GREEDY)) for prompt in PROMPTS[1:]]
    first = await anext(doomed)  # the batch is running
    assert first.text
    assert batched.slots.running == len(PROMPTS)
    await doomed.aclose()  # what the gateway does when the client disconnects
    assert batched.slots.running == len(PROMPTS) - 1  # its place is free before the others finish
    assert not any(task.done() for task in others)
    assert [(await task).text for task in others] == unbatched_references[1:]
    assert batched.slots.running == 0


async def test_a_request_arriving_while_a_batch_runs_is_served(
    batched: OnnxGenerator, unbatched_references: list[str]
) -> None:
    running = cast(
        AsyncGenerator[TokenDelta, None], batched.stream(PROMPTS[1], GenerationParams(max_tokens=40))
    )
    assert (await anext(running)).text
    late = await batched.complete(PROMPTS[2], GREEDY)
    assert late.text == unbatched_references[2]
    async for _ in running:  # the running one still completes normally
        pass
    assert batched.slots.running == 0


async def test_beyond_the_batch_and_the_queue_requests_are_refused(
    smollm2_settings: OnnxGeneratorSettings, onnx_data_dir: Path, smollm2_onnx_dir: Path
) -> None:
    generator = loaded(with_batch(smollm2_settings, 2, max_queue=1), onnx_data_dir, smollm2_onnx_dir)
    busy = [
        cast(AsyncGenerator[TokenDelta, None], generator.stream(prompt, GenerationParams(max_tokens=100)))
        for prompt in PROMPTS[:2]
    ]
    for stream in busy:
        await anext(stream)
    queued = asyncio.ensure_future(generator.complete(PROMPTS[2], GREEDY))
    await asyncio.sleep(0.05)
    assert generator.slots.waiting == 1
    with pytest.raises(Overloaded) as refused:
        await generator.complete(PROMPTS[3], GREEDY)
    assert refused.value.retry_after_s > 0
    for stream in busy:
        await stream.aclose()
    assert (await queued).text  # the queued one is served once a place is free
    await generator.aclose()


async def test_requests_the_engine_cannot_take_run_unbatched_beside_it(batched: OnnxGenerator) -> None:
    params = GenerationParams(max_tokens=12, temperature=1.0, seed=7)
    seeded, batched_greedy = await asyncio.gather(
        batched.complete(PROMPTS[1], params), batched.complete(PROMPTS[0], GREEDY)
    )
    again = await batched.complete(PROMPTS[1], params)
    assert seeded.text == again.text  # a seed keeps its meaning: it runs on its own og.Generator
    assert batched_greedy.text


async def test_a_prompt_holding_the_cohort_pad_token_runs_unbatched_with_its_own_text(
    smollm2_settings: OnnxGeneratorSettings, onnx_data_dir: Path, smollm2_onnx_dir: Path
) -> None:
    cohort = loaded(
        with_batch(smollm2_settings, 4, batch_scheduler="cohort"), onnx_data_dir, smollm2_onnx_dir
    )
    assert cohort.batch_pad_id == 0  # SmolLM2's pad id (<|im_end|>) and BOS are in every chat prompt
    prompt = [ChatMessage("user", "Repeat this marker: <|endoftext|>")]
    assert cohort.batch_pad_id in cohort.prompt_ids(prompt)
    single = loaded(with_batch(smollm2_settings, 1), onnx_data_dir, smollm2_onnx_dir)
    assert (await cohort.complete(prompt, GREEDY)).text == (await single.complete(prompt, GREEDY)).text
    assert cohort.batch_scheduler is not None and cohort.batch_scheduler.peak_batch_size == 0
    await cohort.aclose()
