"""Many simultaneous streams, a third of them dropped by their clients mid-answer: afterwards every
generation slot is free, the upstream streams are closed, in-flight is back to zero, and no task or
thread was leaked (asyncio.all_tasks in the server's loop, threading.enumerate)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from benchmarks.harness.fixture_upstream import FixtureBehaviour
from services.core.settings import load_settings
from services.gateway.app import create_app
from tests.conftest import MODEL_CACHE, serve_in_thread
from tests.gateway.fault_upstream import FaultUpstreamServer, fault_upstream
from tests.gateway.metrics_scrape import scrape, value

pytestmark = pytest.mark.integration

STREAMS = 24
SLOTS = 8
POOL_LIMIT = 40 + 32  # anyio's default thread limiter + a default executor's max_workers
# 40 tokens 20 ms apart: each answer streams for about a second, so clients can leave mid-answer.
SLOW_STREAM = FixtureBehaviour(delay_s=0.0, tokens=40, inter_token_s=0.02)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultUpstreamServer]:
    with fault_upstream(SLOW_STREAM) as server:
        yield server


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, upstream: FaultUpstreamServer
) -> Iterator[tuple[str, LoopRecorder]]:
    settings = load_settings(
        data_dir=str(MODEL_CACHE),
        default_pipeline="prompt",
        generator={
            "backend": "openai",
            "model": "fixture",
            "base_url": upstream.base_url,
            "max_concurrency": SLOTS,
            "max_queue": STREAMS,
        },  # fmt: skip
        rag={"index_dir": str(tmp_path_factory.mktemp("c") / "no-index"), "watch_interval_s": 0},
    )
    recorder = LoopRecorder(create_app(settings))
    with serve_in_thread(recorder) as url:
        yield url, recorder


async def _one_stream(url: str, client: httpx.AsyncClient, leave_after: int | None) -> str:
    body = {
        "model": "prompt",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 40,
        "stream": True,
    }
    events = 0
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        async for line in resp.aiter_lines():
            if not line.startswith("data: "):
                continue
            events += 1
            if line == "data: [DONE]":
                return "done"
            if leave_after is not None and events >= leave_after:
                return "left"  # closing the response drops the connection mid-answer
    return "truncated"


async def _run_all(url: str) -> list[str]:
    limits = httpx.Limits(max_connections=STREAMS, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        jobs = [_one_stream(url, client, 3 if i % 3 == 0 else None) for i in range(STREAMS)]
        return await asyncio.gather(*jobs)


class LoopRecorder:
    """Wraps the app to remember the event loop uvicorn serves it on (to list that loop's tasks)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.loop = asyncio.get_running_loop()
        await self.app(scope, receive, send)

    def task_names(self) -> list[str]:
        assert self.loop is not None

        async def names() -> list[str]:
            current = asyncio.current_task()
            return sorted(
                repr(t.get_coro()).split(" at ")[0] for t in asyncio.all_tasks() if t is not current
            )

        return asyncio.run_coroutine_threadsafe(names(), self.loop).result(timeout=10)


def _wait_for(condition: Any, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


def test_streams_and_disconnects_leave_no_leaks(
    served: tuple[str, LoopRecorder], upstream: FaultUpstreamServer
) -> None:
    url, recorder = served
    app = recorder.app
    state = app.state.gateway
    slots = state.components.primary.slots

    httpx.get(url + "/healthz")
    tasks_before = recorder.task_names()
    threads_before = {t.ident for t in threading.enumerate()}
    for _ in range(2):  # the second round shows whether anything grows per round
        outcomes = asyncio.run(_run_all(url))
        assert outcomes.count("left") == STREAMS // 3
        assert outcomes.count("done") == STREAMS - STREAMS // 3
        assert _wait_for(lambda: slots.running == 0 and slots.waiting == 0), (slots.running, slots.waiting)
        assert _wait_for(lambda: upstream.upstream.open_streams == 0), upstream.upstream.open_streams
        assert value(scrape(url), "hybrid_requests_in_flight") == 0
        assert _wait_for(lambda: recorder.task_names() == tasks_before), (recorder.task_names(), tasks_before)
        new_threads = [t for t in threading.enumerate() if t.ident not in threads_before]
        # Only bounded pools may have grown: AnyIO's worker threads (idle ones exit after 10 s) and the
        # event loops' default executors (uvloop names them uvloop_N); no thread per request or stream.
        pooled = [t for t in new_threads if t.name == "AnyIO worker thread" or t.name.startswith("uvloop_")]
        assert pooled == new_threads, sorted({t.name for t in new_threads})
        assert len(new_threads) <= POOL_LIMIT
