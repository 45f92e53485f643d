"""The in-process limit store: token buckets and daily totals per key, in this worker's memory.

Each worker (and each replica) counts on its own, so N processes admit up to N times a limit; the Redis
store shares the counts. Not thread-safe: call from the event loop.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from services.core.settings import LimitsSettings
from services.gateway.limit_store import SECONDS_PER_DAY, Refusal


class TokenBucket:
    """`capacity` units, refilled at `per_second`; the level may go negative (debits after the fact)."""

    def __init__(self, capacity: float, per_second: float, now: float) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be > 0, got {capacity}")
        if per_second <= 0:
            raise ValueError(f"per_second must be > 0, got {per_second}")
        self.capacity = capacity
        self.per_second = per_second
        self._level = capacity
        self._updated = now

    def level(self, now: float) -> float:
        self._level = min(self.capacity, self._level + (now - self._updated) * self.per_second)
        self._updated = now
        return self._level

    def seconds_until(self, amount: float, now: float) -> float:
        """Seconds until the level reaches `amount` (0 when it already has)."""
        missing = amount - self.level(now)
        return 0.0 if missing <= 0 else missing / self.per_second

    def take(self, amount: float, now: float) -> None:
        self._level = self.level(now) - amount


@dataclass
class _DailyUsage:
    day: int = -1
    tokens: int = 0
    usd: float = 0.0


@dataclass
class _KeyState:
    requests: TokenBucket | None
    tokens: TokenBucket | None
    daily: _DailyUsage = field(default_factory=_DailyUsage)


class MemoryLimitStore:
    """The limits of `LimitsSettings` for every key; at most `max_tracked_keys` keys are remembered."""

    def __init__(
        self,
        settings: LimitsSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._wall_clock = wall_clock
        self._keys: OrderedDict[str, _KeyState] = OrderedDict()

    def _state(self, key_id: str, now: float) -> _KeyState:
        state = self._keys.get(key_id)
        if state is None:
            s = self._settings
            state = _KeyState(
                requests=TokenBucket(s.requests_per_minute, s.requests_per_minute / 60.0, now)
                if s.requests_per_minute
                else None,
                tokens=TokenBucket(s.tokens_per_minute, s.tokens_per_minute / 60.0, now)
                if s.tokens_per_minute
                else None,
            )
            self._keys[key_id] = state
            # Bounded memory: forget the key idle longest (its buckets would be full again anyway).
            while len(self._keys) > s.max_tracked_keys:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(key_id)
        day = int(self._wall_clock() // SECONDS_PER_DAY)
        if state.daily.day != day:
            state.daily = _DailyUsage(day=day)
        return state

    async def admit(self, key_id: str) -> Refusal | None:
        now = self._clock()
        state = self._state(key_id, now)
        s = self._settings
        until_tomorrow = SECONDS_PER_DAY - self._wall_clock() % SECONDS_PER_DAY
        if s.tokens_per_day and state.daily.tokens >= s.tokens_per_day:
            return Refusal("tokens_per_day", until_tomorrow, state.daily.tokens)
        if s.usd_per_day and state.daily.usd >= s.usd_per_day:
            return Refusal("usd_per_day", until_tomorrow, state.daily.usd)
        if state.tokens is not None:
            wait = state.tokens.seconds_until(1.0, now)
            if wait > 0:
                return Refusal("tokens_per_minute", wait)
        if state.requests is not None:
            wait = state.requests.seconds_until(1.0, now)
            if wait > 0:
                return Refusal("requests_per_minute", wait)
            state.requests.take(1.0, now)
        return None

    async def record(self, key_id: str, tokens: int, usd: float) -> None:
        now = self._clock()
        state = self._state(key_id, now)
        if state.tokens is not None:
            state.tokens.take(float(tokens), now)
        state.daily.tokens += tokens
        state.daily.usd += usd

    async def aclose(self) -> None:
        """Nothing to release."""
