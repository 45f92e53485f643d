"""The real redis-server for tests (benchmarks/harness/redis_server.py). Absent on a developer's machine,
the tests that need it skip and name the install command; under CI (`CI=true`, where .ci/run installs it)
a missing server is an error, never a skip."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.harness import redis_server


def require_redis_server() -> None:
    if redis_server.redis_server_binary() is None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(redis_server.INSTALL_HINT)
        pytest.skip(redis_server.INSTALL_HINT)


class RedisServer(redis_server.RedisServer):
    def __init__(self, workdir: Path, *, port: int | None = None, persist: bool = False) -> None:
        require_redis_server()
        super().__init__(workdir, port=port, persist=persist)


@contextlib.contextmanager
def running_redis(workdir: Path) -> Iterator[RedisServer]:
    server = RedisServer(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
