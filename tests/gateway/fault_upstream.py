"""TEST FIXTURE: an OpenAI-compatible upstream whose failure mode a test switches at run time.

Modes: `ok` (answers like benchmarks.harness.fixture_upstream), `error_500`, `slow` (waits `slow_s` before
answering), `die_mid_stream` (sends a few tokens, then drops the connection), and `refuse` (the listening
socket is closed: connection refused). It runs on its own event loop in a thread, on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from benchmarks.harness.fixture_upstream import FixtureBehaviour, FixtureUpstream
from services.core.ports import free_port
from services.core.settings import load_settings
from services.gateway.app import create_app
from tests.conftest import MODEL_CACHE, serve_in_thread

QUICK = FixtureBehaviour(delay_s=0.0, tokens=8)
Mode = Literal["ok", "error_500", "slow", "die_mid_stream", "refuse"]


class FaultyUpstream(FixtureUpstream):
    def __init__(self, behaviour: FixtureBehaviour) -> None:
        super().__init__(behaviour)
        self.mode: Mode = "ok"
        self.slow_s = 5.0
        self.requests = 0  # chat requests that reached the upstream, whatever the mode
        self.open_streams = 0
        self.connections: set[asyncio.StreamWriter] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.add(writer)
        try:
            await super().handle(reader, writer)
        finally:
            self.connections.discard(writer)

    async def _complete(self, payload: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        self.requests += 1
        if self.mode == "error_500":
            body = b'{"error":{"message":"injected failure","type":"server_error"}}'
            writer.write(
                b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n"
                + f"content-length: {len(body)}\r\n\r\n".encode()
                + body
            )
            return
        if self.mode == "slow":
            await asyncio.sleep(self.slow_s)
        if self.mode == "die_mid_stream" and payload.get("stream"):
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            )
            # Enough words that text has passed the privacy filter's hold-back and reached the client.
            for i in range(12):
                delta = {"content": f"part{i} "}
                event = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "fixture",
                         "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}  # fmt: skip
                data = b"data: " + json.dumps(event).encode() + b"\n\n"
                writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                await writer.drain()
                await asyncio.sleep(0.01)
            writer.transport.abort()  # no terminating chunk, no [DONE]: the upstream died
            return
        self.open_streams += 1
        try:
            await super()._complete(payload, writer)
        finally:
            self.open_streams -= 1


class FaultUpstreamServer:
    """Owns the loop thread; `set_mode` switches behaviour, `refuse` closes the listener."""

    def __init__(self, behaviour: FixtureBehaviour = QUICK) -> None:
        self.upstream = FaultyUpstream(behaviour)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self.upstream.handle, "127.0.0.1", self.port)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self.upstream.connections):  # kept-alive client connections die too
            writer.transport.abort()
        await asyncio.sleep(0.05)  # let the handlers of aborted connections finish

    def start(self) -> None:
        self._thread.start()
        self._run(self._listen())

    def set_mode(self, mode: Mode) -> None:
        if mode == "refuse":
            self._run(self._close())
        elif self._server is None:
            self._run(self._listen())
        self.upstream.mode = mode

    async def _cancel_handlers(self) -> None:
        current = asyncio.current_task()
        handlers = [t for t in asyncio.all_tasks() if t is not current]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run(self._close())
            self._run(self._cancel_handlers())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


@contextlib.contextmanager
def fault_upstream(
    behaviour: FixtureBehaviour = QUICK,
) -> Iterator[FaultUpstreamServer]:
    server = FaultUpstreamServer(behaviour)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def gateway_in_front_of(upstream: FaultUpstreamServer, index_dir: Path, **overrides: Any) -> Iterator[str]:
    """A real gateway (the `prompt` pipeline by default) whose generator is `upstream`; yields its URL."""
    settings = load_settings(
        data_dir=str(MODEL_CACHE),
        default_pipeline="prompt",
        generator={"backend": "openai", "model": "fixture", "base_url": upstream.base_url, "max_retries": 0},
        rag={"index_dir": str(index_dir), "watch_interval_s": 0},
        **overrides,
    )
    with serve_in_thread(create_app(settings)) as url:
        yield url
