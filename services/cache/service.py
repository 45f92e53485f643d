"""The response cache as a request sees it: look up before generating, store after a clean answer.

A store failure (Redis down or slow) is never the request's failure: the lookup is a miss, the answer is
not stored, `on_store_failure` counts it (a metric) and a warning is logged at most once per interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt

from services.cache.entry import CachedAnswer, IndexedQuery
from services.cache.key import CacheKey
from services.cache.semantic import matches, vector_tuple
from services.cache.store import CacheStore, Clock
from services.core.protocols import Embedder
from services.core.store_health import StoreBackoff, StoreFailureLog
from services.core.types import GenerationParams

logger = logging.getLogger(__name__)

CacheMode = Literal["exact", "semantic"]
CacheResult = Literal["hit_exact", "hit_semantic", "miss", "bypass"]
CACHE_RESULTS: tuple[CacheResult, ...] = ("hit_exact", "hit_semantic", "miss", "bypass")
STORE_OPERATIONS = ("get", "put", "candidates", "close")
FAILURE_LOG_INTERVAL_S = 30.0

StoreFailureHook = Callable[[str], None]
T = TypeVar("T")


@dataclass(slots=True)
class CacheReport:
    """What the cache did for one request: `hybrid.cache` and the cache metrics are read from it."""

    result: CacheResult
    similarity: float | None = None
    age_s: float | None = None
    lookup_s: float = 0.0
    saved_usd: float = 0.0
    # Why the request bypassed the cache, or why its answer was not stored (None: stored or a hit).
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Lookup:
    key: CacheKey
    answer: CachedAnswer | None = None
    similarity: float | None = None
    vector: npt.NDArray[np.float32] | None = None

    @property
    def hit(self) -> CacheResult:
        if self.answer is None:
            return "miss"
        return "hit_exact" if self.similarity is None else "hit_semantic"


class ResponseCache:
    def __init__(
        self,
        store: CacheStore,
        *,
        mode: CacheMode,
        threshold: float = 0.91,
        embedder: Embedder | None = None,
        cache_sampled: bool = False,
        deployment: str = "",
        on_store_failure: StoreFailureHook | None = None,
        failure_backoff_s: float = 0.0,
        clock: Clock = time.time,
    ) -> None:
        if mode == "semantic" and embedder is None:
            raise ValueError("semantic mode needs an embedder")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self._store = store
        self._mode = mode
        self._threshold = threshold
        self._embedder = embedder
        self._cache_sampled = cache_sampled
        self._deployment = deployment
        self._on_store_failure = on_store_failure
        self._clock = clock
        subject = f"response cache {store.kind} store"
        self._failures = StoreFailureLog(subject, FAILURE_LOG_INTERVAL_S, logger=logger)
        self._backoff = StoreBackoff(failure_backoff_s)

    @property
    def mode(self) -> CacheMode:
        return self._mode

    @property
    def deployment(self) -> str:
        """The configuration fingerprint that goes into every key (services.cache.build)."""
        return self._deployment

    def bypass_reason(self, params: GenerationParams) -> str | None:
        """Why a request with these parameters may neither read nor fill the cache (None: it may)."""
        if params.temperature > 0 and not self._cache_sampled:
            return "sampled"
        return None

    def age_s(self, answer: CachedAnswer) -> float:
        return max(0.0, self._clock() - answer.created_at)

    async def lookup(self, key: CacheKey) -> Lookup:
        answer = await self._guarded("get", self._store.get(key.exact))
        if answer is not None:
            return Lookup(key, answer)
        if self._mode != "semantic" or key.query is None:
            return Lookup(key)
        assert self._embedder is not None
        vector = await asyncio.to_thread(self._embedder.embed_query, key.query)
        candidates = await self._guarded("candidates", self._store.candidates(key.context)) or []
        for candidate, similarity in matches(key.query, vector, candidates, self._threshold):
            answer = await self._guarded("get", self._store.get(candidate.exact_key))
            if answer is not None:
                return Lookup(key, answer, similarity=similarity, vector=vector)
        return Lookup(key, vector=vector)

    async def store(self, lookup: Lookup, answer: CachedAnswer) -> bool:
        """Store `answer` under the lookup's key (and index its query in semantic mode); False on failure."""
        key = lookup.key
        indexed = None
        if self._mode == "semantic" and key.query is not None and lookup.vector is not None:
            indexed = IndexedQuery(key.exact, key.query, vector_tuple(lookup.vector), answer.created_at)
        stored = await self._guarded("put", self._put(key, answer, indexed))
        return stored is True

    async def _put(self, key: CacheKey, answer: CachedAnswer, indexed: IndexedQuery | None) -> bool:
        await self._store.put(key.exact, key.context, answer, indexed)
        return True

    async def aclose(self) -> None:
        await self._guarded("close", self._store.aclose())

    async def _guarded(self, operation: str, call: Coroutine[Any, Any, T]) -> T | None:
        if operation != "close" and self._backoff.active():
            call.close()  # backing off: not asked, a failure all the same
            self._count_failure(operation)
            return None
        try:
            result = await call
        except Exception as exc:  # any store failure is a miss, never the request's error
            self._backoff.failed()
            self._count_failure(operation)
            self._failures.failed(f"{operation}: {type(exc).__name__}: {exc}", "serving without the cache")
            return None
        self._failures.succeeded()
        return result

    def _count_failure(self, operation: str) -> None:
        if self._on_store_failure is not None:
            self._on_store_failure(operation)
