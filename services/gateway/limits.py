"""Per-API-key rate limits (requests and tokens per minute) and daily budgets (tokens, USD) -> 429.

In-process and per worker: a token bucket per key and limit. Request counts are taken before the request
runs; tokens and cost are only known afterwards, so they are debited from the key's buckets when the
request ends and a key whose bucket is in deficit waits (Retry-After) until it refills. That admits at
most one over-budget request per key at a time, which is the price of not guessing answer lengths.

The chat handler reports a request's usage through `report_usage` (a context variable the middleware sets
per request), so the limiter needs no reference from the handler and costs nothing when limits are off.
"""

from __future__ import annotations

import contextvars
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Receive, Scope, Send

from services.core.errors import HybridError, RateLimited
from services.core.settings import LimitsSettings
from services.gateway.errors import response_for

SECONDS_PER_DAY = 86_400.0
LIMITED_PATH_PREFIX = "/v1/"


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


class KeyLimiter:
    """The limits of `LimitsSettings` for every key. Not thread-safe: call from the event loop."""

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

    @property
    def enabled(self) -> bool:
        s = self._settings
        return bool(s.requests_per_minute or s.tokens_per_minute or s.tokens_per_day or s.usd_per_day)

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

    def admit(self, key_id: str) -> None:
        """Count one request for `key_id`, or raise RateLimited with the seconds to wait."""
        if not self.enabled:
            return
        now = self._clock()
        state = self._state(key_id, now)
        s = self._settings
        until_tomorrow = SECONDS_PER_DAY - self._wall_clock() % SECONDS_PER_DAY
        if s.tokens_per_day and state.daily.tokens >= s.tokens_per_day:
            raise RateLimited(
                f"daily token budget of {s.tokens_per_day} tokens used up for this API key "
                f"({state.daily.tokens} used); it resets at 00:00 UTC",
                retry_after_s=until_tomorrow,
                code="budget_exceeded",
            )
        if s.usd_per_day and state.daily.usd >= s.usd_per_day:
            raise RateLimited(
                f"daily budget of {s.usd_per_day} USD used up for this API key "
                f"({state.daily.usd:.6f} USD used); it resets at 00:00 UTC",
                retry_after_s=until_tomorrow,
                code="budget_exceeded",
            )
        if state.tokens is not None:
            wait = state.tokens.seconds_until(1.0, now)
            if wait > 0:
                raise RateLimited(
                    f"rate limit of {s.tokens_per_minute} tokens per minute reached for this API key; "
                    f"retry in {math.ceil(wait)} s",
                    retry_after_s=wait,
                )
        if state.requests is not None:
            wait = state.requests.seconds_until(1.0, now)
            if wait > 0:
                raise RateLimited(
                    f"rate limit of {s.requests_per_minute} requests per minute reached for this API key; "
                    f"retry in {math.ceil(wait)} s",
                    retry_after_s=wait,
                )
            state.requests.take(1.0, now)

    def record(self, key_id: str, tokens: int, usd: float) -> None:
        """Debit what a finished request used (prompt + completion tokens, cost from the ledger)."""
        if not self.enabled or (tokens <= 0 and usd <= 0):
            return
        now = self._clock()
        state = self._state(key_id, now)
        if state.tokens is not None:
            state.tokens.take(float(tokens), now)
        state.daily.tokens += tokens
        state.daily.usd += usd


@dataclass
class _UsageSink:
    tokens: int = 0
    usd: float = 0.0


_current_usage: contextvars.ContextVar[_UsageSink | None] = contextvars.ContextVar(
    "hybrid_request_usage", default=None
)


def report_usage(tokens: int, usd: float) -> None:
    """Called by the request handler when a request ends; a no-op outside a limited request."""
    sink = _current_usage.get()
    if sink is not None:
        sink.tokens += tokens
        sink.usd += usd


class RateLimitMiddleware:
    """Admits `/v1/` requests per key (after auth set `state.key_id`) and debits their usage afterwards."""

    def __init__(self, app: ASGIApp, *, limiter: KeyLimiter) -> None:
        self._app = app
        self._limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not self._limiter.enabled
            or not str(scope["path"]).startswith(LIMITED_PATH_PREFIX)
        ):
            await self._app(scope, receive, send)
            return
        key_id = str(scope.get("state", {}).get("key_id", "anonymous"))
        try:
            self._limiter.admit(key_id)
        except HybridError as exc:
            await response_for(exc)(scope, receive, send)
            return
        sink = _UsageSink()
        token = _current_usage.set(sink)
        try:
            await self._app(scope, receive, send)
        finally:
            _current_usage.reset(token)
            self._limiter.record(key_id, sink.tokens, sink.usd)
