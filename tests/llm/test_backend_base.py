"""The one streaming template every backend shares: stop strings, finish_reason, counts, slots (fakes)."""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import cast

import pytest

from services.core.errors import InvalidRequest
from services.core.settings import OnnxGeneratorSettings, OpenAIGeneratorSettings
from services.core.types import ChatMessage, GenerationParams, TokenDelta
from services.llm.backend_base import ConfiguredBackend, InProcessBackend, RawCounts, ThreadedRun, TokenLoop
from services.llm.streaming import Emit

pytestmark = pytest.mark.unit

EOS = 0
PROMPT = [ChatMessage("user", "count to five")]


class CountingBackend(InProcessBackend):
    """Emits the given words, one token each, then its end-of-turn token if `ends` (else max_tokens)."""

    def __init__(self, words: Sequence[str], *, ends: bool, max_queue: int = 0) -> None:
        super().__init__(OnnxGeneratorSettings(max_concurrency=1, max_queue=max_queue))
        self.words = list(words)
        self.ends = ends
        self.cancelled = threading.Event()

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def render_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return len(self._checked_prompt_ids(messages, GenerationParams()))

    def _checked_prompt_ids(self, messages: Sequence[ChatMessage], params: GenerationParams) -> list[int]:
        self.check_adapter(params.adapter)
        return [len(m.content) for m in messages] + [7, 7]

    def _generate_blocking(
        self, prompt_ids: list[int], params: GenerationParams, run: ThreadedRun, emit: Emit
    ) -> None:
        for token, word in enumerate(self.words[: params.max_tokens], start=1):
            if run.cancel.wait(0.001):
                self.cancelled.set()
                return
            run.generated_ids.append(token)
            emit(word)
        if self.ends and len(run.generated_ids) < params.max_tokens:
            run.generated_ids.append(EOS)
            run.hit_eos = True


class UpstreamLikeBackend(ConfiguredBackend):
    """A raw loop that reports no counts and says whether the model ended, like an upstream server."""

    def __init__(self, pieces: Sequence[str], *, ended_by_model: bool) -> None:
        super().__init__(OpenAIGeneratorSettings(base_url="http://x"))
        self.pieces = list(pieces)
        self.ended_by_model = ended_by_model

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def render_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return 42

    def _token_loop(self, messages: Sequence[ChatMessage], params: GenerationParams) -> TokenLoop:
        counts = RawCounts()

        async def pieces() -> AsyncGenerator[str, None]:
            for piece in self.pieces:
                yield piece
            counts.ended_by_model = self.ended_by_model

        return TokenLoop(pieces(), lambda: counts)


async def drain(stream: AsyncIterator[TokenDelta]) -> tuple[str, TokenDelta]:
    deltas = [delta async for delta in stream]
    final = deltas[-1]
    assert final.finish_reason is not None and all(d.finish_reason is None for d in deltas[:-1])
    return "".join(d.text for d in deltas), final


async def test_an_answer_the_model_ends_finishes_with_stop_without_counting_the_end_token() -> None:
    backend = CountingBackend(["one", " two", " three"], ends=True)
    text, final = await drain(backend.stream(PROMPT, GenerationParams(max_tokens=10)))
    assert text == "one two three"
    assert (final.finish_reason, final.prompt_tokens, final.completion_tokens) == ("stop", 3, 3)
    assert final.ttft_s is not None and final.busy_s is not None and 0 < final.ttft_s <= final.busy_s


async def test_an_answer_cut_by_max_tokens_finishes_with_length() -> None:
    backend = CountingBackend(["one", " two", " three"], ends=True)
    result = await backend.complete(PROMPT, GenerationParams(max_tokens=2))
    assert (result.text, result.finish_reason, result.completion_tokens) == ("one two", "length", 2)


async def test_a_stop_string_cuts_the_text_stops_the_worker_and_finishes_with_stop() -> None:
    words = ["one", " tw", "o thr", "ee", " four", " five", " six"]
    backend = CountingBackend(words, ends=False)
    text, final = await drain(backend.stream(PROMPT, GenerationParams(max_tokens=7, stop=("two three",))))
    assert text == "one "
    assert final.finish_reason == "stop"
    assert backend.cancelled.is_set()  # the worker saw the cancel instead of running to max_tokens
    assert backend.slots.running == 0


async def test_a_held_back_stop_prefix_is_released_when_generation_ends() -> None:
    backend = CountingBackend(["one", " tw"], ends=True)
    result = await backend.complete(PROMPT, GenerationParams(max_tokens=5, stop=("two three",)))
    assert (result.text, result.finish_reason) == ("one tw", "stop")


async def test_a_consumer_that_leaves_early_frees_the_slot_and_the_worker() -> None:
    backend = CountingBackend([f" w{i}" for i in range(500)], ends=False)
    stream = cast(AsyncGenerator[TokenDelta, None], backend.stream(PROMPT, GenerationParams(max_tokens=500)))
    assert (await anext(stream)).text == " w0"
    assert backend.slots.running == 1
    await stream.aclose()
    assert backend.slots.running == 0 and backend.cancelled.is_set()


async def test_invalid_requests_fail_before_taking_a_slot() -> None:
    backend = CountingBackend(["one"], ends=True)
    with pytest.raises(InvalidRequest, match="unknown adapter"):
        await backend.complete(PROMPT, GenerationParams(adapter="nope"))
    assert backend.slots.running == backend.slots.waiting == 0


@pytest.mark.parametrize(("ended_by_model", "finish"), [(True, "stop"), (False, "length")])
async def test_counts_a_loop_cannot_report_are_estimated(ended_by_model: bool, finish: str) -> None:
    backend = UpstreamLikeBackend(["alpha", " beta", " gamma"], ended_by_model=ended_by_model)
    result = await backend.complete(PROMPT, GenerationParams())
    assert (result.text, result.finish_reason) == ("alpha beta gamma", finish)
    assert (result.prompt_tokens, result.completion_tokens) == (42, 3)
