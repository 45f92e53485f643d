"""A real `redis-server` (Debian package) on a free port of 127.0.0.1, for tests and fault benches."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

from services.core.ports import LOOPBACK, free_port
from services.evaluation.local_server import stop

INSTALL_HINT = "redis-server is not installed (apt-get install redis-server; .ci/run installs it)"


def redis_server_binary() -> str | None:
    debian = Path("/usr/bin/redis-server")
    return shutil.which("redis-server") or (str(debian) if debian.exists() else None)


class RedisServer:
    """One redis-server process; `stop` and `start` again keep the port, so clients can reconnect."""

    def __init__(self, workdir: Path, *, port: int | None = None, persist: bool = False) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise FileNotFoundError(INSTALL_HINT)
        self.binary = binary
        self.persist = persist
        self.workdir = workdir
        self.port = port or free_port()
        self.url = f"redis://{LOOPBACK}:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "redis.log").open("ab")
        # Bound to loopback only. `persist`: an append-only file fsynced every second, as the deploy notes
        # advise for budgets that must survive a restart; otherwise a throwaway in-memory server.
        aof = ["--appendonly", "yes", "--appendfsync", "everysec"] if self.persist else ["--appendonly", "no"]
        command = [self.binary, "--bind", LOOPBACK, "--port", str(self.port), "--save", "", *aof]
        self._process = subprocess.Popen(
            [*command, "--dir", str(self.workdir)],
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
            self._process.wait()
        else:
            stop(self._process, grace_s=10.0)
        self._process = None

    def flush(self) -> None:
        with socket.create_connection((LOOPBACK, self.port), timeout=2) as s:
            s.sendall(b"FLUSHALL\r\n")
            s.recv(16)
