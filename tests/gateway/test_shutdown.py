"""Graceful shutdown of `hybridllm serve`, with one worker and with two: on SIGTERM /readyz answers 503
at once, new API requests get 503 with Retry-After, the streams in flight finish with [DONE], and the
process exits 0 within server.shutdown_grace_s (plus uvicorn's short close).

The generator is the `openai` backend on the benchmark fixture upstream streaming slowly, so the workers
load no model. With two workers, streams are opened until both workers serve one (read from each
worker's live in-flight gauge in PROMETHEUS_MULTIPROC_DIR), so the drain is seen on both.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from benchmarks.harness.fixture_upstream import FixtureBehaviour, gateway_env, running_fixture_upstream
from services.core.ports import free_port
from services.evaluation.local_server import hybridllm_command, service_env, stop, wait_ready
from services.gateway.draining import CLOSE_AFTER_DRAIN_S, RETRY_AFTER_S
from tests.gateway.metrics_scrape import by_process

pytestmark = pytest.mark.integration

GRACE_S = 15
STREAM_TOKENS = 60
# 60 tokens 0.1 s apart: a stream lasts about 6 s, long enough to open streams on both workers and send
# SIGTERM while all of them are in the middle.
SLOW = FixtureBehaviour(delay_s=0.0, tokens=STREAM_TOKENS, inter_token_s=0.1)
BURST = 3
MAX_STREAMS = 12
# From SIGTERM to /readyz 503: the supervisor looks at its signals every 0.5 s, then signals the workers.
READY_FLIP_BOUND_S = 3.0
EXIT_BOUND_S = GRACE_S + CLOSE_AFTER_DRAIN_S + 5


@pytest.fixture(scope="module")
def slow_upstream() -> Iterator[str]:
    with running_fixture_upstream(SLOW) as url:
        yield url


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    metrics_dir: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def serve(upstream: str, tmp_path: Path, workers: int) -> Iterator[Served]:
    metrics_dir = tmp_path / "prom"
    metrics_dir.mkdir()
    env = service_env(
        {
            **gateway_env(upstream, 16),
            "HYBRID_SERVER__WORKERS": str(workers),
            "HYBRID_SERVER__SHUTDOWN_GRACE_S": str(GRACE_S),
            "HYBRID_DATA_DIR": str(tmp_path / "data"),
            "HYBRID_ROUTER__MODEL_DIR": str(tmp_path / "no-router"),
            "HYBRID_OBSERVABILITY__LOG_LEVEL": "INFO",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
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
        wait_ready(base_url, process, log_path, timeout_s=180)
        yield Served(process, base_url, log_path, metrics_dir)
    finally:
        stop(process)


@pytest.fixture
def one_worker(slow_upstream: str, tmp_path: Path) -> Iterator[Served]:
    yield from serve(slow_upstream, tmp_path, workers=1)


@pytest.fixture
def two_workers(slow_upstream: str, tmp_path: Path) -> Iterator[Served]:
    yield from serve(slow_upstream, tmp_path, workers=2)


@dataclass
class Stream:
    """One streaming request on its own connection, read in a thread."""

    base_url: str
    started: threading.Event = field(default_factory=threading.Event)
    status: int | None = None
    events: list[str] = field(default_factory=list)
    error: str | None = None
    thread: threading.Thread | None = None

    def begin(self) -> Stream:
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        return self

    def wait_started(self) -> None:
        assert self.started.wait(timeout=30), "the stream never started"
        assert self.error is None, self.error

    def _read(self) -> None:
        body = {"model": "prompt", "messages": [{"role": "user", "content": "Tell me."}], "stream": True}
        body["max_tokens"] = STREAM_TOKENS
        try:
            with httpx.stream("POST", self.base_url + "/v1/chat/completions", json=body, timeout=60) as resp:
                self.status = resp.status_code
                for line in resp.iter_lines():
                    if line.startswith("data: "):
                        self.events.append(line[6:])
                        self.started.set()
        except Exception as exc:  # reported by the test, not lost in the thread
            self.error = repr(exc)
        finally:
            self.started.set()

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def assert_complete(self) -> None:
        assert self.thread is not None
        self.thread.join(timeout=60)
        assert self.error is None, f"stream broken by the shutdown: {self.error}"
        assert self.status == 200
        assert self.events[-1] == "[DONE]", self.events[-3:]
        chunks = [json.loads(event) for event in self.events[:-1]]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        assert text.split() == ["token"] * STREAM_TOKENS, text


def in_flight_by_worker(metrics_dir: Path) -> dict[str, float]:
    """hybrid_requests_in_flight per live worker, from its own file (gauge_livesum_<pid>.db)."""
    return by_process(metrics_dir, "gauge_livesum_*.db", "hybrid_requests_in_flight")


def open_streams(served: Served, workers: int) -> list[Stream]:
    """Streams on fresh connections, a burst at a time, until every worker serves one. The kernel picks
    the worker: one at a time, an idle worker tends to take every connection; a burst finds it busy."""
    streams: list[Stream] = []
    busy: list[str] = []
    while len(streams) < MAX_STREAMS:
        burst = [Stream(served.base_url).begin() for _ in range(BURST)]
        for stream in burst:
            stream.wait_started()
        streams += burst
        busy = [pid for pid, count in in_flight_by_worker(served.metrics_dir).items() if count > 0]
        if len(busy) >= workers:
            break
    assert len(busy) == workers, f"{len(streams)} streams landed on workers {busy} only"
    assert all(stream.running for stream in streams), "a stream ended before SIGTERM: make them longer"
    return streams


@dataclass
class DrainView:
    """What new clients saw while the streams drained."""

    readiness: list[str] = field(default_factory=list)
    first_503_after_s: float | None = None
    new_request: httpx.Response | None = None


def watch_the_drain(base_url: str, streams: list[Stream], signalled: float) -> DrainView:
    """Readiness on fresh connections, kept while every stream is still in flight (so every worker
    still has one to drain), and one new API request once /readyz says 503."""
    view = DrainView()
    body = {"model": "prompt", "messages": [{"role": "user", "content": "Hi."}], "max_tokens": 2}
    while all(stream.running for stream in streams):
        try:
            with httpx.Client(timeout=2) as fresh:
                code = str(fresh.get(base_url + "/readyz").status_code)
                if code == "503" and view.new_request is None:
                    view.new_request = fresh.post(base_url + "/v1/chat/completions", json=body)
        except httpx.TransportError as exc:
            code = type(exc).__name__
        if all(stream.running for stream in streams):
            view.readiness.append(code)
            if code == "503" and view.first_503_after_s is None:
                view.first_503_after_s = time.monotonic() - signalled
        time.sleep(0.05)
    return view


def drain_and_check(served: Served, workers: int) -> None:
    streams = open_streams(served, workers)
    signalled = time.monotonic()
    served.process.send_signal(signal.SIGTERM)

    view = watch_the_drain(served.base_url, streams, signalled)
    for stream in streams:
        stream.assert_complete()

    assert view.readiness, "the streams ended before readiness could be checked"
    # Until the 503 the supervisor may not yet have signalled the workers; after it, only 503s.
    first = view.readiness.index("503") if "503" in view.readiness else len(view.readiness)
    assert set(view.readiness[:first]) <= {"200"} and set(view.readiness[first:]) == {"503"}, view.readiness
    assert view.first_503_after_s is not None and view.first_503_after_s < READY_FLIP_BOUND_S
    refused = view.new_request
    assert refused is not None and refused.status_code == 503, refused and refused.text
    assert refused.headers["retry-after"] == str(round(RETRY_AFTER_S))
    assert refused.json()["error"]["code"] == "shutting_down"

    try:
        code = served.process.wait(timeout=EXIT_BOUND_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`hybridllm serve` still running {EXIT_BOUND_S} s after SIGTERM")
    assert code == 0, served.log()[-3000:]
    assert time.monotonic() - signalled < EXIT_BOUND_S
    assert served.log().count('"message": "drained in') == workers, served.log()[-3000:]


def test_sigterm_drains_the_streams_then_exits_zero(one_worker: Served) -> None:
    drain_and_check(one_worker, workers=1)


def test_sigterm_drains_every_worker_then_exits_zero(two_workers: Served) -> None:
    drain_and_check(two_workers, workers=2)
