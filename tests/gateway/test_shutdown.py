"""Graceful shutdown of `hybridllm serve`: SIGTERM during a stream lets the stream finish, takes the server
out of rotation at once (new connections refused or /readyz 503), and the process exits 0 after the drain."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.harness.fixture_upstream import FixtureBehaviour, gateway_env, running_fixture_upstream
from services.core.ports import free_port
from services.evaluation.local_server import hybridllm_command, service_env, stop, wait_ready

pytestmark = pytest.mark.integration

GRACE_S = 15
STREAM_TOKENS = 30
# 30 tokens 0.1 s apart: a stream lasts about 3 s, long enough to send SIGTERM in the middle of it.
SLOW = FixtureBehaviour(delay_s=0.0, tokens=STREAM_TOKENS, inter_token_s=0.1)


@pytest.fixture(scope="module")
def slow_upstream() -> Iterator[str]:
    with running_fixture_upstream(SLOW) as url:
        yield url


@pytest.fixture
def serve(slow_upstream: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    env = service_env(
        {
            **gateway_env(slow_upstream, 8),
            "HYBRID_SERVER__SHUTDOWN_GRACE_S": str(GRACE_S),
            "HYBRID_DATA_DIR": str(tmp_path / "data"),
            "HYBRID_ROUTER__MODEL_DIR": str(tmp_path / "no-router"),
            "HYBRID_OBSERVABILITY__LOG_LEVEL": "INFO",
        }
    )
    port = free_port()
    command = [*hybridllm_command(), "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--index", str(tmp_path / "no-index")]
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base_url, process, log_path, timeout_s=120)
        yield process, base_url, log_path
    finally:
        stop(process)


def _stream(base_url: str, first_event: threading.Event, result: dict[str, Any]) -> None:
    body = {"model": "prompt", "messages": [{"role": "user", "content": "Tell me."}], "stream": True}
    body["max_tokens"] = STREAM_TOKENS
    try:
        with httpx.stream("POST", base_url + "/v1/chat/completions", json=body, timeout=60) as resp:
            result["status"] = resp.status_code
            events: list[str] = result.setdefault("events", [])
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    first_event.set()
    except Exception as exc:  # reported by the test, not lost in the thread
        result["error"] = repr(exc)
    finally:
        first_event.set()


def _readiness_during_drain(base_url: str, streaming: threading.Thread) -> list[str]:
    """What a new client sees while the stream drains: 'refused', or the /readyz status code."""
    seen: list[str] = []
    while streaming.is_alive():
        try:
            with httpx.Client(timeout=2) as fresh:  # a new connection each time
                seen.append(str(fresh.get(base_url + "/readyz").status_code))
        except httpx.TransportError:
            seen.append("refused")
        time.sleep(0.05)
    return seen


def test_sigterm_drains_the_stream_then_exits_zero(
    serve: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    process, base_url, log_path = serve
    first_event = threading.Event()
    result: dict[str, Any] = {}
    streaming = threading.Thread(target=_stream, args=(base_url, first_event, result), daemon=True)
    streaming.start()
    assert first_event.wait(timeout=30), "the stream never started"
    assert "error" not in result, result
    process.send_signal(signal.SIGTERM)

    seen = _readiness_during_drain(base_url, streaming)
    streaming.join(timeout=60)

    assert "error" not in result, f"stream broken by the shutdown: {result['error']}"
    assert result["status"] == 200
    events = result["events"]
    assert events[-1] == "[DONE]", events[-3:]
    assert sum(1 for e in events if '"content":' in e and "token" in e) > 0
    assert "usage" in events[-2] or "finish_reason" in "".join(events[-3:])
    assert seen, "the stream ended before readiness could be checked"
    assert set(seen) <= {"refused", "503"}, f"a new client saw {seen} during the drain"

    try:
        code = process.wait(timeout=GRACE_S + 10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`hybridllm serve` still running {GRACE_S + 10} s after SIGTERM")
    assert code == 0, log_path.read_text(errors="replace")[-2000:]
