"""The Redis limit store against a real redis-server: key names and TTLs, one count shared by several
clients, the scripts surviving a script-cache flush, the settings check, and the store failing under a
live gateway (allow and deny, the metric, one log line) and coming back without a gateway restart."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.core.errors import ConfigError
from services.core.redis_client import connect
from services.core.settings import AuthSettings, LimitsSettings, RedisSettings, load_settings
from services.gateway.auth import KeyChecker, sha256_hex
from services.gateway.limit_store import LimitStoreError
from services.gateway.limit_store_redis import RedisLimitStore
from services.gateway.limits import STORE_RETRY_AFTER_S, limit_store_failure_log
from tests.gateway.fault_upstream import FaultUpstreamServer, fault_upstream
from tests.gateway.metrics_scrape import scrape, total
from tests.gateway.test_limits import FakeClock, serve_gateway
from tests.redis_server import RedisServer

RAW_KEY = "sk-raw-api-key-never-stored"
FAILURES = "hybrid_limit_store_failures_total"


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Any]:
    redis = connect(RedisSettings(url=redis_url, op_timeout_s=5.0))
    yield redis
    await redis.aclose()


async def _server_now(client: Any) -> float:
    seconds, micros = await client.time()
    return float(seconds) + float(micros) / 1e6


# ----------------------------------------------------------------------------- the store on a real Redis


@pytest.mark.unit
async def test_keys_hold_the_hashed_key_id_under_the_prefix_and_expire(client: Any) -> None:
    checker = KeyChecker(AuthSettings(enabled=True, api_key_sha256=[sha256_hex(RAW_KEY)]))
    key_id = checker.identify(f"Bearer {RAW_KEY}")
    settings = LimitsSettings(requests_per_minute=60, tokens_per_minute=600, tokens_per_day=1000)
    store = RedisLimitStore(client, settings, key_prefix="hybrid:")
    assert await store.admit(key_id) is None
    await store.record(key_id, 900, 0.001)

    stored = sorted(k.decode() for k in await client.keys("*"))
    assert stored == [f"hybrid:limits:{{{key_id}}}:{part}" for part in ("daily", "requests", "tokens")]
    assert not any(RAW_KEY in name or sha256_hex(RAW_KEY) in name for name in stored)
    requests, tokens, daily = store.keys(key_id)
    # A bucket lives until it would be full again: 1 request at 1/s; 900 tokens at 10/s. Day: to 00:00 UTC.
    assert 0 < await client.pttl(requests) <= 2_000
    assert 89_000 < await client.pttl(tokens) <= 91_000
    now = await _server_now(client)
    assert await client.ttl(daily) == pytest.approx(86_400 - now % 86_400, abs=2)
    # The day is the Redis server's, not this process's.
    assert int(await client.hget(daily, "day")) == int(now // 86_400)
    assert float(await client.hget(daily, "usd")) == pytest.approx(0.001)


@pytest.mark.unit
async def test_an_idle_key_disappears_and_then_reads_as_a_full_bucket(client: Any) -> None:
    settings = LimitsSettings(requests_per_minute=60)
    store = RedisLimitStore(client, settings, key_prefix="hybrid:")
    for _ in range(3):
        assert await store.admit("idle") is None
    for _ in range(40):  # 3 requests refill in 3 s at 1/s; the key's TTL is 4 s at most
        if not await client.exists(*store.keys("idle")):
            break
        await asyncio.sleep(0.2)
    assert await client.keys("*") == []
    assert await store.admit("idle") is None


@pytest.mark.unit
async def test_clients_share_one_count_and_never_overshoot_it(redis_url: str) -> None:
    """Two clients (two replicas, say) race for a 5-per-minute bucket: exactly 5 requests pass."""
    settings = LimitsSettings(requests_per_minute=5)
    clients = [connect(RedisSettings(url=redis_url, op_timeout_s=5.0)) for _ in range(2)]
    stores = [RedisLimitStore(c, settings, key_prefix="hybrid:") for c in clients]
    try:
        answers = await asyncio.gather(*(stores[i % 2].admit("shared") for i in range(20)))
    finally:
        for store in stores:
            await store.aclose()
    assert sum(answer is None for answer in answers) == 5
    refusals = [answer for answer in answers if answer is not None]
    assert {r.limit for r in refusals} == {"requests_per_minute"}
    assert all(0 < r.retry_after_s <= 12.0 for r in refusals)  # one request refills in 60/5 s


@pytest.mark.unit
async def test_scripts_are_loaded_again_after_a_script_cache_flush(client: Any) -> None:
    store = RedisLimitStore(client, LimitsSettings(requests_per_minute=2), key_prefix="hybrid:")
    assert await store.admit("k") is None
    await client.script_flush()  # as after a Redis restart or failover: EVALSHA answers NOSCRIPT
    assert await store.admit("k") is None
    refusal = await store.admit("k")
    assert refusal is not None and refusal.limit == "requests_per_minute"


@pytest.mark.unit
async def test_an_unreachable_redis_is_a_store_error(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)  # never started: nothing listens on its port
    client = connect(RedisSettings(url=server.url, connect_timeout_s=0.5))
    store = RedisLimitStore(client, LimitsSettings(requests_per_minute=2), key_prefix="hybrid:")
    with pytest.raises(LimitStoreError, match="ConnectionError"):
        await store.admit("k")
    with pytest.raises(LimitStoreError):
        await store.record("k", 10, 0.0)
    await store.aclose()


@pytest.mark.unit
async def test_a_redis_slower_than_op_timeout_is_a_store_error(redis_url: str, client: Any) -> None:
    impatient = connect(RedisSettings(url=redis_url, op_timeout_s=0.25))
    store = RedisLimitStore(impatient, LimitsSettings(requests_per_minute=2), key_prefix="hybrid:")
    assert await store.admit("k") is None  # connected and the script loaded
    await client.execute_command("CLIENT", "PAUSE", "2000", "ALL")  # every other client's command waits
    try:
        started = time.monotonic()
        with pytest.raises(LimitStoreError, match="Timeout"):
            await store.admit("k")
        assert time.monotonic() - started < 1.5
    finally:
        await client.execute_command("CLIENT", "UNPAUSE")
    assert await store.admit("other") is None  # the store answers again, on a new connection
    await store.aclose()


@pytest.mark.unit
def test_failure_log_says_it_once_then_at_most_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(0.0)
    log = limit_store_failure_log(clock=clock)
    error = LimitStoreError("ConnectionError: refused")
    with caplog.at_level(logging.INFO, logger="services.gateway.limits"):
        for _ in range(100):
            log.failed(str(error), "action=allow")
            clock.now += 0.1
        clock.now += 60
        log.failed(str(error), "action=allow")
        log.succeeded()
        log.succeeded()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3, messages
    assert messages[0] == "rate-limit store failed (ConnectionError: refused); action=allow"
    assert "still failing" in messages[1] and "100 calls failed since the last message" in messages[1]
    assert "answers again after 101 failed calls" in messages[2]


@pytest.mark.unit
def test_redis_backend_without_a_url_names_both_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HYBRID_REDIS__URL", raising=False)
    with pytest.raises(ConfigError, match=r"limits\.backend is redis but redis\.url is not set"):
        load_settings(limits={"backend": "redis"})
    monkeypatch.setenv("HYBRID_LIMITS__BACKEND", "redis")
    with pytest.raises(ConfigError, match=r"redis\.url"):
        load_settings()
    monkeypatch.setenv("HYBRID_REDIS__URL", "redis://127.0.0.1:6379/0")
    assert load_settings().limits.backend == "redis"


# ---------------------------------------------------------------- the store failing under a gateway


@pytest.fixture(scope="module")
def upstream() -> Any:
    with fault_upstream() as server:
        yield server


def _chat(url: str) -> httpx.Response:
    body = {"model": "prompt", "messages": [{"role": "user", "content": "Hi."}], "max_tokens": 4}
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=30)


def _wait_for_the_debit(url: str) -> None:
    """The gateway debits a request after its response has gone out: wait until that write landed."""
    import redis

    with redis.Redis.from_url(url) as client:
        for _ in range(100):
            if list(client.scan_iter("hybrid:limits:*:tokens")):
                return
            time.sleep(0.05)
    raise AssertionError("the first request's tokens were never debited")


BACKOFF_S = 0.3


@pytest.mark.integration
@pytest.mark.parametrize("policy", ["allow", "deny"])
def test_store_failure_policy_then_recovery_without_a_restart(
    tmp_path: Path, upstream: FaultUpstreamServer, policy: str, caplog: pytest.LogCaptureFixture
) -> None:
    redis = RedisServer(tmp_path / "redis")  # this test's own server, stopped and started below
    redis.start()
    # A token limit too, so finished requests are debited (and their debits lost while Redis is down).
    limits = {
        "backend": "redis",
        "on_store_failure": policy,
        "requests_per_minute": 2,
        "tokens_per_minute": 100_000,
    }
    try:
        with (
            caplog.at_level(logging.INFO, logger="services.gateway.limits"),
            serve_gateway(
                tmp_path, upstream, limits=limits, redis={"url": redis.url, "failure_backoff_s": BACKOFF_S}
            ) as url,
        ):
            assert _chat(url).status_code == 200
            _wait_for_the_debit(redis.url)
            redis.stop(kill=True)
            down = [_chat(url) for _ in range(5)]
            failures = scrape(url)
            redis.start()
            time.sleep(BACKOFF_S)  # past the back-off that followed the last failure
            back = [_chat(url).status_code for _ in range(3)]
    finally:
        redis.stop()

    if policy == "allow":
        assert [r.status_code for r in down] == [200] * 5
    else:
        for resp in down:
            assert resp.status_code == 503, resp.text
            assert resp.headers["Retry-After"] == str(round(STORE_RETRY_AFTER_S))
            error = resp.json()["error"]
            assert error["code"] == "limit_store_unavailable" and error["type"] == "server_error"
    assert total(failures, FAILURES, action=policy) == 5
    # Requests let through also lose their token debit; refused ones have none to lose.
    assert total(failures, FAILURES, action="unrecorded") == (5 if policy == "allow" else 0)
    # The restarted Redis is empty: the limit counts from zero again, through the same gateway.
    assert back == [200, 200, 429]
    said = [r.getMessage() for r in caplog.records if r.name == "services.gateway.limits"]
    assert len(said) == 2, said  # one line when it failed, one when it answered again (not one per call)
    assert said[0].startswith("rate-limit store failed") and said[0].endswith(f"action={policy}")
    assert said[1] == f"rate-limit store answers again after {5 if policy == 'deny' else 10} failed calls"
