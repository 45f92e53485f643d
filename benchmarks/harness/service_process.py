"""`hybridllm serve` as a process on a fixed port that can be killed (-9) and started again at the same
address, for fault benches: clients see the outage a crash causes, then the recovery."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from services.core.ports import free_port
from services.evaluation.local_server import hybridllm_command, service_env, stop, wait_ready


def crash(process: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL, as a crash: no drain, no shutdown handlers, open connections reset."""
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGKILL)
        process.wait()


class ServiceProcess:
    """One server; `extra_env` holds its HYBRID_* settings, `log` collects every run's output."""

    def __init__(
        self, *, index_dir: Path | None, extra_env: Mapping[str, str], log: Path, config: Path | None = None
    ) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._env = service_env(extra_env)
        self._command = [*hybridllm_command(), "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        if index_dir is not None:
            self._command += ["--index", str(index_dir)]
        if config is not None:
            self._command += ["--config", str(config)]
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self, *, ready_timeout_s: float = 600.0) -> float:
        """Start and wait for /readyz; returns the seconds it took."""
        started = time.perf_counter()
        with self.log.open("ab") as out:
            self._process = subprocess.Popen(
                self._command, env=self._env, stdout=out, stderr=subprocess.STDOUT
            )
        wait_ready(self.base_url, self._process, self.log, ready_timeout_s)
        return time.perf_counter() - started

    def kill(self) -> None:
        crash(self._process)

    def stop(self) -> None:
        if self._process is not None:
            stop(self._process)
