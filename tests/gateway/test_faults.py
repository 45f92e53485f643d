"""Fault injection: a controllable upstream (500s, refused connections, answers past the timeout, death
mid-stream) behind a live gateway; status codes, fallbacks, the circuit breaker and metrics must agree."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.harness.fixture_upstream import FixtureBehaviour
from services.core.settings import Settings, load_settings
from services.gateway.app import create_app
from tests.conftest import MODEL_CACHE, serve_in_thread
from tests.gateway.fault_upstream import FaultUpstreamServer, fault_upstream
from tests.gateway.metrics_scrape import scrape, total, value

pytestmark = pytest.mark.integration

QUESTION = [{"role": "user", "content": "Say something."}]
# Long enough that no test reaches it by slowness; tests that need the cool-down over shorten it.
COOLDOWN_S = 30.0
SHORT_COOLDOWN_S = 0.5


def _settings(
    tmp: Path, primary: str, backup: str | None, primary_timeout_s: float = 1.0, **server: Any
) -> Settings:
    upstream = {"backend": "openai", "model": "fixture", "max_retries": 0}
    return load_settings(
        data_dir=str(MODEL_CACHE),
        default_pipeline="prompt",
        generator={**upstream, "name": "primary", "base_url": primary, "timeout_s": primary_timeout_s},
        fallback_generator={**upstream, "name": "backup", "base_url": backup, "timeout_s": 5.0}
        if backup
        else None,
        circuit={"failure_threshold": 3, "window_s": 30, "cooldown_s": COOLDOWN_S},
        rag={"index_dir": str(tmp / "no-index"), "watch_interval_s": 0},
        server=server,
    )


@pytest.fixture(scope="module")
def backup() -> Iterator[FaultUpstreamServer]:
    with fault_upstream() as server:
        yield server


@pytest.fixture
def primary() -> Iterator[FaultUpstreamServer]:
    with fault_upstream() as server:
        yield server


@pytest.fixture
def chained_app(tmp_path: Path, primary: FaultUpstreamServer, backup: FaultUpstreamServer) -> Iterator[Any]:
    app = create_app(_settings(tmp_path, primary.base_url, backup.base_url))
    with serve_in_thread(app) as url:
        app.state.url = url
        yield app


@pytest.fixture
def chained(chained_app: Any) -> str:
    return str(chained_app.state.url)


def _shorten_cooldown(app: Any) -> None:
    app.state.gateway.components.primary.breaker.cooldown_s = SHORT_COOLDOWN_S


@pytest.fixture
def alone(tmp_path: Path, primary: FaultUpstreamServer) -> Iterator[str]:
    """The primary without a fallback (so no circuit either)."""
    with serve_in_thread(create_app(_settings(tmp_path, primary.base_url, None))) as url:
        yield url


@pytest.fixture
def deadline(tmp_path: Path, primary: FaultUpstreamServer) -> Iterator[str]:
    """A request deadline (1.5 s) shorter than the backend's own timeout (10 s)."""
    settings = _settings(tmp_path, primary.base_url, None, primary_timeout_s=10.0, request_timeout_s=1.5)
    with serve_in_thread(create_app(settings)) as url:
        yield url


def _chat(url: str, **extra: Any) -> httpx.Response:
    body = {"model": "prompt", "messages": QUESTION, "max_tokens": 8, **extra}
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=30)


def _stream_events(url: str, max_tokens: int = 8) -> tuple[int, list[str]]:
    body = {"model": "prompt", "messages": QUESTION, "max_tokens": max_tokens, "stream": True}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as resp:
        lines = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
        return resp.status_code, lines


def _metric(url: str, name: str, **labels: str) -> float:
    return value(scrape(url), name, **labels)


def _fallbacks(url: str) -> float:
    # A labelled counter appears at its first increment.
    return total(scrape(url), "hybrid_fallbacks_total", from_backend="primary", to_backend="backup")


def test_upstream_500_is_answered_by_the_fallback(chained: str, primary: FaultUpstreamServer) -> None:
    primary.set_mode("error_500")
    resp = _chat(chained)
    assert resp.status_code == 200
    hybrid = resp.json()["hybrid"]
    assert hybrid["fallback"] == {"from": "primary", "to": "backup"}
    assert hybrid["backend"]["name"] == "backup"
    assert _fallbacks(chained) == 1
    assert _metric(chained, "hybrid_circuit_state", backend="primary") == 0  # one failure: still closed


