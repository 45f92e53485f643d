"""A real `redis-server` (Debian package) on a free port of 127.0.0.1, for the shared-state tests.

Absent on a developer's machine, the tests that need it skip and name the install command; under CI
(`CI=true`, where .ci/run installs it) a missing server is an error, never a skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.core.ports import LOOPBACK, free_port

INSTALL_HINT = "redis-server is not installed (apt-get install redis-server; .ci/run installs it)"


def redis_server_binary() -> str:
    debian = Path("/usr/bin/redis-server")
    found = shutil.which("redis-server") or (str(debian) if debian.exists() else None)
    if found is None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(INSTALL_HINT)
        pytest.skip(INSTALL_HINT)
    return found


class RedisServer:
    """One redis-server process; `stop` and `start` again keep the port, so clients can reconnect."""

    def __init__(self, workdir: Path, *, port: int | None = None) -> None:
        self.binary = redis_server_binary()
        self.workdir = workdir
        self.port = port or free_port()
        self.url = f"redis://{LOOPBACK}:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "redis.log").open("ab")
        # No persistence and no protected-mode surprises: a throwaway server bound to loopback only.
        self._process = subprocess.Popen(
            [
                self.binary,
                "--bind",
                LOOPBACK,
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while True:
            if self._process.poll() is not None:
                tail = (self.workdir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited with code {self._process.returncode}:\n{tail}")
            if self.answers():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server not answering on port {self.port} after {timeout_s} s")
            time.sleep(0.05)

    def answers(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, self.port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
        return False

    def stop(self, *, kill: bool = False) -> None:
        if self._process is None:
            return
        if kill:
            self._process.kill()
        else:
            self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def flush(self) -> None:
        with socket.create_connection((LOOPBACK, self.port), timeout=2) as s:
            s.sendall(b"FLUSHALL\r\n")
            s.recv(16)


@contextlib.contextmanager
def running_redis(workdir: Path) -> Iterator[RedisServer]:
    server = RedisServer(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
