"""Start the service as a user would (`hybridllm ingest`, `hybridllm serve`): for evals, benches, tests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from services.core.ports import free_port
from services.evaluation.e2e import evaluate_e2e
from services.evaluation.scoring import load_eval_items

logger = logging.getLogger(__name__)

DEFAULT_READY_TIMEOUT_S = 600.0
DEFAULT_INGEST_TIMEOUT_S = 900.0


@dataclass(frozen=True, slots=True)
class ServiceHandle:
    base_url: str
    pid: int

    def cpu_seconds(self) -> float | None:
        """User + system CPU seconds so far of the server process and its live children (its uvicorn
        workers), from Linux /proc; None elsewhere."""
        total = 0.0
        for pid in (self.pid, *_descendants(self.pid)):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                if pid == self.pid:
                    return None
                continue  # a worker that exited meanwhile
            # Fields 14 and 15 of /proc/PID/stat (utime, stime), counted after the ")" that ends the name.
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            kids = [int(child) for child in children.read_text().split()]
        except (OSError, ValueError):
            continue
        for kid in kids:
            found += [kid, *_descendants(kid)]
    return found


def hybridllm_command() -> list[str]:
    """The `hybridllm` console script of this interpreter's environment, or the module as a fallback."""
    beside = Path(sys.executable).with_name("hybridllm")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("hybridllm")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from services.cli import main; sys.exit(main())"]


def service_env(extra_env: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    if extra_env:
        env.update(extra_env)
    return env


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def ingest(corpus: Path, index_dir: Path, env: Mapping[str, str], timeout_s: float) -> None:
    command = [*hybridllm_command(), "ingest", str(corpus), "--index", str(index_dir)]
    done = subprocess.run(
        command, env=dict(env), capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).splitlines()[-20:])
        raise RuntimeError(f"`hybridllm ingest {corpus}` failed with code {done.returncode}:\n{tail}")


def wait_ready(base_url: str, process: subprocess.Popen[bytes], log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                code = process.returncode
                raise RuntimeError(
                    f"`hybridllm serve` exited with code {code} before /readyz:\n{_tail(log_path)}"
                )
            try:
                if client.get(f"{base_url}/readyz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
    raise TimeoutError(f"`hybridllm serve` not ready after {timeout_s:.0f} s:\n{_tail(log_path)}")


def stop(process: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        logger.warning("service pid %d ignored SIGTERM for %.0f s; killing it", process.pid, grace_s)
        process.kill()
        process.wait()


@contextlib.contextmanager
def started_service(
    corpus: Path | None,
    *,
    extra_env: Mapping[str, str] | None = None,
    config: Path | None = None,
    index_dir: Path | None = None,
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
) -> Iterator[ServiceHandle]:
    """Ingest `corpus` into a temporary index, serve it on a free port of 127.0.0.1; yields its handle.

    `extra_env` sets `HYBRID_...` overrides for the service (e.g. the generator backend). With `index_dir`
    an existing index is served and ingestion is skipped; with neither (corpus None) the service starts
    without an index and offers only the pipelines that need none (`prompt`, `tuned`). The server's
    log goes to a temporary file whose tail is in any error raised. The process is stopped on exit.
    """
    env = service_env(extra_env)
    with tempfile.TemporaryDirectory(prefix="hybridllm-svc-") as tmp:
        tmp_dir = Path(tmp)
        if index_dir is None:
            index_dir = tmp_dir / "index"
            if corpus is not None:
                ingest(corpus, index_dir, env, DEFAULT_INGEST_TIMEOUT_S)
            # else: an empty index folder, so a stray var/index of the caller's is never served by accident
        port = free_port()
        command = [
            *hybridllm_command(),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--index",
            str(index_dir),
        ]
        if config is not None:
            command += ["--config", str(config)]
        log_path = tmp_dir / "serve.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        base_url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(base_url, process, log_path, ready_timeout_s)
            logger.info("service ready at %s (pid %d)", base_url, process.pid)
            yield ServiceHandle(base_url=base_url, pid=process.pid)
        finally:
            stop(process)


@contextlib.contextmanager
def running_service(
    corpus: Path | None,
    *,
    extra_env: Mapping[str, str] | None = None,
    config: Path | None = None,
    index_dir: Path | None = None,
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
) -> Iterator[str]:
    """`started_service`, yielding only the base URL (what evals, benchmarks and tests need)."""
    with started_service(
        corpus, extra_env=extra_env, config=config, index_dir=index_dir, ready_timeout_s=ready_timeout_s
    ) as handle:
        yield handle.base_url


def evaluate_e2e_local(data: Path, corpus: Path | None, **kw: Any) -> dict[str, Any]:
    """`hybridllm eval e2e` without --base-url: start the service on `corpus`, evaluate, stop it.

    `extra_env`, `config` and `index_dir` go to `running_service`; everything else to `evaluate_e2e`.
    The eval file is read first, so a bad row or an unchecked draft fails before anything starts.
    """
    load_eval_items(data, kw.get("limit"), allow_drafts=kw.get("allow_drafts", False))
    service_kw = {key: kw.pop(key) for key in ("extra_env", "config", "index_dir") if key in kw}
    with running_service(corpus, **service_kw) as base_url:
        return asyncio.run(evaluate_e2e(data, base_url=base_url, **kw))
