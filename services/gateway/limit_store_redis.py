"""The shared limit store: every worker and replica counts in one Redis, one atomic script per call.

Keys: `{prefix}limits:{<key id>}:requests|tokens|daily`, where the key id is the digest prefix auth
derives from the API key (never the key itself); the braces are a Redis Cluster hash tag. Every key has a
TTL (a bucket until it is full again, the daily totals until 00:00 UTC), so idle keys disappear.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, cast, get_args

from redis.exceptions import RedisError

from services.core.settings import LimitsSettings
from services.gateway.limit_store import LimitName, LimitStoreError, Refusal
from services.gateway.limit_store_redis_lua import ADMIT, RECORD

if TYPE_CHECKING:
    import redis.asyncio as redis_asyncio
    from redis.commands.core import AsyncScript

_LIMIT_NAMES: frozenset[str] = frozenset(get_args(LimitName))


def _no_offset() -> float:
    return 0.0


class RedisLimitStore:
    """`clock_offset_s` is added to the Redis server's clock inside the scripts (tests cross midnight)."""

    def __init__(
        self,
        client: redis_asyncio.Redis,
        settings: LimitsSettings,
        *,
        key_prefix: str,
        clock_offset_s: Callable[[], float] = _no_offset,
    ) -> None:
        self._client = client
        self._prefix = f"{key_prefix}limits:"
        self._clock_offset_s = clock_offset_s
        self._limits = (
            settings.requests_per_minute,
            settings.tokens_per_minute,
            settings.tokens_per_day,
            settings.usd_per_day,
        )
        self._admit = client.register_script(ADMIT)
        self._record = client.register_script(RECORD)

    def keys(self, key_id: str) -> list[str]:
        """The Redis keys holding `key_id`'s state: request bucket, token bucket, daily totals."""
        base = f"{self._prefix}{{{key_id}}}:"
        return [base + "requests", base + "tokens", base + "daily"]

    def _args(self) -> list[str]:
        return [*(repr(limit) for limit in self._limits), repr(self._clock_offset_s())]

    async def admit(self, key_id: str) -> Refusal | None:
        reply = await self._call(self._admit, key_id, self._args())
        if not reply:
            return None
        limit, retry_after_s, used = (p.decode() if isinstance(p, bytes) else str(p) for p in reply)
        if limit not in _LIMIT_NAMES:
            raise LimitStoreError(f"the admit script answered an unknown limit {limit!r}")
        return Refusal(cast(LimitName, limit), float(retry_after_s), float(used))

    async def record(self, key_id: str, tokens: int, usd: float) -> None:
        await self._call(self._record, key_id, [*self._args(), str(tokens), repr(usd)])

    async def _call(self, script: AsyncScript, key_id: str, args: Sequence[str]) -> list[bytes | str]:
        try:
            reply = await script(keys=self.keys(key_id), args=args)
        except (TimeoutError, RedisError, OSError) as exc:
            raise LimitStoreError(f"{type(exc).__name__}: {exc}") from exc
        return cast(list[bytes | str], reply)

    async def aclose(self) -> None:
        await self._client.aclose()
