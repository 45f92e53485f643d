"""The response cache over a store: exact and semantic lookups, the guard in the loop, sampled requests,
and store failures that become misses (a counted, logged miss; never the request's error)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from services.cache.entry import CachedAnswer, IndexedQuery
from services.cache.key import cache_key
from services.cache.redis_store import RedisStore
from services.cache.service import Lookup, ResponseCache
from services.cache.store import MemoryStore
from services.core.redis_client import connect
from services.core.settings import RedisSettings
from services.core.types import ChatMessage, GenerationParams
from tests.redis_server import running_redis


class TableEmbedder:
    """Embeds from a table of unit vectors (a fake of services.core.protocols.Embedder)."""

    def __init__(self, vectors: dict[str, Sequence[float]]) -> None:
        self._vectors = {k: np.asarray(v, dtype=np.float32) / np.linalg.norm(v) for k, v in vectors.items()}

    dimensions = 3
    model_id = "table"
    max_seq_length = 128

    def warm_up(self) -> None:
        return None

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return []

    def embed_documents(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        return np.stack([self.embed_query(t) for t in texts])

    def embed_query(self, text: str) -> npt.NDArray[np.float32]:
        return self._vectors[text]


CACHED = "How many vacation days do I get?"
EMBEDDER = TableEmbedder(
    {
        CACHED: [1.0, 0.0, 0.0],
        "How many days of vacation do I get?": [0.98, 0.2, 0.0],  # cosine 0.98
        "How many vacation days do I not get?": [0.99, 0.1, 0.0],  # close, but negated
        "How many sick days do I get?": [0.7, 0.7, 0.0],  # another topic: below the threshold
    }
)


def answer(text: str) -> CachedAnswer:
    return CachedAnswer(text, "stop", 10, 4, "local", 0.4, created_at=time.time())


def make_cache(store: object = None, **options: object) -> ResponseCache:
    return ResponseCache(
        store or MemoryStore(ttl_s=60, max_entries=10),  # type: ignore[arg-type]
        mode="semantic",
        threshold=0.9,
        embedder=EMBEDDER,
        **options,  # type: ignore[arg-type]
    )


def key_of(cache: ResponseCache, text: str, max_tokens: int = 64) -> Lookup:
    return Lookup(
        cache_key(
            deployment=cache.deployment,
            pipeline="rag",
            route=None,
            template=("rag", "1"),
            index_version="v1",
            adapter=None,
            params=GenerationParams(max_tokens=max_tokens),
            messages=[ChatMessage("user", text)],
        )  # fmt: skip
    )


async def fill(cache: ResponseCache) -> None:
    lookup = await cache.lookup(key_of(cache, CACHED).key)
    assert lookup.answer is None and lookup.vector is not None
    assert await cache.store(lookup, answer("25 days"))


@pytest.mark.unit
def test_exact_then_semantic_hits_and_guarded_near_misses() -> None:
    async def scenario() -> dict[str, Lookup]:
        cache = make_cache()
        await fill(cache)
        texts = [CACHED, "How many days of vacation do I get?", "How many vacation days do I not get?",
                 "How many sick days do I get?"]  # fmt: skip
        return {text: await cache.lookup(key_of(cache, text).key) for text in texts}

    found = asyncio.run(scenario())
    exact = found[CACHED]
    assert exact.hit == "hit_exact" and exact.answer is not None and exact.answer.text == "25 days"
    paraphrase = found["How many days of vacation do I get?"]
    assert paraphrase.hit == "hit_semantic" and paraphrase.similarity == pytest.approx(0.98, abs=1e-3)
    assert found["How many vacation days do I not get?"].hit == "miss"  # guard: a negation
    assert found["How many sick days do I get?"].hit == "miss"  # threshold


@pytest.mark.unit
def test_another_context_never_sees_the_entry() -> None:
    async def scenario() -> Lookup:
        cache = make_cache()
        await fill(cache)
        return await cache.lookup(key_of(cache, CACHED, max_tokens=65).key)

    assert asyncio.run(scenario()).hit == "miss"


@pytest.mark.unit
def test_sampled_requests_bypass_unless_asked_for() -> None:
    sampled = GenerationParams(temperature=0.7)
    assert make_cache().bypass_reason(sampled) == "sampled"
    assert make_cache(cache_sampled=True).bypass_reason(sampled) is None
    assert make_cache().bypass_reason(GenerationParams()) is None


class BrokenStore:
    kind = "broken"

    def __init__(self) -> None:
        self.gets = 0

    async def get(self, exact_key: str) -> CachedAnswer | None:
        self.gets += 1
        raise ConnectionError("store is down")

    async def put(
        self, exact_key: str, context: str, answer: CachedAnswer, indexed: IndexedQuery | None
    ) -> None:
        raise ConnectionError("store is down")

    async def candidates(self, context: str) -> list[IndexedQuery]:
        raise ConnectionError("store is down")

    async def aclose(self) -> None:
        return None


@pytest.mark.unit
def test_store_failures_are_counted_misses_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    failures: list[str] = []

    async def scenario() -> tuple[Lookup, bool, Lookup]:
        cache = make_cache(BrokenStore(), on_store_failure=failures.append)
        first = await cache.lookup(key_of(cache, CACHED).key)
        stored = await cache.store(first, answer("25 days"))
        again = await cache.lookup(key_of(cache, CACHED).key)
        return first, stored, again

    with caplog.at_level(logging.WARNING, logger="services.cache.service"):
        first, stored, again = asyncio.run(scenario())
    assert first.hit == "miss" and again.hit == "miss" and not stored
    assert failures == ["get", "candidates", "put", "get", "candidates"]
    warnings = [r for r in caplog.records if "response cache broken store failed" in r.getMessage()]
    assert len(warnings) == 1  # rate-limited


@pytest.mark.unit
def test_after_a_failure_the_store_is_not_asked_during_the_backoff() -> None:
    failures: list[str] = []
    store = BrokenStore()

    async def scenario() -> list[str]:
        cache = make_cache(store, on_store_failure=failures.append, failure_backoff_s=60.0)
        return [(await cache.lookup(key_of(cache, CACHED).key)).hit for _ in range(3)]

    assert asyncio.run(scenario()) == ["miss", "miss", "miss"]
    assert store.gets == 1  # the first failure starts the backoff; the rest are not asked
    assert failures == ["get", "candidates"] * 3  # each skipped call still counts as a failure


@pytest.mark.integration
def test_redis_dying_and_returning_is_a_miss_then_a_hit_again(tmp_path: Path) -> None:
    """One cache (one client) across the outage: it reconnects by itself when the server is back."""
    failures: list[str] = []
    with running_redis(tmp_path) as server:

        async def scenario() -> list[str]:
            store = RedisStore(connect(RedisSettings(url=server.url)), key_prefix="t:", ttl_s=60)
            cache = make_cache(store, on_store_failure=failures.append)
            try:
                await fill(cache)
                results: list[str] = [(await cache.lookup(key_of(cache, CACHED).key)).hit]
                server.stop(kill=True)
                results.append((await cache.lookup(key_of(cache, CACHED).key)).hit)
                results.append(str(await cache.store(key_of(cache, CACHED), answer("25 days"))))
                server.start()
                await fill(cache)  # the server kept nothing (no persistence): fill it again
                paraphrase = "How many days of vacation do I get?"
                results.append((await cache.lookup(key_of(cache, paraphrase).key)).hit)
                return results
            finally:
                await cache.aclose()

        assert asyncio.run(scenario()) == ["hit_exact", "miss", "False", "hit_semantic"]
    assert "get" in failures and "put" in failures
