"""Both stores behave alike: answers by exact key with a TTL, indexed queries per context; the memory
store evicts least recently used entries; the Redis one runs against a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager

import pytest

from services.cache.entry import CachedAnswer, IndexedQuery
from services.cache.redis_store import RedisStore
from services.cache.store import CacheStore, MemoryStore
from services.core.redis_client import connect
from services.core.settings import RedisSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def answer(text: str, created_at: float = 1_000.0) -> CachedAnswer:
    return CachedAnswer(text, "stop", 10, 3, "local", 0.5, created_at, sources=[], groundedness=None)


def indexed(key: str, query: str, created_at: float = 1_000.0) -> IndexedQuery:
    return IndexedQuery(key, query, (1.0, 0.0), created_at)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(
    params=[
        pytest.param("memory", marks=pytest.mark.unit),
        pytest.param("redis", marks=pytest.mark.integration),
    ]
)
def make_store(request: pytest.FixtureRequest) -> Iterator[Callable[[Clock], CacheStore]]:
    if request.param == "memory":
        yield lambda clock: MemoryStore(ttl_s=60, max_entries=100, clock=clock)
        return
    url = request.getfixturevalue("redis_url")
    yield lambda clock: RedisStore(connect(RedisSettings(url=url)), key_prefix="t:", ttl_s=60, clock=clock)


@asynccontextmanager
async def opened(store: CacheStore) -> AsyncIterator[CacheStore]:
    try:
        yield store
    finally:
        await store.aclose()


def test_round_trip_and_context_index(make_store: Callable[[Clock], CacheStore], clock: Clock) -> None:
    async def scenario() -> None:
        async with opened(make_store(clock)) as store:
            assert await store.get("k1") is None
            await store.put("k1", "ctx", answer("a1"), indexed("k1", "q1"))
            await store.put("k2", "ctx", answer("a2"), None)  # exact mode: nothing indexed
            await store.put("k3", "other", answer("a3"), indexed("k3", "q3"))
            assert await store.get("k1") == answer("a1")
            assert await store.get("k2") == answer("a2")
            assert [c.query for c in await store.candidates("ctx")] == ["q1"]
            assert [c.exact_key for c in await store.candidates("other")] == ["k3"]
            assert await store.candidates("none") == []

    asyncio.run(scenario())


@pytest.mark.unit
def test_memory_entries_expire_after_the_ttl(clock: Clock) -> None:
    async def scenario() -> None:
        store = MemoryStore(ttl_s=60, max_entries=10, clock=clock)
        await store.put("k1", "ctx", answer("a1"), indexed("k1", "q1"))
        clock.now += 59
        assert await store.get("k1") is not None
        clock.now += 2
        assert await store.get("k1") is None
        assert await store.candidates("ctx") == []
        assert len(store) == 0

    asyncio.run(scenario())


@pytest.mark.unit
def test_memory_store_evicts_the_least_recently_used(clock: Clock) -> None:
    async def scenario() -> None:
        store = MemoryStore(ttl_s=60, max_entries=2, clock=clock)
        await store.put("k1", "ctx", answer("a1"), indexed("k1", "q1"))
        await store.put("k2", "ctx", answer("a2"), indexed("k2", "q2"))
        assert await store.get("k1") is not None  # k1 used: k2 is now the least recent
        await store.put("k3", "ctx", answer("a3"), indexed("k3", "q3"))
        assert await store.get("k2") is None
        assert {c.exact_key for c in await store.candidates("ctx")} == {"k1", "k3"}
        assert len(store) == 2

    asyncio.run(scenario())


@pytest.mark.unit
@pytest.mark.parametrize(("ttl_s", "max_entries"), [(0, 10), (60, 0)])
def test_memory_store_rejects_bad_limits(ttl_s: float, max_entries: int) -> None:
    with pytest.raises(ValueError, match="ttl_s|max_entries"):
        MemoryStore(ttl_s=ttl_s, max_entries=max_entries)


@pytest.mark.integration
def test_redis_keys_carry_the_prefix_and_a_ttl(redis_url: str, clock: Clock) -> None:
    async def scenario() -> tuple[list[bytes | str], int, int]:
        client = connect(RedisSettings(url=redis_url))
        store = RedisStore(client, key_prefix="hyb:", ttl_s=60, clock=clock)
        try:
            await store.put("k1", "ctx", answer("a1"), indexed("k1", "q1"))
            keys = sorted(await client.keys("*"))
            return (
                keys,
                await client.pttl(store.answer_key("k1")),
                await client.pttl(store.context_key("ctx")),
            )
        finally:
            await store.aclose()

    keys, answer_ttl, context_ttl = asyncio.run(scenario())
    assert keys == [b"hyb:cache:answer:k1", b"hyb:cache:context:ctx"]
    assert 0 < answer_ttl <= 60_000 and 0 < context_ttl <= 60_000


@pytest.mark.integration
def test_redis_drops_indexed_queries_past_the_ttl(redis_url: str, clock: Clock) -> None:
    async def scenario() -> tuple[list[str], int]:
        client = connect(RedisSettings(url=redis_url))
        store = RedisStore(client, key_prefix="hyb:", ttl_s=60, clock=clock)
        try:
            await store.put("old", "ctx", answer("a"), indexed("old", "old query", created_at=900.0))
            await store.put("new", "ctx", answer("b"), indexed("new", "new query", created_at=1_000.0))
            found = [c.exact_key for c in await store.candidates("ctx")]
            return found, await client.hlen(store.context_key("ctx"))
        finally:
            await store.aclose()

    found, left = asyncio.run(scenario())
    assert found == ["new"] and left == 1
