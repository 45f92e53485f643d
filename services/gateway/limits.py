"""Per-API-key rate limits (requests and tokens per minute) and daily budgets (tokens, USD) -> 429.

A token bucket per key and limit, kept by a store: in this worker's memory (`limits.backend: memory`) or
in Redis, shared by every worker and replica (`redis`). Request counts are taken before the request
runs; tokens and cost are only known afterwards, so they are debited from the key's buckets when the
request ends and a key whose bucket is in deficit waits (Retry-After) until it refills. That admits at
most one over-budget request per key at a time, which is the price of not guessing answer lengths.

When the store cannot answer, `limits.on_store_failure` lets the request pass (allow) or refuses it with
503 + Retry-After (deny); either way `hybrid_limit_store_failures_total{action}` counts it and the log
says so without repeating itself per request.

The chat handler reports a request's usage through `report_usage` (a context variable the middleware sets
per request), so the limiter needs no reference from the handler and costs nothing when limits are off.
"""

from __future__ import annotations

import contextvars
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.core.errors import HybridError, Overloaded, RateLimited
from services.core.settings import LimitsSettings, Settings
from services.core.store_health import StoreBackoff, StoreFailureLog
from services.gateway.errors import response_for
from services.gateway.limit_store import LimitStore, LimitStoreError, Refusal
from services.gateway.limit_store_memory import MemoryLimitStore

if TYPE_CHECKING:
    from services.gateway.metrics import ServiceMetrics

logger = logging.getLogger(__name__)

LIMITED_PATH_PREFIX = "/v1/"
# What the limiter did when its store failed: let the request pass, refuse it, or lose a finished one's debit.
STORE_FAILURE_ACTIONS = ("allow", "deny", "unrecorded")
# A refused client retries after this long: about the time a Redis restart or failover takes.
STORE_RETRY_AFTER_S = 5.0
# While the store keeps failing, one log line per this many seconds (with the count since the last one).
STORE_FAILURE_LOG_INTERVAL_S = 60.0


class StoreBackingOff(LimitStoreError):
    """The store failed moments ago (redis.failure_backoff_s), so it was not asked: a failure all the same."""


class LimitStoreUnavailable(Overloaded):
    """The limit store did not answer and `limits.on_store_failure` is deny: 503 with Retry-After."""

    code = "limit_store_unavailable"


def _refusal_error(refusal: Refusal, settings: LimitsSettings) -> RateLimited:
    wait = refusal.retry_after_s
    if refusal.limit in ("tokens_per_day", "usd_per_day"):
        budget, used = (
            (f"daily token budget of {settings.tokens_per_day} tokens", f"{refusal.used:.0f}")
            if refusal.limit == "tokens_per_day"
            else (f"daily budget of {settings.usd_per_day} USD", f"{refusal.used:.6f} USD")
        )
        return RateLimited(
            f"{budget} used up for this API key ({used} used); it resets at 00:00 UTC",
            retry_after_s=wait,
            code="budget_exceeded",
        )
    per_minute = (
        f"{settings.tokens_per_minute} tokens"
        if refusal.limit == "tokens_per_minute"
        else f"{settings.requests_per_minute} requests"
    )
    return RateLimited(
        f"rate limit of {per_minute} per minute reached for this API key; retry in {math.ceil(wait)} s",
        retry_after_s=wait,
    )


def limit_store_failure_log(clock: Callable[[], float] = time.monotonic) -> StoreFailureLog:
    return StoreFailureLog("rate-limit store", STORE_FAILURE_LOG_INTERVAL_S, logger=logger, clock=clock)


def _ignore(action: str) -> None:
    """No metric to count store failures in."""


