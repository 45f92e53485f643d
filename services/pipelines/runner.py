"""Runs a pipeline's plan: generation (streamed internally), backend fallback, output filtering, cost.

Non-streaming requests drain the same stream, so both modes share timing, fallback and filtering.
A fallback happens only before the first token: once text has left, switching backends would splice
two different answers together, so a mid-stream failure is reported as an error instead.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from services.cache.entry import CachedAnswer
from services.cache.service import CacheReport, Lookup, ResponseCache
from services.core.cost import CostLedger
from services.core.errors import GenerationError
from services.core.protocols import Generator, enforces_response_format
from services.core.types import FinishReason, GenerationResult, TokenDelta
from services.llm.circuit import CircuitOpen
from services.llm.structured_output import complete_with_response_format
from services.pipelines.base import Pipeline, PipelineRequest, Plan, RequestTrace
from services.pipelines.cache_policy import bypass_reason, not_cacheable, request_key, restore_trace

logger = logging.getLogger(__name__)


class OutputFilter(Protocol):
    def feed(self, text: str) -> str: ...
    def flush(self) -> str: ...


class RequestGuard(Protocol):
    """The privacy gate as the runner sees it (services.privacy adapts to this)."""

    def before_plan(
        self, request: PipelineRequest, trace: RequestTrace, generator: Generator
    ) -> PipelineRequest:
        """Inspect (and redact) the request; raise PolicyViolation to block."""
        ...

    def choose_generator(self, trace: RequestTrace, planned: Generator) -> Generator: ...

    def output_filter(self, trace: RequestTrace, generator: Generator | None) -> OutputFilter: ...


@dataclass(slots=True)
class Outcome:
    text: str = ""
    finish_reason: FinishReason = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0  # of prompt_tokens, those the backend's KV cache held (not prefilled)
    # First answer text the client sees, from the request's start; the model's own first token, from the
    # start of its generation (the engine's TTFT: after any queue wait, before any output filter).
    ttft_s: float | None = None
    model_ttft_s: float | None = None
    busy_s: float = 0.0
    generated: bool = False
    cost_usd: dict[str, float] = field(default_factory=dict)
    # The privacy output filter changed the answer (redacted a value or restored a placeholder).
    output_altered: bool = False


FallbackHook = Callable[[str, str], None]


class PipelineRunner:
    def __init__(
        self,
        ledger: CostLedger,
        *,
        primary: Generator,
        fallback: Generator | None = None,
        guard: RequestGuard | None = None,
        on_fallback: FallbackHook | None = None,
        cache: ResponseCache | None = None,
    ) -> None:
        self._cache = cache
        self._ledger = ledger
        self._primary = primary
        self._fallback = fallback
        self._guard = guard
        self._on_fallback = on_fallback

    async def complete(self, pipeline: Pipeline, request: PipelineRequest, trace: RequestTrace) -> Outcome:
        outcome = Outcome()
        async for item in self.stream(pipeline, request, trace, incremental=False):
            if isinstance(item, Outcome):
                outcome = item
        return outcome

    async def stream(
        self,
        pipeline: Pipeline,
        request: PipelineRequest,
        trace: RequestTrace,
        *,
        incremental: bool = True,
    ) -> AsyncIterator[str | Outcome]:
        """Yield answer text as it is produced, then one final `Outcome`.

        `incremental=False` (non-streaming requests) asks the backend for the whole answer at once: for an
        HTTP upstream that is one response instead of parsing a chunk per token.
        """
        started = time.perf_counter()
        if self._guard is not None:
            with trace.stage("privacy"):
                request = self._guard.before_plan(request, trace, self._primary)
        plan = await pipeline.plan(request, trace)
        outcome = Outcome()
        if plan.fixed_answer is not None:
            out_filter = self._guard.output_filter(trace, None) if self._guard else None
            text = plan.fixed_answer
            if out_filter is not None:
                text = out_filter.feed(text) + out_filter.flush()
            outcome.text = text
            outcome.ttft_s = time.perf_counter() - started
            if self._cache is not None:
                trace.cache = CacheReport("bypass", reason="fixed_answer")  # no generation to save
            yield text
        else:
            lookup = await self._cache_lookup(plan, request, trace)
            if lookup is not None and lookup.answer is not None:
                for piece in _replay(lookup.answer, outcome, started, incremental):
                    yield piece
                self._price_saved(lookup.answer, trace)
            else:
                async for piece in self._generate(plan, trace, outcome, started, incremental):
                    yield piece
                if lookup is not None:
                    await self._cache_store(lookup, trace, outcome)
        outcome.cost_usd = self._ledger.request_costs(
            trace.timings.ms,
            backend=trace.backend if outcome.generated else None,
            busy_s=outcome.busy_s,
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
        )
        trace.timings.add("total", (time.perf_counter() - started) * 1000.0)
        yield outcome

    async def _cache_lookup(self, plan: Plan, request: PipelineRequest, trace: RequestTrace) -> Lookup | None:
        """The cache's answer for this request, or the lookup to store the new answer under; None when the
        cache is off or the request may not use it (trace.cache says why)."""
        cache = self._cache
        if cache is None:
            return None
        reason = cache.bypass_reason(plan.params) or bypass_reason(trace)
        if reason is not None:
            trace.cache = CacheReport("bypass", reason=reason)
            return None
        started = time.perf_counter()
        lookup = await cache.lookup(request_key(cache.deployment, trace, plan.params, request.messages))
        lookup_s = time.perf_counter() - started
        trace.timings.add("cache", lookup_s * 1000.0)
        trace.cache = CacheReport(lookup.hit, similarity=lookup.similarity, lookup_s=lookup_s)
        if lookup.answer is not None:
            trace.cache.age_s = cache.age_s(lookup.answer)
            restore_trace(lookup.answer, trace)
        return lookup

    async def _cache_store(self, lookup: Lookup, trace: RequestTrace, outcome: Outcome) -> None:
        """Store a complete, clean answer; trace.cache.reason says why one was not stored."""
        assert self._cache is not None and trace.cache is not None
        complete = outcome.generated and bool(outcome.text)
        reason = not_cacheable(trace, outcome.finish_reason, complete, outcome.output_altered)
        if reason is None:
            answer = CachedAnswer(
                text=outcome.text,
                finish_reason=outcome.finish_reason,
                prompt_tokens=outcome.prompt_tokens,
                completion_tokens=outcome.completion_tokens,
                backend=trace.backend or "",
                busy_s=outcome.busy_s,
                created_at=time.time(),
                sources=[dict(source) for source in trace.sources],
                groundedness=dict(trace.groundedness) if trace.groundedness is not None else None,
            )
            if not await self._cache.store(lookup, answer):
                reason = "store_failed"
        trace.cache.reason = reason

    def _price_saved(self, answer: CachedAnswer, trace: RequestTrace) -> None:
        """A hit saved the generation it replays: priced on today's price card from its recorded use."""
        assert trace.cache is not None
        trace.cache.saved_usd = self._ledger.generation_usd(
            answer.backend,
            busy_s=answer.busy_s,
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
        )

    async def _generate(
        self, plan: Plan, trace: RequestTrace, outcome: Outcome, started: float, incremental: bool
    ) -> AsyncIterator[str]:
        assert plan.generator is not None
        generator = plan.generator
        if self._guard is not None:
            generator = self._guard.choose_generator(trace, generator)
        out_filter = self._guard.output_filter(trace, generator) if self._guard else None
        generate_started = time.perf_counter()
        parts: list[str] = []
        check = plan.answer_check if plan.params.response_format is None else None
        # An answer the check may replace cannot leave before it is checked: hold it back, send it whole.
        hold_back = check is not None and check.may_replace
        raw: list[str] = []
        fed: list[str] = []  # what went into the output filter, to tell whether it changed the answer
        try:
            if plan.params.response_format is not None and not enforces_response_format(generator):
                stream = self._structured(generator, plan, trace)
            elif incremental:
                stream = self._stream_with_fallback(generator, plan, trace)
            else:
                stream = self._complete_with_fallback(generator, plan, trace)
            async for delta in stream:
                if delta.finish_reason is not None:
                    outcome.finish_reason = delta.finish_reason
                    outcome.prompt_tokens = delta.prompt_tokens or 0
                    outcome.cached_prompt_tokens = delta.cached_prompt_tokens or 0
                    outcome.completion_tokens = delta.completion_tokens or 0
                    outcome.busy_s = delta.busy_s or 0.0
                    outcome.model_ttft_s = delta.ttft_s
                    outcome.generated = True
                    if not incremental and delta.ttft_s is not None:
                        # One-piece answers arrive at the end; the backend measured when its first token came.
                        outcome.ttft_s = (generate_started - started) + delta.ttft_s
                    continue
                raw.append(delta.text)
                if hold_back:
                    continue
                fed.append(delta.text)
                text = out_filter.feed(delta.text) if out_filter else delta.text
                if text:
                    if outcome.ttft_s is None:
                        outcome.ttft_s = time.perf_counter() - started
                    parts.append(text)
                    yield text
        finally:
            trace.timings.add("generate", (time.perf_counter() - generate_started) * 1000.0)
        if check is not None:
            with trace.stage("verify"):
                checked = check.check("".join(raw))
            trace.groundedness = checked.report
            if hold_back:
                fed.append(checked.text)
                text = out_filter.feed(checked.text) if out_filter else checked.text
                if text:
                    if incremental or outcome.ttft_s is None:
                        outcome.ttft_s = time.perf_counter() - started
                    parts.append(text)
                    yield text
        if out_filter is not None:
            tail = out_filter.flush()
            if tail:
                if outcome.ttft_s is None:
                    outcome.ttft_s = time.perf_counter() - started
                parts.append(tail)
                yield tail
        outcome.text = "".join(parts)
        outcome.output_altered = outcome.text != "".join(fed)

    async def _structured(
        self, generator: Generator, plan: Plan, trace: RequestTrace
    ) -> AsyncIterator[TokenDelta]:
        """Backends that cannot constrain decoding: validate the JSON and repair once.

        The answer is only known to be valid once complete, so it is sent as one piece.
        """
        trace.backend, trace.backend_trust = generator.name, generator.trust
        result = await complete_with_response_format(generator.complete, plan.messages, plan.params)
        for delta in _as_deltas(result):
            yield delta

    async def _complete_with_fallback(
        self, generator: Generator, plan: Plan, trace: RequestTrace
    ) -> AsyncIterator[TokenDelta]:
        trace.backend, trace.backend_trust = generator.name, generator.trust
        try:
            result = await generator.complete(plan.messages, plan.params)
        except GenerationError as exc:
            fallback = self._switch_to_fallback(generator, exc, trace)
            result = await fallback.complete(plan.messages, plan.params)
        for delta in _as_deltas(result):
            yield delta

    def _switch_to_fallback(self, failed: Generator, exc: GenerationError, trace: RequestTrace) -> Generator:
        """The fallback to use after `failed` raised `exc` (recorded in the trace); re-raises without one."""
        fallback = self._fallback
        if fallback is None or fallback is failed:
            raise exc
        # While the circuit is open every request skips the primary: the breaker logged the opening once.
        level = logging.DEBUG if isinstance(exc, CircuitOpen) else logging.WARNING
        logger.log(level, "generator %s failed (%s); falling back to %s", failed.name, exc, fallback.name)
        trace.fallback = {"from": failed.name, "to": fallback.name}
        if self._on_fallback is not None:
            self._on_fallback(failed.name, fallback.name)
        trace.backend, trace.backend_trust = fallback.name, fallback.trust
        return fallback

    async def _stream_with_fallback(
        self, generator: Generator, plan: Plan, trace: RequestTrace
    ) -> AsyncIterator[TokenDelta]:
        trace.backend, trace.backend_trust = generator.name, generator.trust
        emitted = False
        try:
            async for delta in generator.stream(plan.messages, plan.params):
                emitted = True
                yield delta
            return
        except GenerationError as exc:
            if emitted:
                raise
            fallback = self._switch_to_fallback(generator, exc, trace)
        async for delta in fallback.stream(plan.messages, plan.params):
            yield delta


