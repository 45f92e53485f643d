"""Limits: per-key rate limits and daily budgets (429 + Retry-After), body size (413, chunked too),
message count, prompt tokens and max_tokens (400 naming the limit), admin keys."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.core.errors import RateLimited
from services.core.redis_client import connect
from services.core.settings import LimitsSettings, RedisSettings, load_settings
from services.gateway.app import create_app
from services.gateway.auth import sha256_hex
from services.gateway.limit_store import LimitStore, LimitStoreError
from services.gateway.limit_store_memory import MemoryLimitStore, TokenBucket
from services.gateway.limit_store_redis import RedisLimitStore
from services.gateway.limits import KeyLimiter, LimitStoreUnavailable
from tests.conftest import MODEL_CACHE, serve_in_thread
from tests.gateway.fault_upstream import FaultUpstreamServer, fault_upstream

QUESTION = [{"role": "user", "content": "Say something."}]
KEY_A, KEY_B, ADMIN = "key-a", "key-b", "admin-key"
# 01:00 UTC on day 100 of the epoch: 23 hours before the daily budgets reset.
ONE_AM = 86_400 * 100 + 3_600.0
# The Redis store reads the server's clock, which moves on while a test runs (milliseconds).
CLOCK_SLACK_S = 0.25


class FakeClock:
    def __init__(self, now: float = ONE_AM) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Limiters:
    """Builds limiters on one store kind whose clock the test moves: `clock.now += 20`."""

    kind: str
    redis_url: str | None
    clock: FakeClock = field(default_factory=FakeClock)
    stores: list[LimitStore] = field(default_factory=list)

    def make(self, **limits: Any) -> KeyLimiter:
        settings = LimitsSettings(**limits)
        store: LimitStore
        if self.redis_url is None:
            store = MemoryLimitStore(settings, clock=self.clock, wall_clock=self.clock)
        else:
            # The scripts add the offset to the Redis server's clock: the store sees the fake time.
            client = connect(RedisSettings(url=self.redis_url, op_timeout_s=5.0))
            offset = self.clock
            store = RedisLimitStore(
                client, settings, key_prefix="test:", clock_offset_s=lambda: offset.now - time.time()
            )
        self.stores.append(store)
        return KeyLimiter(settings, store)


@pytest.fixture(params=["memory", "redis"])
async def limiters(request: pytest.FixtureRequest) -> AsyncIterator[Limiters]:
    """The same behaviour tests run on the per-worker store and on the shared Redis store."""
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    subject = Limiters(kind=request.param, redis_url=url)
    yield subject
    for store in subject.stores:
        await store.aclose()


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
async def test_requests_per_minute_per_key_with_retry_after(limiters: Limiters) -> None:
    limiter = limiters.make(requests_per_minute=3)
    for _ in range(3):
        await limiter.admit("a")
    with pytest.raises(RateLimited, match="3 requests per minute") as caught:
        await limiter.admit("a")
    # one request refills in 60/3 s
    assert caught.value.retry_after_s == pytest.approx(20.0, abs=CLOCK_SLACK_S)
    await limiter.admit("b")  # other keys are not affected
    limiters.clock.now += 20.0 + CLOCK_SLACK_S
    await limiter.admit("a")
    with pytest.raises(RateLimited):
        await limiter.admit("a")


@pytest.mark.unit
async def test_tokens_per_minute_are_debited_after_the_request(limiters: Limiters) -> None:
    limiter = limiters.make(tokens_per_minute=600)
    await limiter.admit("a")
    await limiter.record("a", 900, 0.0)  # 300 over: 30 s at 10 tokens/s until the bucket is positive again
    with pytest.raises(RateLimited, match="600 tokens per minute") as caught:
        await limiter.admit("a")
    assert caught.value.retry_after_s == pytest.approx(30.1, abs=CLOCK_SLACK_S)
    limiters.clock.now += 29
    with pytest.raises(RateLimited, match="600 tokens per minute"):
        await limiter.admit("a")  # still in deficit: the refill is 10 tokens a second, no more
    limiters.clock.now += 2
    await limiter.admit("a")


@pytest.mark.unit
async def test_daily_budgets_reset_at_utc_midnight(limiters: Limiters) -> None:
    limiter = limiters.make(tokens_per_day=1000, usd_per_day=0.01)
    await limiter.record("a", 999, 0.0)
    await limiter.admit("a")
    await limiter.record("a", 1, 0.0)
    with pytest.raises(RateLimited, match=r"daily token budget of 1000 tokens .*\(1000 used\)") as caught:
        await limiter.admit("a")
    assert caught.value.code == "budget_exceeded"
    assert caught.value.retry_after_s == pytest.approx(23 * 3600, abs=CLOCK_SLACK_S)
    await limiter.record("b", 0, 0.02)
    with pytest.raises(RateLimited, match="0.01 USD"):
        await limiter.admit("b")
    limiters.clock.now += 23 * 3600 - 1  # 23:59:59: still the same day
    with pytest.raises(RateLimited, match="daily token budget"):
        await limiter.admit("a")
    limiters.clock.now += 1 + CLOCK_SLACK_S
    await limiter.admit("a")
    await limiter.admit("b")


@pytest.mark.unit
async def test_limits_off_by_default(limiters: Limiters) -> None:
    limiter = limiters.make()
    assert not limiter.enabled
    for _ in range(1000):
        await limiter.admit("a")


@pytest.mark.unit
async def test_memory_store_forgets_the_least_recent_keys_beyond_its_bound() -> None:
    settings = LimitsSettings(requests_per_minute=1, max_tracked_keys=2)
    limiter = KeyLimiter(settings, MemoryLimitStore(settings, clock=FakeClock()))
    await limiter.admit("a")
    await limiter.admit("b")
    await limiter.admit("c")  # "a" forgotten: a fresh bucket
    await limiter.admit("a")
    with pytest.raises(RateLimited):
        await limiter.admit("c")


# ----------------------------------------------------------------------------- live server


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultUpstreamServer]:
    with fault_upstream() as server:
        yield server


def serve_gateway(tmp: Path, upstream: FaultUpstreamServer, **overrides: Any) -> Any:
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
    with serve_gateway(
        tmp_path_factory.mktemp("limits"),
        upstream,
        auth=auth,
        server=server,
    ) as url:
        yield url


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings overrides for each limit store; `limits` entries are merged into a test's own."""
    if request.param == "memory":
        return {"limits": {"backend": "memory"}}
    return {"limits": {"backend": "redis"}, "redis": {"url": request.getfixturevalue("redis_url")}}