class KeyLimiter:
    """The limits of `LimitsSettings` for every key, kept in `store`; the store-failure policy."""

    def __init__(
        self,
        settings: LimitsSettings,
        store: LimitStore,
        *,
        on_store_failure: Callable[[str], None] = _ignore,
        failure_log: StoreFailureLog | None = None,
        failure_backoff_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._store = store
        self._count_failure = on_store_failure
        self._failure_log = failure_log or limit_store_failure_log()
        self._backoff = StoreBackoff(failure_backoff_s, clock)

    @property
    def enabled(self) -> bool:
        s = self._settings
        return bool(s.requests_per_minute or s.tokens_per_minute or s.tokens_per_day or s.usd_per_day)

    async def admit(self, key_id: str) -> None:
        """Count one request for `key_id`, or raise RateLimited with the seconds to wait (or, when the
        store failed and the policy is deny, LimitStoreUnavailable)."""
        if not self.enabled:
            return
        try:
            self._check_backoff()
            refusal = await self._store.admit(key_id)
        except LimitStoreError as exc:
            action = self._settings.on_store_failure
            self._failed(action, exc)
            if action == "deny":
                raise LimitStoreUnavailable(
                    "rate-limit store unavailable; retry later", retry_after_s=STORE_RETRY_AFTER_S
                ) from exc
            return
        self._failure_log.succeeded()
        if refusal is not None:
            raise _refusal_error(refusal, self._settings)

    async def record(self, key_id: str, tokens: int, usd: float) -> None:
        """Debit what a finished request used (prompt + completion tokens, cost from the ledger)."""
        s = self._settings
        debited = s.tokens_per_minute or s.tokens_per_day or s.usd_per_day
        if not debited or (tokens <= 0 and usd <= 0):
            return
        try:
            self._check_backoff()
            await self._store.record(key_id, tokens, usd)
        except LimitStoreError as exc:
            self._failed("unrecorded", exc)
            return
        self._failure_log.succeeded()

    def _check_backoff(self) -> None:
        if self._backoff.active():
            raise StoreBackingOff(f"not asked: it failed less than {self._backoff.seconds:g} s ago")

    def _failed(self, action: str, exc: LimitStoreError) -> None:
        if not isinstance(exc, StoreBackingOff):
            self._backoff.failed()
        self._count_failure(action)
        self._failure_log.failed(str(exc), f"action={action}")

    async def aclose(self) -> None:
        await self._store.aclose()


def build_limiter(settings: Settings, metrics: ServiceMetrics) -> KeyLimiter:
    """The limiter `limits.backend` names; its store failures count in `metrics`."""
    limits = settings.limits
    store: LimitStore
    if limits.backend == "redis":
        from services.core.redis_client import connect
        from services.gateway.limit_store_redis import RedisLimitStore

        store = RedisLimitStore(connect(settings.redis), limits, key_prefix=settings.redis.key_prefix)
    else:
        store = MemoryLimitStore(limits)
    failures = metrics.limit_store_failures
    for action in STORE_FAILURE_ACTIONS:
        failures.labels(action=action)  # at zero from the start, so alerts can use rate()

    def count_failure(action: str) -> None:
        failures.labels(action=action).inc()

    backoff = settings.redis.failure_backoff_s if limits.backend == "redis" else 0.0
    return KeyLimiter(limits, store, on_store_failure=count_failure, failure_backoff_s=backoff)


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
    """Admits `/v1/` requests per key (after auth set `state.key_id`) and debits their usage afterwards.

    It also closes the limiter's store connections once the app has shut down (the ASGI lifespan).
    """

    def __init__(self, app: ASGIApp, *, limiter: KeyLimiter) -> None:
        self._app = app
        self._limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._app(scope, receive, self._closing_on_shutdown(send))
            return
        if (
            scope["type"] != "http"
            or not self._limiter.enabled
            or not str(scope["path"]).startswith(LIMITED_PATH_PREFIX)
        ):
            await self._app(scope, receive, send)
            return
        key_id = str(scope.get("state", {}).get("key_id", "anonymous"))
        try:
            await self._limiter.admit(key_id)
        except HybridError as exc:
            await response_for(exc)(scope, receive, send)
            return
        sink = _UsageSink()
        token = _current_usage.set(sink)
        try:
            await self._app(scope, receive, send)
        finally:
            _current_usage.reset(token)
            await self._limiter.record(key_id, sink.tokens, sink.usd)

    def _closing_on_shutdown(self, send: Send) -> Send:
        async def send_then_close(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                await self._limiter.aclose()
            await send(message)

        return send_then_close
