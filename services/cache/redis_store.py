"""The cache in Redis, shared by every worker and replica.

`{prefix}cache:answer:{exact key}` holds an answer (a string with the TTL); `{prefix}cache:context:{context}`
is a hash of the context's indexed queries (exact key -> query and embedding), its TTL renewed on each
write. Hash fields do not expire on their own (Redis 7.0), so a lookup drops those past the TTL.
Errors propagate: the response cache turns them into a miss (services.cache.service).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from services.cache.entry import CachedAnswer, IndexedQuery
from services.cache.store import Clock

if TYPE_CHECKING:
    import redis.asyncio as redis_asyncio


class RedisStore:
    def __init__(
        self, client: redis_asyncio.Redis, *, key_prefix: str, ttl_s: float, clock: Clock = time.time
    ) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        self._client = client
        self._prefix = f"{key_prefix}cache:"
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._ttl_s = ttl_s
        self._clock = clock

    @property
    def kind(self) -> str:
        return "redis"

    def answer_key(self, exact_key: str) -> str:
        return f"{self._prefix}answer:{exact_key}"

    def context_key(self, context: str) -> str:
        return f"{self._prefix}context:{context}"

    async def get(self, exact_key: str) -> CachedAnswer | None:
        raw = await self._client.get(self.answer_key(exact_key))
        return CachedAnswer.from_json(raw) if raw is not None else None

    async def put(
        self, exact_key: str, context: str, answer: CachedAnswer, indexed: IndexedQuery | None
    ) -> None:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.set(self.answer_key(exact_key), answer.to_json(), px=self._ttl_ms)
            if indexed is not None:
                pipe.hset(self.context_key(context), exact_key, indexed.to_json())
                pipe.pexpire(self.context_key(context), self._ttl_ms)
            await pipe.execute()

    async def candidates(self, context: str) -> list[IndexedQuery]:
        raw = await self._client.hgetall(self.context_key(context))
        oldest = self._clock() - self._ttl_s
        found: list[IndexedQuery] = []
        stale: list[bytes | str] = []
        for field, value in raw.items():
            indexed = IndexedQuery.from_json(value)
            if indexed.created_at <= oldest:
                stale.append(field)
            else:
                found.append(indexed)
        if stale:
            await self._client.hdel(self.context_key(context), *stale)
        return found

    async def aclose(self) -> None:
        await self._client.aclose()