def with_limits(backend: dict[str, Any], **limits: Any) -> dict[str, Any]:
    return {**backend, "limits": {**backend["limits"], **limits}}


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
    tmp_path: Path, upstream: FaultUpstreamServer, backend: dict[str, Any]
) -> None:
    auth = {"enabled": True, "api_key_sha256": [sha256_hex(KEY_A), sha256_hex(KEY_B)]}
    settings = with_limits(backend, requests_per_minute=3)
    with serve_gateway(tmp_path, upstream, auth=auth, **settings) as url:
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
def test_token_budget_per_key(tmp_path: Path, upstream: FaultUpstreamServer, backend: dict[str, Any]) -> None:
    """The fixture answers 8 completion tokens: a 20-token daily budget admits two requests."""
    auth = {"enabled": True, "api_key_sha256": [sha256_hex(KEY_A), sha256_hex(KEY_B)]}
    settings = with_limits(backend, tokens_per_day=20)
    with serve_gateway(tmp_path, upstream, auth=auth, **settings) as url:
        statuses = [_post(url, KEY_A, max_tokens=8).status_code for _ in range(4)]
        assert statuses[0] == 200 and statuses[-1] == 429
        resp = _post(url, KEY_A)
        assert _error(resp, 429)["code"] == "budget_exceeded"
        assert int(resp.headers["Retry-After"]) > 0
        assert _post(url, KEY_B).status_code == 200


class _FailingStore:
    """A store that is down: every call fails, and the test counts how often it was asked."""

    def __init__(self) -> None:
        self.calls = 0

    async def admit(self, key_id: str) -> None:
        self.calls += 1
        raise LimitStoreError("connection refused")

    async def record(self, key_id: str, tokens: int, usd: float) -> None:
        self.calls += 1
        raise LimitStoreError("connection refused")

    async def aclose(self) -> None:
        return None


@pytest.mark.unit
async def test_a_failed_store_is_not_asked_again_within_the_backoff() -> None:
    clock = FakeClock()
    store = _FailingStore()
    actions: list[str] = []
    limiter = KeyLimiter(
        LimitsSettings(requests_per_minute=5, on_store_failure="deny"),
        store,
        on_store_failure=actions.append,
        failure_backoff_s=1.0,
        clock=clock,
    )
    for _ in range(3):
        with pytest.raises(LimitStoreUnavailable):
            await limiter.admit("k")
    assert store.calls == 1 and actions == ["deny"] * 3  # refused at once, each counted
    clock.now += 1.0
    with pytest.raises(LimitStoreUnavailable):
        await limiter.admit("k")
    assert store.calls == 2  # after the backoff one call probes the store again
