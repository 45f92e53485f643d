"""Limits: per-key rate limits and daily budgets (429 + Retry-After), body size (413, chunked too),
message count, prompt tokens and max_tokens (400 naming the limit), admin keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.core.errors import RateLimited
from services.core.settings import LimitsSettings, load_settings
from services.gateway.app import create_app
from services.gateway.auth import sha256_hex
from services.gateway.limits import KeyLimiter, TokenBucket
from tests.conftest import MODEL_CACHE, serve_in_thread
from tests.gateway.fault_upstream import FaultUpstreamServer, fault_upstream

QUESTION = [{"role": "user", "content": "Say something."}]
KEY_A, KEY_B, ADMIN = "key-a", "key-b", "admin-key"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


# ----------------------------------------------------------------------------- unit


@pytest.mark.unit
def test_token_bucket_refills_at_its_rate_and_goes_negative() -> None:
    bucket = TokenBucket(capacity=10, per_second=2, now=0.0)
    bucket.take(25, now=0.0)
    assert bucket.level(0.0) == -15
    assert bucket.seconds_until(1.0, now=0.0) == pytest.approx(8.0)
    assert bucket.level(100.0) == 10  # capped at capacity
    with pytest.raises(ValueError, match="capacity must be > 0, got 0"):
        TokenBucket(capacity=0, per_second=1, now=0.0)


@pytest.mark.unit
def test_requests_per_minute_per_key_with_retry_after() -> None:
    clock = FakeClock()
    limiter = KeyLimiter(LimitsSettings(requests_per_minute=3), clock=clock)
    for _ in range(3):
        limiter.admit("a")
    with pytest.raises(RateLimited, match="3 requests per minute") as caught:
        limiter.admit("a")
    assert caught.value.retry_after_s == pytest.approx(20.0)  # one request refills in 60/3 s
    limiter.admit("b")  # other keys are not affected
    clock.now += 20.0
    limiter.admit("a")


@pytest.mark.unit
def test_tokens_per_minute_are_debited_after_the_request() -> None:
    clock = FakeClock()
    limiter = KeyLimiter(LimitsSettings(tokens_per_minute=600), clock=clock)
    limiter.admit("a")
    limiter.record("a", 900, 0.0)  # 300 over: 30 s at 10 tokens/s until the bucket is positive again
    with pytest.raises(RateLimited, match="600 tokens per minute") as caught:
        limiter.admit("a")
    assert caught.value.retry_after_s == pytest.approx(30.1)
    clock.now += 31
    limiter.admit("a")


@pytest.mark.unit
def test_daily_budgets_reset_at_utc_midnight() -> None:
    wall = FakeClock()
    wall.now = 86_400 * 100 + 3_600.0  # 01:00 UTC
    limiter = KeyLimiter(LimitsSettings(tokens_per_day=1000, usd_per_day=0.01), wall_clock=wall)
    limiter.record("a", 999, 0.0)
    limiter.admit("a")
    limiter.record("a", 1, 0.0)
    with pytest.raises(RateLimited, match="daily token budget") as caught:
        limiter.admit("a")
    assert caught.value.code == "budget_exceeded"
    assert caught.value.retry_after_s == pytest.approx(23 * 3600)
    limiter.record("b", 0, 0.02)
    with pytest.raises(RateLimited, match="0.01 USD"):
        limiter.admit("b")
    wall.now += 23 * 3600
    limiter.admit("a")
    limiter.admit("b")


@pytest.mark.unit
def test_limiter_forgets_the_least_recent_keys_beyond_its_bound() -> None:
    limiter = KeyLimiter(LimitsSettings(requests_per_minute=1, max_tracked_keys=2), clock=FakeClock())
    limiter.admit("a")
    limiter.admit("b")
    limiter.admit("c")  # "a" forgotten: a fresh bucket
    limiter.admit("a")
    with pytest.raises(RateLimited):
        limiter.admit("c")


@pytest.mark.unit
def test_limits_off_by_default() -> None:
    limiter = KeyLimiter(LimitsSettings())
    assert not limiter.enabled
    for _ in range(1000):
        limiter.admit("a")


# ----------------------------------------------------------------------------- live server


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultUpstreamServer]:
    with fault_upstream() as server:
        yield server


def _server(tmp: Path, upstream: FaultUpstreamServer, **overrides: Any) -> Any:
    settings = load_settings(
        data_dir=str(MODEL_CACHE),
        default_pipeline="prompt",
        generator={"backend": "openai", "model": "fixture", "base_url": upstream.base_url},
        rag={"index_dir": str(tmp / "no-index"), "watch_interval_s": 0},
        **overrides,
    )
    return serve_in_thread(create_app(settings))


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, upstream: FaultUpstreamServer) -> Iterator[str]:
    auth = {
        "enabled": True,
        "api_key_sha256": [sha256_hex(KEY_A), sha256_hex(KEY_B)],
        "admin_key_sha256": [sha256_hex(ADMIN)],
    }
    server = {"max_body_bytes": 4096, "max_messages": 4, "max_prompt_tokens": 64, "max_completion_tokens": 32}
    with _server(
        tmp_path_factory.mktemp("limits"),
        upstream,
        auth=auth,
        server=server,
    ) as url:
        yield url


def _post(url: str, key: str | None = KEY_A, **body: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    payload = {"model": "prompt", "messages": QUESTION, "max_tokens": 4, **body}
    return httpx.post(url + "/v1/chat/completions", json=payload, headers=headers, timeout=30)


def _error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    error: dict[str, Any] = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


@pytest.mark.integration
def test_rate_limit_gives_openai_shaped_429_with_retry_after(
    tmp_path: Path, upstream: FaultUpstreamServer
) -> None:
    auth = {"enabled": True, "api_key_sha256": [sha256_hex(KEY_A), sha256_hex(KEY_B)]}
    with _server(tmp_path, upstream, auth=auth, limits={"requests_per_minute": 3}) as url:
        for _ in range(3):
            assert _post(url, KEY_B).status_code == 200
        resp = _post(url, KEY_B)
        assert _post(url, KEY_A).status_code == 200  # another key has its own bucket
    error = _error(resp, 429)
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    assert "requests per minute" in error["message"]
    assert 1 <= int(resp.headers["Retry-After"]) <= 20


@pytest.mark.integration
def test_api_key_required_and_admin_endpoints_need_an_admin_key(limited: str) -> None:
    assert _error(_post(limited, None), 401)["code"] == "invalid_api_key"
    assert _error(_post(limited, "wrong"), 401)["code"] == "invalid_api_key"
    routes = [r for r in httpx.get(limited + "/openapi.json").json()["paths"] if r.startswith("/admin")]
    assert routes, "no admin endpoints exposed"
    path = routes[0]
    method = next(iter(httpx.get(limited + "/openapi.json").json()["paths"][path]))
    for key in (None, KEY_A):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        resp = httpx.request(method.upper(), limited + path, headers=headers, json={}, timeout=30)
        assert resp.status_code == 401, (path, key, resp.text)
    resp = httpx.request(
        method.upper(), limited + path, headers={"Authorization": f"Bearer {ADMIN}"}, json={}
    )
    assert resp.status_code != 401


@pytest.mark.integration
@pytest.mark.parametrize("chunked", [False, True])
def test_body_over_the_limit_gives_413(limited: str, chunked: bool) -> None:
    big = b'{"model": "prompt", "messages": [{"role": "user", "content": "' + b"x" * 8000 + b'"}]}'

    def body() -> Iterator[bytes]:  # a generator body is sent chunked, without Content-Length
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    resp = httpx.post(
        limited + "/v1/chat/completions",
        content=body() if chunked else big,
        headers={"Authorization": f"Bearer {KEY_A}", "content-type": "application/json"},
        timeout=30,
    )
    error = _error(resp, 413)
    assert error["code"] == "payload_too_large" and "4096 bytes" in error["message"]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"messages": QUESTION * 5}, "messages", "limit of 4"),
        ({"messages": [{"role": "user", "content": "word " * 400}]}, "messages", "limit of 64"),
        ({"max_tokens": 33}, "max_tokens", "limit of 32"),
    ],
)
def test_request_shape_limits_give_400_naming_the_limit(
    limited: str, body: dict[str, Any], param: str, says: str
) -> None:
    error = _error(_post(limited, KEY_A, **body), 400)
    assert error["param"] == param and says in error["message"]


@pytest.mark.integration
def test_token_budget_per_key(tmp_path: Path, upstream: FaultUpstreamServer) -> None:
    """The fixture answers 8 completion tokens: a 20-token daily budget admits two requests."""
    auth = {"enabled": True, "api_key_sha256": [sha256_hex(KEY_A), sha256_hex(KEY_B)]}
    with _server(tmp_path, upstream, auth=auth, limits={"tokens_per_day": 20}) as url:
        statuses = [_post(url, KEY_A, max_tokens=8).status_code for _ in range(4)]
        assert statuses[0] == 200 and statuses[-1] == 429
        resp = _post(url, KEY_A)
        assert _error(resp, 429)["code"] == "budget_exceeded"
        assert int(resp.headers["Retry-After"]) > 0
        assert _post(url, KEY_B).status_code == 200
