"""What every generator backend shares: identity, concurrency slots, and the one streaming template.

A backend supplies only its raw token loop (`_token_loop`): text pieces as the model produces them, and
the counts it knows once they are drained. `stream()` does the bookkeeping once for all backends: the
slot, time to first token, stop strings, and the final delta with one finish_reason rule ("stop" when the
model ended or a stop string did, "length" when max_tokens did).
"""

from __future__ import annotations

import abc
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from services.core.errors import InvalidRequest
from services.core.settings import BaseGeneratorSettings
from services.core.types import (
    ChatMessage,
    FinishReason,
    GenerationParams,
    GenerationResult,
    TokenDelta,
    Trust,
)
from services.llm.slots import GenerationSlots
from services.llm.stop_strings import StopStringMatcher
from services.llm.streaming import Emit, collect_stream, run_producer_in_thread


@dataclass
class RawCounts:
    """What a token loop reports for the final delta; None where it cannot tell (then it is estimated)."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ended_by_model: bool = False  # the model's end-of-turn (or an upstream's "stop"), not max_tokens
    cached_prompt_tokens: int | None = None  # prompt tokens served from a KV cache instead of prefilled


@dataclass(frozen=True)
class TokenLoop:
    """One request's raw generation. `pieces` is not started yet: it runs inside the request's slot."""

    pieces: AsyncGenerator[str, None]
    counts: Callable[[], RawCounts]  # read once `pieces` is drained or closed


def finish_reason(*, ended_by_model: bool, stopped_by_string: bool) -> FinishReason:
    return "stop" if ended_by_model or stopped_by_string else "length"


class ConfiguredBackend(abc.ABC):
    def __init__(self, settings: BaseGeneratorSettings) -> None:
        self._settings = settings
        self._slots = GenerationSlots(settings.max_concurrency, settings.max_queue)

    @property
    def name(self) -> str:
        """The configured backend name (bounded: a metric label)."""
        return self._settings.name

    @property
    def trust(self) -> Trust:
        return self._settings.trust

    @property
    def adapters(self) -> Sequence[str]:
        return tuple(self._settings.adapters)

    @property
    def slots(self) -> GenerationSlots:
        return self._slots

    @property
    def supports_response_format(self) -> bool:
        """True when decoding itself honours `response_format`, so no validate-and-repair is needed."""
        return False

    def check_adapter(self, adapter: str | None) -> None:
        """An adapter name a request asks for must be one this backend was configured with."""
        if adapter is not None and adapter not in self._settings.adapters:
            raise InvalidRequest(
                f"unknown adapter {adapter!r}; known: {sorted(self._settings.adapters)}", param="model"
            )

    @abc.abstractmethod
    def count_tokens(self, text: str) -> int: ...

    @abc.abstractmethod
    def render_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int: ...

    @abc.abstractmethod
    def _token_loop(self, messages: Sequence[ChatMessage], params: GenerationParams) -> TokenLoop:
        """Check the request and set up its raw loop; invalid requests raise here, before a slot is taken."""

    async def complete(self, messages: Sequence[ChatMessage], params: GenerationParams) -> GenerationResult:
        return await collect_stream(self.stream(messages, params), backend=self.name)

    async def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[TokenDelta]:
        loop = self._token_loop(messages, params)
        async with self._slots.acquire():
            started = time.perf_counter()
            matcher = StopStringMatcher(params.stop)
            ttft: float | None = None
            stopped_by_string = False
            emitted: list[str] = []
            try:
                async for piece in loop.pieces:
                    if ttft is None:
                        ttft = time.perf_counter() - started
                    text, stopped_by_string = matcher.feed(piece)
                    if text:
                        emitted.append(text)
                        yield TokenDelta(text=text)
                    if stopped_by_string:
                        break
            finally:
                # Closing an in-process loop waits for its worker, so the slot is freed only when idle.
                await loop.pieces.aclose()
            tail = matcher.flush()
            if tail:
                emitted.append(tail)
                yield TokenDelta(text=tail)
            counts = loop.counts()
            busy = time.perf_counter() - started
            yield TokenDelta(
                text="",
                finish_reason=finish_reason(
                    ended_by_model=counts.ended_by_model, stopped_by_string=stopped_by_string
                ),
                prompt_tokens=counts.prompt_tokens
                if counts.prompt_tokens is not None
                else self.render_prompt_tokens(messages),
                completion_tokens=counts.completion_tokens
                if counts.completion_tokens is not None
                else self.count_tokens("".join(emitted)),
                cached_prompt_tokens=counts.cached_prompt_tokens,
                ttft_s=ttft if ttft is not None else busy,
                busy_s=busy,
            )


@dataclass
class ThreadedRun:
    """Shared between one request's generation thread and the template that consumes it."""

    cancel: threading.Event = field(default_factory=threading.Event)
    generated_ids: list[int] = field(default_factory=list)
    hit_eos: bool = False
    cached_tokens: int = 0  # prompt tokens whose KV a reused generator already held (not prefilled again)

    @property
    def completion_tokens(self) -> int:
        # The end-of-turn token is not part of the answer.
        return len(self.generated_ids) - (1 if self.hit_eos else 0)

    def counts(self, prompt_tokens: int) -> RawCounts:
        return RawCounts(
            prompt_tokens,
            self.completion_tokens,
            ended_by_model=self.hit_eos,
            cached_prompt_tokens=self.cached_tokens,
        )


class InProcessBackend(ConfiguredBackend):
    """A backend whose model runs in this process: its blocking token loop runs in a worker thread."""

    @abc.abstractmethod
    def _checked_prompt_ids(self, messages: Sequence[ChatMessage], params: GenerationParams) -> list[int]:
        """Validate the request for this model and return the prompt's token ids."""

    @abc.abstractmethod
    def _generate_blocking(
        self, prompt_ids: list[int], params: GenerationParams, run: ThreadedRun, emit: Emit
    ) -> None:
        """Generate until done or `run.cancel`, emitting text; record token ids and EOS in `run`."""

    def _token_loop(self, messages: Sequence[ChatMessage], params: GenerationParams) -> TokenLoop:
        prompt_ids = self._checked_prompt_ids(messages, params)
        run = ThreadedRun()
        pieces = run_producer_in_thread(
            lambda emit: self._generate_blocking(prompt_ids, params, run, emit), cancel=run.cancel
        )
        return TokenLoop(
            pieces,
            lambda: run.counts(len(prompt_ids)),
        )