REPLAY_WORDS_PER_CHUNK = 4


def _replay(answer: CachedAnswer, outcome: Outcome, started: float, incremental: bool) -> Iterator[str]:
    """A cached answer as the runner's text pieces (a few words each when streaming), then its counts."""
    words = re.findall(r"\s*\S+", answer.text)
    trailing = answer.text[len("".join(words)) :]
    if incremental and words:
        step = REPLAY_WORDS_PER_CHUNK
        pieces = ["".join(words[i : i + step]) for i in range(0, len(words), step)]
        pieces[-1] += trailing
    else:
        pieces = [answer.text]
    outcome.ttft_s = time.perf_counter() - started
    yield from pieces
    outcome.text = answer.text
    outcome.finish_reason = answer.finish_reason
    outcome.prompt_tokens = answer.prompt_tokens
    outcome.completion_tokens = answer.completion_tokens


def _as_deltas(result: GenerationResult) -> tuple[TokenDelta, TokenDelta]:
    """A whole answer as the two deltas a stream would end with: the text, then the final counts."""
    return (
        TokenDelta(text=result.text),
        TokenDelta(
            text="",
            finish_reason=result.finish_reason,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            cached_prompt_tokens=result.cached_prompt_tokens,
            ttft_s=result.ttft_s,
            busy_s=result.busy_s,
        ),
    )
