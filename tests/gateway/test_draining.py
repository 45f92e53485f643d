"""Draining on a stop signal: real signals to this process, a recorder standing in for uvicorn's handler
(unit); and a live gateway marked draining, answering 503 with Retry-After to new API requests
(integration)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import pytest

from benchmarks.harness.fixture_upstream import FixtureBehaviour, running_fixture_upstream
from services.core.settings import load_settings
from services.gateway.app import create_app
from services.gateway.auth import KeyChecker
from services.gateway.draining import RETRY_AFTER_S, drain_on_stop_signals
from services.gateway.metrics import ServiceMetrics
from services.gateway.state import GatewayState
from tests.conftest import serve_in_thread
from tests.gateway.test_metrics import gateway_settings

WAIT_S = 2.0


class ServerHandler:
    """What uvicorn installs for SIGINT and SIGTERM: records the signals handed to it, with their time."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, float]] = []

    def __call__(self, sig: int, frame: FrameType | None) -> None:
        self.calls.append((sig, time.monotonic()))


@pytest.fixture
def server_handler() -> Iterator[ServerHandler]:
    handler = ServerHandler()
    originals = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield handler
    finally:
        for sig, original in originals.items():
            signal.signal(sig, original)


def new_state() -> GatewayState:
    settings = load_settings()
    return GatewayState(settings=settings, metrics=ServiceMetrics(), auth=KeyChecker(settings.auth))


async def until(condition: Any, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.mark.unit
def test_the_signal_waits_for_the_requests_in_flight(server_handler: ServerHandler) -> None:
    state = new_state()

    async def scenario() -> None:
        async with drain_on_stop_signals(state, grace_s=30):
            state.requests_in_flight = 2
            os.kill(os.getpid(), signal.SIGTERM)
            await until(lambda: state.draining)
            await asyncio.sleep(0.3)
            assert server_handler.calls == []  # still serving: two requests in flight
            state.requests_in_flight = 0
            await until(lambda: server_handler.calls)
            assert [sig for sig, _ in server_handler.calls] == [signal.SIGTERM]

    asyncio.run(scenario())
    assert signal.getsignal(signal.SIGTERM) is server_handler  # the server's handler is back


@pytest.mark.unit
def test_the_grace_bounds_the_drain(server_handler: ServerHandler) -> None:
    state = new_state()
    grace_s = 0.5

    async def scenario() -> None:
        async with drain_on_stop_signals(state, grace_s=grace_s):
            state.requests_in_flight = 1  # never finishes
            signalled = time.monotonic()
            os.kill(os.getpid(), signal.SIGTERM)
            await until(lambda: server_handler.calls, timeout_s=grace_s + WAIT_S)
            ((sig, at),) = server_handler.calls
            assert sig == signal.SIGTERM
            assert grace_s <= at - signalled < grace_s + 1.0

    asyncio.run(scenario())


@pytest.mark.unit
def test_a_second_sigint_hands_over_at_once_a_second_sigterm_does_not(server_handler: ServerHandler) -> None:
    state = new_state()

    async def scenario() -> None:
        async with drain_on_stop_signals(state, grace_s=30):
            state.requests_in_flight = 1
            os.kill(os.getpid(), signal.SIGTERM)
            await until(lambda: state.draining)
            os.kill(os.getpid(), signal.SIGTERM)  # e.g. the init system's, after the supervisor's
            await asyncio.sleep(0.3)
            assert server_handler.calls == []
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C again
            await until(lambda: server_handler.calls)
            assert [sig for sig, _ in server_handler.calls] == [signal.SIGINT]
            state.requests_in_flight = 0
            await asyncio.sleep(0.3)
            assert len(server_handler.calls) == 1  # handed over once only

    asyncio.run(scenario())


@pytest.mark.unit
def test_outside_the_main_thread_signals_are_left_alone(server_handler: ServerHandler) -> None:
    state = new_state()
    seen: list[object] = []

    async def scenario() -> None:
        async with drain_on_stop_signals(state, grace_s=30):
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=asyncio.run, args=(scenario(),))
    thread.start()
    thread.join(timeout=10)
    assert seen == [server_handler]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, GatewayState]]:
    tmp: Path = tmp_path_factory.mktemp("draining-gw")
    with running_fixture_upstream(FixtureBehaviour(delay_s=0.002, tokens=4)) as upstream:
        app = create_app(gateway_settings(upstream, tmp))
        with serve_in_thread(app) as url:
            yield url, app.state.gateway


@pytest.mark.integration
def test_a_draining_gateway_refuses_new_api_requests_and_answers_probes(
    gateway: tuple[str, GatewayState],
) -> None:
    url, state = gateway
    body = {"model": "prompt", "messages": [{"role": "user", "content": "Hi."}], "max_tokens": 4}
    assert httpx.post(url + "/v1/chat/completions", json=body, timeout=30).status_code == 200
    state.draining = True
    try:
        with httpx.Client(timeout=30) as client:
            for method, path in (("POST", "/v1/chat/completions"), ("GET", "/v1/models")):
                resp = client.request(method, url + path, json=body if method == "POST" else None)
                assert resp.status_code == 503, resp.text
                assert resp.headers["retry-after"] == str(round(RETRY_AFTER_S))
                assert resp.headers["connection"] == "close"
                assert resp.headers["x-request-id"]
                error = resp.json()["error"]
                assert error["code"] == "shutting_down" and error["type"] == "server_error"
            ready = client.get(url + "/readyz")
            assert ready.status_code == 503 and ready.json()["reason"] == "shutting down"
            assert client.get(url + "/healthz").status_code == 200
            assert client.get(url + "/metrics").status_code == 200
    finally:
        state.draining = False
    assert httpx.post(url + "/v1/chat/completions", json=body, timeout=30).status_code == 200
    assert state.requests_in_flight == 0
