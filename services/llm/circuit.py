"""A circuit breaker in front of the primary generator, so a dead backend is skipped instead of waited on.

Closed: requests go to the primary. After `failure_threshold` consecutive failures (errors or timeouts)
within `window_s`, the circuit opens: the wrapped generator refuses at once with `CircuitOpen` (a
GenerationError), which the runner answers from the fallback generator without paying the primary's
timeout. After `cooldown_s` one probe request is let through (half-open); its success closes the circuit,
its failure opens it for another cool-down.

What counts: GenerationError (upstream errors, timeouts, connection refused, a stream that dies). Client
errors, overload (503 from the slot queue) and a client hanging up say nothing about the backend's health.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from services.core.errors import GenerationError, InvalidRequest
from services.core.protocols import (
    AdapterLoader,
    GenerationQueue,
    Generator,
    enforces_response_format,
    generation_queue,
)
from services.core.types import ChatMessage, GenerationParams, GenerationResult, TokenDelta, Trust

logger = logging.getLogger(__name__)


class CircuitState(enum.IntEnum):
    """Values are what the `hybrid_circuit_state` gauge shows."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitOpen(GenerationError):
    code = "circuit_open"


StateListener = Callable[[str, CircuitState], None]


class CircuitBreaker:
    """The state machine only; not thread-safe (used from the event loop)."""

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int,
        window_s: float,
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: StateListener | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        if cooldown_s <= 0:
            raise ValueError(f"cooldown_s must be > 0, got {cooldown_s}")
        self.name = name
        self.failure_threshold = failure_threshold
        self.window_s = window_s
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._on_change = on_change
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._first_failure_at = 0.0
        self._opened_at = 0.0
        self._probe_in_flight = False
        if on_change is not None:
            on_change(name, self._state)

    @property
    def state(self) -> CircuitState:
        return self._state

    def _set(self, state: CircuitState) -> None:
        if state != self._state:
            logger.warning("circuit of generator %s: %s -> %s", self.name, self._state.name, state.name)
            self._state = state
            if self._on_change is not None:
                self._on_change(self.name, state)

    def allow(self) -> bool:
        """True when a request may go to the backend now (in half-open: only the one probe)."""
        if self._state == CircuitState.CLOSED:
            return True
        if self._state == CircuitState.OPEN:
            if self._clock() - self._opened_at < self.cooldown_s:
                return False
            self._set(CircuitState.HALF_OPEN)
        if self._probe_in_flight:
            return False
        self._probe_in_flight = True
        return True

    def record_success(self) -> None:
        self._probe_in_flight = False
        self._failures = 0
        self._set(CircuitState.CLOSED)

    def record_failure(self) -> None:
        now = self._clock()
        self._probe_in_flight = False
        if self._state == CircuitState.HALF_OPEN:
            self._open(now)
            return
        if self._failures == 0 or now - self._first_failure_at > self.window_s:
            self._failures, self._first_failure_at = 0, now
        self._failures += 1
        if self._failures >= self.failure_threshold:
            self._open(now)

    def record_abandoned(self) -> None:
        """The request ended without a verdict (client gone): free the probe, change nothing else."""
        self._probe_in_flight = False

    def _open(self, now: float) -> None:
        self._opened_at = now
        self._failures = 0
        self._set(CircuitState.OPEN)


class CircuitBreakerGenerator:
    """A Generator that sends requests to `inner` while its circuit lets them through."""

    def __init__(self, inner: Generator, breaker: CircuitBreaker) -> None:
        self._inner = inner
        self.breaker = breaker

    @property
    def inner(self) -> Generator:
        return self._inner

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def trust(self) -> Trust:
        return self._inner.trust

    @property
    def adapters(self) -> Sequence[str]:
        return self._inner.adapters

    # The inner backend's capabilities, delegated explicitly so the wrapper offers what the backend does.

    @property
    def supports_response_format(self) -> bool:
        return enforces_response_format(self._inner)

    @property
    def slots(self) -> GenerationQueue | None:
        return generation_queue(self._inner)

    def load_adapter(self, name: str, folder: Path) -> None:
        """Adapters are loaded into the backend inside, whatever the circuit's state."""
        if not isinstance(self._inner, AdapterLoader):
            raise InvalidRequest(f"generator backend {self.name!r} cannot load adapters at run time")
        self._inner.load_adapter(name, folder)

    def warm_up(self) -> None:
        self._inner.warm_up()

    def count_tokens(self, text: str) -> int:
        return self._inner.count_tokens(text)

    def render_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return self._inner.render_prompt_tokens(messages)

    def _refuse_if_open(self) -> None:
        if not self.breaker.allow():
            raise CircuitOpen(
                f"{self.name}: circuit open after repeated failures; retrying it in at most "
                f"{self.breaker.cooldown_s:g} s"
            )

    async def complete(self, messages: Sequence[ChatMessage], params: GenerationParams) -> GenerationResult:
        self._refuse_if_open()
        try:
            result = await self._inner.complete(messages, params)
        except GenerationError:
            self.breaker.record_failure()
            raise
        except BaseException:
            self.breaker.record_abandoned()
            raise
        self.breaker.record_success()
        return result

    async def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[TokenDelta]:
        self._refuse_if_open()
        verdict = False
        try:
            async for delta in self._inner.stream(messages, params):
                yield delta
            verdict = True
            self.breaker.record_success()
        except GenerationError:
            verdict = True
            self.breaker.record_failure()
            raise
        finally:
            if not verdict:
                self.breaker.record_abandoned()

    async def aclose(self) -> None:
        await self._inner.aclose()
