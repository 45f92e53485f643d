"""The asyncio Redis client every shared-state feature uses (rate limits, the response cache)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.core.errors import ConfigError
from services.core.settings import RedisSettings

if TYPE_CHECKING:
    import redis.asyncio as redis_asyncio


def connect(settings: RedisSettings) -> redis_asyncio.Redis:
    """A pooled client for `settings.url`. It connects lazily: creating it never blocks or fails."""
    import redis.asyncio as redis_asyncio

    if settings.url is None:
        raise ConfigError("redis.url is not set (HYBRID_REDIS__URL=redis://host:6379/0)")
    return redis_asyncio.Redis.from_url(
        settings.url,
        socket_connect_timeout=settings.connect_timeout_s,
        socket_timeout=settings.op_timeout_s,
        # Failures surface at once to the caller's on_store_failure policy instead of retrying inside.
        retry_on_timeout=False,
        health_check_interval=30,
    )
