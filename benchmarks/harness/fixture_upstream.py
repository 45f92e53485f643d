"""BENCHMARK FIXTURE, not a model: a minimal OpenAI-compatible upstream that answers after a fixed delay.

It stands in for a generator server (vLLM, llama.cpp) so the gateway's own overhead can be measured:
the same requests go to it directly and through the gateway, and the difference is the gateway. Raw asyncio
HTTP/1.1 (keep-alive, chunked SSE) rather than a web framework, so the fixture itself costs little CPU.

    python -m benchmarks.harness.fixture_upstream --port 9100 --delay-ms 20 --tokens 16
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from benchmarks.harness.paths import REPO_ROOT
from benchmarks.harness.service_process import crash
from services.core.ports import free_port
from services.evaluation.local_server import stop

logger = logging.getLogger(__name__)

MODEL_NAME = "fixture"
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


@dataclass(frozen=True, slots=True)
class FixtureBehaviour:
    delay_s: float = 0.02
    tokens: int = 16
    inter_token_s: float = 0.0

    def __post_init__(self) -> None:
        if self.delay_s < 0:
            raise ValueError(f"delay_s must be >= 0, got {self.delay_s}")
        if self.tokens <= 0:
            raise ValueError(f"tokens must be > 0, got {self.tokens}")
        if self.inter_token_s < 0:
            raise ValueError(f"inter_token_s must be >= 0, got {self.inter_token_s}")


def _response(status: int, body: bytes, content_type: str = "application/json") -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"content-type: {content_type}\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode("ascii") + data + b"\r\n"


def _count_prompt_tokens(payload: dict[str, Any]) -> int:
    return sum(len(str(m.get("content", "")).split()) for m in payload.get("messages", []))


class FixtureUpstream:
    """The protocol handler; one instance serves every connection."""

    def __init__(self, behaviour: FixtureBehaviour) -> None:
        self.behaviour = behaviour
        self.served = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
                }
                length = int(headers.get("content-length", "0"))
                body = await reader.readexactly(length) if length else b""
                await self._route(method, path, body, writer)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _route(self, method: str, path: str, body: bytes, writer: asyncio.StreamWriter) -> None:
        if path in ("/health", "/readyz") and method == "GET":
            writer.write(_response(200, b'{"status":"ok"}'))
        elif path == "/v1/models" and method == "GET":
            models = {
                "object": "list",
                "data": [{"id": MODEL_NAME, "object": "model", "owned_by": "fixture"}],
            }
            writer.write(_response(200, json.dumps(models).encode()))
        elif path == "/v1/chat/completions" and method == "POST":
            try:
                payload = json.loads(body)
            except json.JSONDecodeError:
                writer.write(
                    _response(400, b'{"error":{"message":"invalid JSON","type":"invalid_request_error"}}')
                )
                return
            await self._complete(payload, writer)
        else:
            writer.write(_response(404, b'{"error":{"message":"not found","type":"not_found"}}'))

    async def _complete(self, payload: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        b = self.behaviour
        n_tokens = min(b.tokens, int(payload.get("max_tokens") or b.tokens))
        # "length" when max_tokens cut the answer short, as a real server reports it; "stop" otherwise.
        finish_reason = "length" if n_tokens < b.tokens else "stop"
        prompt_tokens = _count_prompt_tokens(payload)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": n_tokens,
            "total_tokens": prompt_tokens + n_tokens,
        }
        created = int(time.time())
        self.served += 1
        ident = f"chatcmpl-fixture-{self.served}"
        await asyncio.sleep(b.delay_s)
        if not payload.get("stream"):
            message = {"role": "assistant", "content": " ".join(["token"] * n_tokens)}
            completion = {
                "id": ident, "object": "chat.completion", "created": created, "model": MODEL_NAME,
                "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}], "usage": usage,
            }  # fmt: skip
            writer.write(_response(200, json.dumps(completion).encode()))
            return
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        base = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": MODEL_NAME}
        for i in range(n_tokens):
            delta = {"role": "assistant", "content": "token"} if i == 0 else {"content": " token"}
            event = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            writer.write(_chunk(b"data: " + json.dumps(event).encode() + b"\n\n"))
            if b.inter_token_s:
                await writer.drain()
                await asyncio.sleep(b.inter_token_s)
        final = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish_reason}]}
        writer.write(_chunk(b"data: " + json.dumps(final).encode() + b"\n\n"))
        if (payload.get("stream_options") or {}).get("include_usage"):
            writer.write(
                _chunk(b"data: " + json.dumps({**base, "choices": [], "usage": usage}).encode() + b"\n\n")
            )
        writer.write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")


async def serve(host: str, port: int, behaviour: FixtureBehaviour) -> None:
    upstream = FixtureUpstream(behaviour)
    server = await asyncio.start_server(upstream.handle, host, port, backlog=1024)
    logger.info("fixture upstream on http://%s:%d (delay %.1f ms)", host, port, behaviour.delay_s * 1000)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def wait_until_healthy(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} process exited with code {process.returncode} before it was ready")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout_s:.0f} s")


class FixtureProcess:
    """One fixture upstream on a fixed port, so a restart comes back at the same address."""

    def __init__(self, delay_ms: float, tokens: int) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._args = ["--delay-ms", str(delay_ms), "--tokens", str(tokens)]
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        module = "benchmarks.harness.fixture_upstream"
        command = [sys.executable, "-m", module, "--port", str(self.port), *self._args]
        self._process = subprocess.Popen(command, cwd=REPO_ROOT, stderr=subprocess.DEVNULL)
        wait_until_healthy(f"{self.base_url}/health", self._process, timeout_s=30.0)

    def kill(self) -> None:
        crash(self._process)

    def stop(self) -> None:
        if self._process is not None:
            stop(self._process, grace_s=10.0)


def gateway_env(upstream_url: str, max_inflight: int) -> dict[str, str]:
    """The gateway's settings to serve from the fixture: the openai backend pointed at it, no local model.

    The generator slots default to 1 (right for an in-process CPU model); an HTTP upstream takes many at
    once, and a single slot would measure the queue, not the gateway.
    """
    return {
        "HYBRID_GENERATOR__BACKEND": "openai",
        "HYBRID_GENERATOR__BASE_URL": f"{upstream_url}/v1",
        "HYBRID_GENERATOR__MODEL": MODEL_NAME,
        "HYBRID_GENERATOR__MAX_CONCURRENCY": str(max_inflight),
        "HYBRID_GENERATOR__MAX_QUEUE": str(max_inflight * 4),
        "HYBRID_GENERATOR__MAX_RETRIES": "0",
        "HYBRID_DEFAULT_PIPELINE": "prompt",
        "HYBRID_OBSERVABILITY__LOG_LEVEL": "WARNING",
    }


@contextlib.contextmanager
def running_fixture_upstream(behaviour: FixtureBehaviour = FixtureBehaviour()) -> Iterator[str]:
    """Start the fixture in its own process (its own core time, not the caller's); yields its base URL."""
    port = free_port()
    command = [
        sys.executable, "-m", "benchmarks.harness.fixture_upstream", "--port", str(port),
        "--delay-ms", str(behaviour.delay_s * 1000), "--tokens", str(behaviour.tokens),
        "--inter-token-ms", str(behaviour.inter_token_s * 1000),
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO_ROOT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(f"{base_url}/health", process, timeout_s=30.0)
        yield base_url
    finally:
        stop(process, grace_s=10.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark fixture: OpenAI-compatible upstream with a fixed delay"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--delay-ms", type=float, default=20.0, help="delay before the first token")
    parser.add_argument(
        "--tokens", type=int, default=16, help="completion tokens per answer (capped by max_tokens)"
    )
    parser.add_argument("--inter-token-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    behaviour = FixtureBehaviour(args.delay_ms / 1000, args.tokens, args.inter_token_ms / 1000)
    asyncio.run(serve(args.host, args.port, behaviour))
    return 0


if __name__ == "__main__":
    sys.exit(main())
