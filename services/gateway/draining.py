"""Graceful shutdown, the same with one uvicorn worker or several.

uvicorn closes its listening socket on the first SIGTERM or SIGINT. With several workers the supervisor
keeps that socket open, so a new connection would wait in the backlog with nobody to answer it. Here the
first stop signal only marks the gateway draining: the process keeps accepting, /readyz answers 503, new
/v1 requests get 503 with Retry-After (the middleware), and the requests in flight run on. When none is
left, or `server.shutdown_grace_s` has passed, the signal goes on to uvicorn's own handler, which stops
listening and shuts the app down. Each worker gets SIGTERM from the supervisor and drains by itself.

A second SIGINT (Ctrl-C again) hands over at once; a repeated SIGTERM (the supervisor's after the init
system's) changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any, Protocol

from services.core.errors import NotReady

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# What a refused client is told to wait: by then a load balancer has routed it to another replica.
RETRY_AFTER_S = 1.0
# After the drain the server's own shutdown only closes idle connections; anything still running past
# the grace is cut after this (the CLI passes it to uvicorn as timeout_graceful_shutdown).
CLOSE_AFTER_DRAIN_S = 2
_POLL_S = 0.05

SignalHandler = Callable[[int, FrameType | None], Any]


class Drainable(Protocol):
    """What the drain reads and sets (the gateway's state); kept narrow so that the CLI's supervisor
    process can read this module's constants without importing the app."""

    draining: bool
    requests_in_flight: int


class ShuttingDown(NotReady):
    """A new request to a draining server: 503 with Retry-After, to be retried elsewhere."""

    code = "shutting_down"

    def __init__(self) -> None:
        super().__init__("server is shutting down; retry the request")
        self.retry_after_s = RETRY_AFTER_S


@asynccontextmanager
async def drain_on_stop_signals(state: Drainable, grace_s: float) -> AsyncIterator[None]:
    """For the app's lifetime: the first stop signal drains, then goes on to the server's handler.

    Does nothing outside the main thread (an in-thread test server: signals go to the main thread only)
    or when no server installed a handler to hand over to.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    installed = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    servers_handlers: dict[int, SignalHandler] = {
        sig: handler for sig, handler in installed.items() if callable(handler)
    }
    if len(servers_handlers) < len(STOP_SIGNALS):
        logger.warning("no server signal handler to hand over to; a stop signal will not drain")
        yield
        return
    loop = asyncio.get_running_loop()
    requested = asyncio.Event()
    received: list[int] = []
    handed_over = False

    def hand_over() -> None:
        nonlocal handed_over
        if not handed_over:
            handed_over = True
            sig = received[-1]
            servers_handlers[sig](sig, None)

    def on_stop_signal(sig: int, frame: FrameType | None) -> None:
        # Runs between two bytecodes of the loop's thread: set flags and wake the loop, nothing more.
        received.append(sig)
        if not state.draining:
            state.draining = True
            loop.call_soon_threadsafe(requested.set)
        elif sig == signal.SIGINT:
            hand_over()

    async def drain_then_hand_over() -> None:
        await requested.wait()
        started = time.monotonic()
        logger.info("draining: %d request(s) in flight, grace %.0f s", state.requests_in_flight, grace_s)
        while state.requests_in_flight > 0 and time.monotonic() - started < grace_s:
            await asyncio.sleep(_POLL_S)
        if state.requests_in_flight > 0:
            logger.warning("drain grace of %.0f s over; %d request(s) cut", grace_s, state.requests_in_flight)
        else:
            logger.info("drained in %.2f s", time.monotonic() - started)
        hand_over()

    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, on_stop_signal)
    drainer = asyncio.create_task(drain_then_hand_over())
    try:
        yield
    finally:
        # The app is shutting down: further signals go straight to the server again (Ctrl-C forces).
        for number, handler in servers_handlers.items():
            signal.signal(number, handler)
        drainer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drainer
