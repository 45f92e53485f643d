"""The Redis client factory against a real redis-server; a missing URL is a clear configuration error."""

from __future__ import annotations

import asyncio

import pytest

from services.core.errors import ConfigError
from services.core.redis_client import connect
from services.core.settings import RedisSettings, load_settings


@pytest.mark.integration
def test_connect_round_trips_through_a_real_server(redis_url: str) -> None:
    async def round_trip() -> bytes | None:
        client = connect(RedisSettings(url=redis_url))
        try:
            await client.set("hybrid:test", b"value")
            return await client.get("hybrid:test")
        finally:
            await client.aclose()

    assert asyncio.run(round_trip()) == b"value"


@pytest.mark.unit
def test_connect_without_a_url_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="redis.url"):
        connect(RedisSettings())


@pytest.mark.unit
def test_url_must_be_a_redis_url() -> None:
    with pytest.raises(Exception, match="redis://"):
        load_settings(redis={"url": "http://127.0.0.1:6379"})
