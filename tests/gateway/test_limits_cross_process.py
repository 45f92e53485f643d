"""One limit across server processes: two `hybridllm serve` (one with two workers) on one Redis.

Requests alternate between the servers, each on a new connection so the first server's kernel hands them
to either worker; exactly the limit passes in total and the rest get an OpenAI-shaped 429 with
Retry-After. The generator is the `openai` backend on the fixture upstream, so no process loads a model.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from benchmarks.harness.fixture_upstream import FixtureBehaviour, gateway_env, running_fixture_upstream
from services.evaluation.local_server import started_service
from services.gateway.auth import sha256_hex

API_KEY = "sk-cross-process-test-key"
LIMIT = 4  # requests per minute: one refills every 15 s, far longer than the test's requests take
SENT = 12


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with running_fixture_upstream(FixtureBehaviour(delay_s=0.002, tokens=4)) as url:
        yield url


def _env(upstream: str, redis_url: str, tmp: Path, workers: int) -> dict[str, str]:
    return {
        **gateway_env(upstream, 8),
        "HYBRID_SERVER__WORKERS": str(workers),
        "HYBRID_DATA_DIR": str(tmp / "data"),
        "HYBRID_ROUTER__MODEL_DIR": str(tmp / "no-router"),
        "HYBRID_AUTH__ENABLED": "true",
        "HYBRID_AUTH__API_KEY_SHA256": json.dumps([sha256_hex(API_KEY)]),
        "HYBRID_LIMITS__BACKEND": "redis",
        "HYBRID_LIMITS__REQUESTS_PER_MINUTE": str(LIMIT),
        "HYBRID_REDIS__URL": redis_url,
    }


@pytest.mark.integration
def test_two_servers_on_one_redis_admit_the_limit_once(upstream: str, redis_url: str, tmp_path: Path) -> None:
    with contextlib.ExitStack() as servers:
        base_urls = []
        for workers in (2, 1):
            env = _env(upstream, redis_url, tmp_path, workers)
            handle = servers.enter_context(started_service(None, extra_env=env, ready_timeout_s=180))
            base_urls.append(handle.base_url)
        body = {"model": "prompt", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 4}
        headers = {"Authorization": f"Bearer {API_KEY}", "connection": "close"}
        responses = []
        with httpx.Client(timeout=30) as client:
            for i in range(SENT):
                url = base_urls[i % 2]
                responses.append((url, client.post(url + "/v1/chat/completions", json=body, headers=headers)))

    passed = [url for url, resp in responses if resp.status_code == 200]
    assert len(passed) == LIMIT, [resp.status_code for _, resp in responses]
    assert set(passed) == set(base_urls)  # both servers admitted some: the count is one
    refused = [resp for _, resp in responses if resp.status_code != 200]
    assert len(refused) == SENT - LIMIT
    for resp in refused:
        assert resp.status_code == 429, resp.text
        assert resp.json()["error"]["code"] == "rate_limit_exceeded"
        assert 1 <= int(resp.headers["Retry-After"]) <= 60 / LIMIT
    with redis.Redis.from_url(redis_url) as store:
        names = [name.decode() for name in store.keys("*")]
    assert names == [f"hybrid:limits:{{{sha256_hex(API_KEY)[:12]}}}:requests"]