def test_circuit_opens_skips_the_primary_and_closes_after_a_good_probe(
    chained_app: Any, chained: str, primary: FaultUpstreamServer
) -> None:
    primary.set_mode("error_500")
    for _ in range(3):
        assert _chat(chained).status_code == 200
    assert primary.upstream.requests == 3
    assert _metric(chained, "hybrid_circuit_state", backend="primary") == 1
    for _ in range(4):  # open: straight to the fallback, the primary sees nothing
        resp = _chat(chained, stream=False)
        assert resp.status_code == 200 and resp.json()["hybrid"]["backend"]["name"] == "backup"
    assert primary.upstream.requests == 3
    assert _fallbacks(chained) == 7

    primary.set_mode("ok")
    _shorten_cooldown(chained_app)
    time.sleep(SHORT_COOLDOWN_S + 0.1)
    resp = _chat(chained)  # the half-open probe
    assert resp.status_code == 200
    assert resp.json()["hybrid"]["backend"]["name"] == "primary"
    assert "fallback" not in resp.json()["hybrid"]
    assert _metric(chained, "hybrid_circuit_state", backend="primary") == 0
    assert primary.upstream.requests == 4


def test_failed_probe_opens_the_circuit_again(
    chained_app: Any, chained: str, primary: FaultUpstreamServer
) -> None:
    primary.set_mode("error_500")
    for _ in range(3):
        _chat(chained)
    _shorten_cooldown(chained_app)
    time.sleep(SHORT_COOLDOWN_S + 0.1)
    assert _chat(chained).status_code == 200  # the probe fails, the fallback answers
    assert primary.upstream.requests == 4
    assert _metric(chained, "hybrid_circuit_state", backend="primary") == 1


def test_refused_connection_falls_back_streaming_too(chained: str, primary: FaultUpstreamServer) -> None:
    primary.set_mode("refuse")
    status, events = _stream_events(chained)
    assert status == 200
    assert events[-1] == "[DONE]"
    final = json.loads(events[-2])
    assert final["hybrid"]["fallback"] == {"from": "primary", "to": "backup"}
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1])
    assert "token" in text
    assert _fallbacks(chained) == 1


def test_primary_slower_than_its_timeout_falls_back(chained: str, primary: FaultUpstreamServer) -> None:
    primary.set_mode("slow")
    primary.upstream.slow_s = 3.0  # the primary's timeout_s is 1.0
    resp = _chat(chained)
    assert resp.status_code == 200
    assert resp.json()["hybrid"]["fallback"] == {"from": "primary", "to": "backup"}


def test_death_mid_stream_ends_with_an_error_event_and_no_fallback(
    chained: str, primary: FaultUpstreamServer
) -> None:
    primary.set_mode("die_mid_stream")
    status, events = _stream_events(chained)
    assert status == 200
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] == "generation_failed" and error["type"] == "server_error"
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-2])
    assert text.startswith("part0")  # text had left: no backend switch that would splice two answers
    assert _fallbacks(chained) == 0
    assert (
        _metric(chained, "hybrid_requests_total", pipeline="prompt", route="prompt", status="server_error")
        == 1
    )


@pytest.mark.parametrize(
    ("mode", "status", "code"),
    [
        ("error_500", 502, "generation_failed"),
        ("refuse", 502, "generation_failed"),
        ("slow", 504, "generation_timeout"),
    ],
)
def test_without_a_fallback_the_failure_is_the_status(
    alone: str, primary: FaultUpstreamServer, mode: Any, status: int, code: str
) -> None:
    primary.set_mode(mode)
    resp = _chat(alone)
    assert resp.status_code == status
    assert resp.json()["error"]["code"] == code
    assert (
        _metric(alone, "hybrid_requests_total", pipeline="prompt", route="prompt", status="server_error") == 1
    )


def test_request_deadline_gives_504_naming_the_setting(deadline: str, primary: FaultUpstreamServer) -> None:
    primary.set_mode("slow")
    primary.upstream.slow_s = 3.0
    resp = _chat(deadline)
    assert resp.status_code == 504
    error = resp.json()["error"]
    assert error["code"] == "generation_timeout"
    assert "server.request_timeout_s" in error["message"]

    # Streaming: text flows (past the privacy hold-back) until the deadline cuts it with an error event.
    primary.set_mode("ok")
    primary.upstream.behaviour = FixtureBehaviour(delay_s=0.0, tokens=40, inter_token_s=0.1)
    status, events = _stream_events(deadline, max_tokens=40)
    assert status == 200 and events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "generation_timeout"
    assert json.loads(events[1])["choices"][0]["delta"]["content"]
