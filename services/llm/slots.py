"""Bounded concurrency in front of a generator: a few running, a bounded queue, then 503.

A CPU generator gets slower for everyone when more requests run at once, so requests beyond
`max_concurrency` wait in a queue of at most `max_queue`; past that the caller is told to come back
(`Overloaded` -> 503 with Retry-After) instead of piling up unbounded latency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from services.core.errors import Overloaded


class GenerationSlots:
    def __init__(self, max_concurrency: int, max_queue: int) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {max_queue}")
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._waiting = 0
        self._running = 0
        self.last_queue_wait_s = 0.0
        # Set by the gateway: receives each request's queue wait in seconds (a metric's observe).
        self.on_wait: Callable[[float], None] | None = None

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def running(self) -> int:
        return self._running

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[float]:
        """Hold one slot for the body; yields the seconds spent queued."""
        if self._semaphore.locked() and self._waiting >= self.max_queue:
            raise Overloaded(
                f"generator busy: {self._running} running and {self._waiting} queued "
                f"(max_queue={self.max_queue})",
                retry_after_s=1.0,
            )
        started = time.perf_counter()
        self._waiting += 1
        try:
            await self._semaphore.acquire()
        finally:
            self._waiting -= 1
        queued_s = time.perf_counter() - started
        self.last_queue_wait_s = queued_s
        if self.on_wait is not None:
            self.on_wait(queued_s)
        self._running += 1
        try:
            yield queued_s
        finally:
            self._running -= 1
            self._semaphore.release()
