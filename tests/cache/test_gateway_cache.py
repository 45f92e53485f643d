"""The response cache through the real HTTP server and the official openai client, with the fixture
upstream as generator: hits (exact, semantic), near-misses, what is never cached (errors, truncated
answers, cancelled streams, privacy findings), SSE replay, and new index or adapter versions."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from benchmarks.harness.fixture_upstream import FixtureBehaviour
from services.core.settings import load_settings
from services.gateway.app import create_app
from services.gateway.auth import sha256_hex
from services.rag.embedder import build_query_embedder
from services.rag.ingest import ingest
from tests.conftest import MODEL_CACHE, REPO_ROOT, serve_in_thread
from tests.gateway.fault_upstream import FaultUpstreamServer, fault_upstream
from tests.gateway.metrics_scrape import delta, scrape
from tests.redis_server import running_redis

pytestmark = pytest.mark.integration

ADMIN = "cache-test-admin-key"
# Above the fixture's 8 tokens: its answers end with "stop" (a smaller max_tokens truncates them).
MAX_TOKENS = 32


def _settings(upstream: FaultUpstreamServer, index_dir: Path, **overrides: Any) -> Any:
    return load_settings(
        data_dir=str(MODEL_CACHE),
        default_pipeline="prompt",
        generator={"backend": "openai", "model": "fixture", "base_url": upstream.base_url, "max_retries": 0,
                   "adapters": {"tuned": "fixture"}},
        rag={"index_dir": str(index_dir), "watch_interval_s": 0},
        auth={"admin_key_sha256": [sha256_hex(ADMIN)]},
        **overrides,
    )  # fmt: skip


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultUpstreamServer]:
    with fault_upstream() as server:
        yield server


@pytest.fixture(scope="module")
def gateway(upstream: FaultUpstreamServer, handbook_index: Path) -> Iterator[Any]:
    """Semantic mode over the in-memory store; the handbook index gives the embedder (and rag)."""
    app = create_app(_settings(upstream, handbook_index, cache={"mode": "semantic"}))
    with serve_in_thread(app) as url:
        app.state.url = url
        yield app


@pytest.fixture(scope="module")
def client(gateway: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.state.url + "/v1", api_key="unused", max_retries=0)


def ask(client: openai.OpenAI, text: str, **options: Any) -> Any:
    options.setdefault("max_tokens", MAX_TOKENS)
    options.setdefault("model", "prompt")
    return client.chat.completions.create(messages=[{"role": "user", "content": text}], **options)


def cache_of(response: Any) -> dict[str, Any]:
    found: dict[str, Any] = response.model_extra["hybrid"]["cache"]
    return found


def test_exact_repeat_is_replayed_with_its_usage_and_the_saving(
    client: openai.OpenAI, upstream: FaultUpstreamServer, gateway: Any
) -> None:
    before = scrape(gateway.state.url)
    first = ask(client, "Which teams own the release process?")
    calls = upstream.upstream.requests
    again = ask(client, "which teams   own the release process?")
    assert upstream.upstream.requests == calls  # answered without the generator
    assert cache_of(first) == {"hit": None}
    hit = cache_of(again)
    assert hit["hit"] == "exact" and hit["similarity"] == 1.0 and 0 <= hit["age_s"] < 60
    assert again.choices[0].message.content == first.choices[0].message.content
    assert again.choices[0].finish_reason == "stop"
    assert again.usage == first.usage  # the original token counts
    costs = again.model_extra["hybrid"]["cost_usd"]
    assert "generate" not in costs and hit["saved_usd"] == pytest.approx(
        first.model_extra["hybrid"]["cost_usd"]["generate"]
    )
    after = scrape(gateway.state.url)
    assert delta(after, before, "hybrid_cache_requests_total", pipeline="prompt", result="hit_exact") == 1
    assert delta(after, before, "hybrid_cache_requests_total", pipeline="prompt", result="miss") == 1
    assert delta(after, before, "hybrid_cache_saved_usd_total", pipeline="prompt") == pytest.approx(
        hit["saved_usd"]
    )
    assert delta(after, before, "hybrid_cache_lookup_seconds_count") == 2


def test_a_paraphrase_hits_semantically_and_near_misses_do_not(
    client: openai.OpenAI, upstream: FaultUpstreamServer
) -> None:
    ask(client, "How many vacation days do I get per year?")
    paraphrase = ask(client, "How many days of vacation do I get per year?")
    hit = cache_of(paraphrase)
    assert hit["hit"] == "semantic" and 0.91 <= hit["similarity"] < 1.0
    for near_miss in (
        "How many vacation days do I not get per year?",  # negation
        "How many vacation days do I get in 2 years?",  # number
        "How many vacation days do I get per year in Lisbon?",  # entity
        "How many sick days do I get per year?",  # topic
    ):
        calls = upstream.upstream.requests
        assert cache_of(ask(client, near_miss)) == {"hit": None}, near_miss
        assert upstream.upstream.requests == calls + 1


def test_errors_are_never_cached(client: openai.OpenAI, upstream: FaultUpstreamServer) -> None:
    question = "Who signs off on a hotfix during the deploy freeze?"
    upstream.set_mode("error_500")
    try:
        with pytest.raises(openai.APIStatusError) as failed:
            ask(client, question)
        assert failed.value.status_code == 502
    finally:
        upstream.set_mode("ok")
    answered = ask(client, question)
    assert cache_of(answered) == {"hit": None} and answered.choices[0].message.content
    assert cache_of(ask(client, question))["hit"] == "exact"  # the good answer is what got stored


def test_truncated_answers_are_not_cached(client: openai.OpenAI, upstream: FaultUpstreamServer) -> None:
    question = "Summarise the incident postmortem template."
    first = ask(client, question, max_tokens=4)
    assert first.choices[0].finish_reason == "length"
    calls = upstream.upstream.requests
    second = ask(client, question, max_tokens=4)
    assert cache_of(second) == {"hit": None} and upstream.upstream.requests == calls + 1


def test_answers_with_privacy_findings_are_not_cached(
    client: openai.OpenAI, upstream: FaultUpstreamServer
) -> None:
    question = "Please forward my payslip to jane.doe@example.com, how long does it take?"
    first = ask(client, question)
    assert first.model_extra["hybrid"]["privacy"]["findings"] == ["email"]
    calls = upstream.upstream.requests
    second = ask(client, question)
    assert cache_of(second) == {"hit": None} and upstream.upstream.requests == calls + 1


def test_a_hit_replays_as_sse_through_the_openai_streaming_iterator(client: openai.OpenAI) -> None:
    question = "What does the code review checklist cover?"
    original = ask(client, question)
    stream = ask(client, question, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == original.choices[0].message.content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1  # content chunks
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    last = chunks[-1]
    assert last.choices == [] and last.usage == original.usage
    assert last.model_extra["hybrid"]["cache"]["hit"] == "exact"


def test_a_hit_streams_without_usage_with_the_extension_on_the_finish_chunk(
    client: openai.OpenAI, gateway: Any
) -> None:
    question = "Where are architecture decision records kept?"
    ask(client, question)
    body = {"model": "prompt", "messages": [{"role": "user", "content": question}], "max_tokens": MAX_TOKENS,
            "stream": True}  # fmt: skip
    with httpx.stream("POST", gateway.state.url + "/v1/chat/completions", json=body, timeout=30) as resp:
        lines = [line for line in resp.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    final = json.loads(lines[-2][6:])
    assert final["choices"][0]["finish_reason"] == "stop" and final["hybrid"]["cache"]["hit"] == "exact"
    assert "usage" not in final


def test_a_new_adapter_version_is_a_miss(client: openai.OpenAI, gateway: Any) -> None:
    question = "Explain our branching model in one sentence."
    ask(client, question, model="tuned")
    assert cache_of(ask(client, question, model="tuned"))["hit"] == "exact"
    gateway.state.gateway.adapter_versions["tuned"] = "v2"  # what POST /admin/adapters records
    try:
        after = ask(client, question, model="tuned")
        assert cache_of(after) == {"hit": None}
        assert after.model_extra["hybrid"]["adapter"] == {"name": "tuned", "version": "v2"}
        assert cache_of(ask(client, question, model="tuned"))["hit"] == "exact"
    finally:
        del gateway.state.gateway.adapter_versions["tuned"]


def test_a_new_index_version_is_a_miss(upstream: FaultUpstreamServer, handbook_index: Path) -> None:
    # A sibling of the session index, so the exported query embedder is shared.
    index_dir = handbook_index.parent / "cache-index-swap"
    corpus = handbook_index.parent / "cache-corpus"
    corpus.mkdir(exist_ok=True)
    handbook = REPO_ROOT / "corpus" / "handbook" / "benefits"
    (corpus / "vacation.md").write_text((handbook / "vacation.md").read_text("utf-8"), "utf-8")
    settings = _settings(upstream, index_dir, cache={"mode": "exact"})
    embedder = build_query_embedder(settings.rag)
    ingest([corpus], settings.rag, embedder=embedder, progress=False)
    question = "How many vacation days do I get per year?"
    with serve_in_thread(create_app(settings)) as url:
        rag = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        first = ask(rag, question, model="rag")
        assert cache_of(ask(rag, question, model="rag"))["hit"] == "exact"
        (corpus / "sick-leave.md").write_text((handbook / "sick-leave.md").read_text("utf-8"), "utf-8")
        ingest([corpus], settings.rag, embedder=embedder, progress=False)
        reload = httpx.post(url + "/admin/reload-index", headers={"Authorization": f"Bearer {ADMIN}"})
        assert reload.status_code == 200 and reload.json()["reloaded"], reload.text
        after = ask(rag, question, model="rag")
        assert after.model_extra["hybrid"]["index_version"] != first.model_extra["hybrid"]["index_version"]
        assert cache_of(after) == {"hit": None}
        assert cache_of(ask(rag, question, model="rag"))["hit"] == "exact"


def test_a_cancelled_stream_is_not_cached(tmp_path: Path) -> None:
    slow = FixtureBehaviour(delay_s=0.0, tokens=200, inter_token_s=0.01)  # about 2 s of streaming
    with fault_upstream(slow) as upstream:
        settings = _settings(upstream, tmp_path / "no-index", cache={"mode": "exact"})
        with serve_in_thread(create_app(settings)) as url:
            body = {"model": "prompt", "messages": [{"role": "user", "content": "Tell me a long story."}],
                    "max_tokens": 400, "stream": True}  # fmt: skip
            with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as resp:
                for line in resp.iter_lines():
                    if '"content":"token' in line.replace(" ", ""):
                        break  # the client goes away mid-answer
            time.sleep(3.0)  # longer than the upstream's whole answer: nothing late may be stored
            calls = upstream.upstream.requests
            again = httpx.post(url + "/v1/chat/completions", json={**body, "stream": False}, timeout=30)
            assert again.status_code == 200
            assert again.json()["hybrid"]["cache"] == {"hit": None}
            assert upstream.upstream.requests == calls + 1


def test_redis_store_shared_and_its_failures_never_fail_a_request(
    upstream: FaultUpstreamServer, tmp_path: Path
) -> None:
    question = "Which channel announces a deploy freeze?"
    with running_redis(tmp_path / "redis") as redis_server:
        settings = _settings(
            upstream, tmp_path / "no-index", cache={"mode": "exact", "store": "redis"},
            redis={"url": redis_server.url, "failure_backoff_s": 0.2},
        )  # fmt: skip
        app = create_app(settings)
        with serve_in_thread(app) as url:
            client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
            assert cache_of(ask(client, question)) == {"hit": None}
            assert cache_of(ask(client, question))["hit"] == "exact"
            keys = redis_keys(redis_server.url)
            assert keys and all(k.startswith("hybrid:cache:answer:") for k in keys)
            before = scrape(url)
            redis_server.stop(kill=True)
            down = ask(client, question)  # Redis gone: answered by the generator, a 200
            assert cache_of(down) == {"hit": None} and down.choices[0].message.content
            after = scrape(url)
            assert delta(after, before, "hybrid_cache_store_failures_total", operation="get") >= 1
            redis_server.start()
            time.sleep(0.3)  # past the backoff
            assert cache_of(ask(client, question)) == {"hit": None}  # the restarted Redis kept nothing
            assert cache_of(ask(client, question))["hit"] == "exact"


def redis_keys(url: str) -> list[str]:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return sorted(str(key) for key in client.keys("*"))
    finally:
        client.close()
