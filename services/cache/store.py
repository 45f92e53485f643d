"""Where cached answers live: the protocol, and the in-process store (LRU with a TTL)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from services.cache.entry import CachedAnswer, IndexedQuery

Clock = Callable[[], float]


class CacheStore(Protocol):
    """Answers by exact key, and per context the queries a semantic lookup compares against."""

    @property
    def kind(self) -> str: ...

    async def get(self, exact_key: str) -> CachedAnswer | None: ...

    async def put(
        self, exact_key: str, context: str, answer: CachedAnswer, indexed: IndexedQuery | None
    ) -> None: ...

    async def candidates(self, context: str) -> list[IndexedQuery]: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Stored:
    answer: CachedAnswer
    context: str
    expires_at: float


class MemoryStore:
    """One process's cache: at most `max_entries` answers, least recently used evicted first."""

    def __init__(self, *, ttl_s: float, max_entries: int, clock: Clock = time.time) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, _Stored] = OrderedDict()
        self._contexts: dict[str, dict[str, IndexedQuery]] = {}

    @property
    def kind(self) -> str:
        return "memory"

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, exact_key: str) -> CachedAnswer | None:
        stored = self._entries.get(exact_key)
        if stored is None:
            return None
        if stored.expires_at <= self._clock():
            self._drop(exact_key)
            return None
        self._entries.move_to_end(exact_key)
        return stored.answer

    async def put(
        self, exact_key: str, context: str, answer: CachedAnswer, indexed: IndexedQuery | None
    ) -> None:
        self._drop(exact_key)
        self._entries[exact_key] = _Stored(answer, context, self._clock() + self._ttl_s)
        if indexed is not None:
            self._contexts.setdefault(context, {})[exact_key] = indexed
        while len(self._entries) > self._max_entries:
            oldest = next(iter(self._entries))
            self._drop(oldest)

    async def candidates(self, context: str) -> list[IndexedQuery]:
        indexed = self._contexts.get(context, {})
        now = self._clock()
        expired = [key for key, _ in indexed.items() if self._expired(key, now)]
        for key in expired:
            self._drop(key)
        return list(indexed.values())

    async def aclose(self) -> None:
        self._entries.clear()
        self._contexts.clear()

    def _expired(self, exact_key: str, now: float) -> bool:
        stored = self._entries.get(exact_key)
        return stored is None or stored.expires_at <= now

    def _drop(self, exact_key: str) -> None:
        stored = self._entries.pop(exact_key, None)
        if stored is None:
            return
        indexed = self._contexts.get(stored.context)
        if indexed is not None:
            indexed.pop(exact_key, None)
            if not indexed:
                del self._contexts[stored.context]
