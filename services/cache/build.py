"""Builds the response cache that settings describe (memory or Redis store; an embedder for semantic)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.cache.key import deployment_fingerprint
from services.cache.redis_store import RedisStore
from services.cache.service import ResponseCache, StoreFailureHook
from services.cache.store import CacheStore, MemoryStore
from services.core.protocols import Embedder
from services.core.redis_client import connect
from services.core.settings import BaseGeneratorSettings, Settings


def build_response_cache(
    settings: Settings,
    embedder: Callable[[], Embedder] | None = None,
    *,
    on_store_failure: StoreFailureHook | None = None,
) -> ResponseCache | None:
    """None when cache.mode is off. `embedder` is called only in semantic mode (the rag one, warm)."""
    cache = settings.cache
    if cache.mode == "off":
        return None
    store: CacheStore
    if cache.store == "redis":
        store = RedisStore(connect(settings.redis), key_prefix=settings.redis.key_prefix, ttl_s=cache.ttl_s)
    else:
        store = MemoryStore(ttl_s=cache.ttl_s, max_entries=cache.max_entries)
    if cache.mode == "semantic" and embedder is None:
        raise ValueError("cache.mode semantic needs an embedder")
    return ResponseCache(
        store,
        mode=cache.mode,
        threshold=cache.semantic.threshold,
        embedder=embedder() if cache.mode == "semantic" and embedder is not None else None,
        cache_sampled=cache.cache_sampled,
        deployment=answer_shaping_fingerprint(settings),
        on_store_failure=on_store_failure,
        failure_backoff_s=settings.redis.failure_backoff_s if cache.store == "redis" else 0.0,
    )


def _generator_identity(generator: BaseGeneratorSettings | None) -> dict[str, Any] | None:
    """The fields that decide what a generator says (not threads, queues or timeouts)."""
    if generator is None:
        return None
    return generator.model_dump(
        mode="json",
        include={"backend", "name", "model", "adapters", "onnx_precision", "dtype", "base_url"},
    )


def answer_shaping_fingerprint(settings: Settings) -> str:
    """A hash of the configuration that shapes answers beyond the key's versions: the generators' models
    and adapter folders, the system prompt and templates folder, and the rag settings that build the
    context. Replicas with the same configuration share entries; a changed one starts a fresh cache."""
    rag = settings.rag.model_dump(
        mode="json", exclude={"index_dir", "corpus_dirs", "watch_interval_s", "qdrant", "faiss"}
    )
    return deployment_fingerprint(
        {
            "generator": _generator_identity(settings.generator),
            "fallback_generator": _generator_identity(settings.fallback_generator),
            "prompts": settings.prompts.model_dump(mode="json"),
            "rag": rag,
            "privacy": settings.privacy.model_dump(mode="json"),
        }
    )
