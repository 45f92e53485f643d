"""How the request path treats a shared store (Redis) that fails: back off, and say so without flooding.

Used by the rate limiter and the response cache, whose stores may be down while the service runs on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class StoreBackoff:
    """After a failure the store is not asked again for `seconds`: a store that times out would otherwise
    add its timeout to every request while it is down."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._seconds = seconds
        self._clock = clock
        self._retry_at = 0.0

    @property
    def seconds(self) -> float:
        return self._seconds

    def active(self) -> bool:
        return self._clock() < self._retry_at

    def failed(self) -> None:
        self._retry_at = self._clock() + self._seconds


class StoreFailureLog:
    """A warning at the first failure, then at most one per `interval_s` with the count since; an info
    line when the store answers again. A store that is down must not write one line per request."""

    def __init__(
        self,
        subject: str,
        interval_s: float,
        *,
        logger: logging.Logger,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._subject = subject
        self._interval_s = interval_s
        self._logger = logger
        self._clock = clock
        self._last_logged: float | None = None
        self._unlogged = 0
        self._failures = 0

    def failed(self, reason: str, outcome: str) -> None:
        """`reason`: what went wrong; `outcome`: what the request got instead."""
        self._failures += 1
        now = self._clock()
        if self._last_logged is not None and now - self._last_logged < self._interval_s:
            self._unlogged += 1
            return
        if self._last_logged is None:
            self._logger.warning("%s failed (%s); %s", self._subject, reason, outcome)
        else:
            self._logger.warning(
                "%s still failing (%s); %s; %d calls failed since the last message",
                self._subject,
                reason,
                outcome,
                self._unlogged + 1,
            )
        self._last_logged = now
        self._unlogged = 0

    def succeeded(self) -> None:
        if self._failures:
            self._logger.info("%s answers again after %d failed calls", self._subject, self._failures)
            self._failures, self._unlogged, self._last_logged = 0, 0, None
