"""The crash matrix: each row injects one fault into a running service and records what clients saw
(status codes), whether anything was lost (index versions, cached models) and how long recovery took.

    hybridllm bench faults [--rows ingest_kill,disk_full,...] [--out benchmarks/results]

Servers run as users run them (`hybridllm serve` processes) on a copy of an index ingested from
corpus/handbook; where the generator is not the point, it is the `openai` backend on the fixture upstream
(benchmarks/harness/fixture_upstream.py), so a row takes seconds. A steady load of rag requests runs
through each server row. The target: nothing lost, and no 5xx other than 503 with Retry-After.
"connection failed" counts requests sent while the only server process was dead (a crash of a single
replica; in a deployment the other replicas take them). Prints one JSON object as the last stdout line;
writes faults.json and faults.md to --out.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import logging
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.harness.environment import environment, environment_markdown
from benchmarks.harness.fixture_upstream import MODEL_NAME, FixtureProcess, gateway_env
from benchmarks.harness.paths import REPO_ROOT, RESULTS_ROOT
from benchmarks.harness.redis_server import RedisServer
from benchmarks.harness.report import markdown_table, write_json
from benchmarks.harness.service_process import ServiceProcess
from benchmarks.harness.stats import percentile
from benchmarks.harness.steady_load import CONNECTION_FAILED, SteadyLoad
from services.core.artifact_cache import DAMAGED_MARK
from services.core.atomic import STAGING_PREFIX
from services.evaluation.local_server import hybridllm_command, service_env
from services.rag.index_store import VERSIONS_DIR, load_current, read_current

logger = logging.getLogger(__name__)

QUESTIONS = (
    "How many vacation days do employees get?",
    "Who approves travel over 2,000 USD?",
    "How do I report a phishing email?",
    "What is the per diem for travel abroad?",
)
WATCH_INTERVAL_S = 0.2


@dataclass
class Row:
    name: str
    fault: str
    user_saw: dict[str, int]
    data_lost: list[str]
    recovery_s: float | None
    recovery: str
    detail: dict[str, Any] = field(default_factory=dict)
    # (seconds since the load began, status, latency ms) of every request of the row's steady load
    timeline: list[tuple[float, str, float]] = field(default_factory=list)

    @property
    def target_met(self) -> bool:
        codes = [s.split()[0] for s in self.user_saw]
        bad_status = any(c.startswith("5") and c != "503" for c in codes) or any(
            "without Retry-After" in s for s in self.user_saw
        )
        return not self.data_lost and not bad_status and not self.detail.get("503_without_retry_after")


@dataclass
class Workbench:
    """What the rows share: a scratch folder, the corpus, an index ingested once, the fixture upstream."""

    work: Path
    corpus: Path
    base_index: Path
    upstream: FixtureProcess

    def index_copy(self, name: str, parent: Path | None = None) -> Path:
        """A copy of the base index with the query embedder's export beside it (as `var/` lays them out)."""
        parent = parent or self.work / name
        parent.mkdir(parents=True, exist_ok=True)
        index_dir = parent / "index"
        shutil.copytree(self.base_index, index_dir, dirs_exist_ok=True)  # it may be a mount point
        exports = self.base_index.parent / "embedder-cache"
        if exports.is_dir() and not (parent / "embedder-cache").exists():
            shutil.copytree(exports, parent / "embedder-cache")
        return index_dir

    def changed_corpus(self, tag: str) -> Path:
        """The corpus plus one new page, so that an ingest must write a new version."""
        corpus = self.work / f"corpus-{tag}"
        if not corpus.exists():
            shutil.copytree(self.corpus, corpus)
        (corpus / f"crash-matrix-{tag}.md").write_text(
            f"# Crash matrix page {tag}\n\nThis page was added by the crash matrix ({tag}) to force a new "
            "index version.\n",
            encoding="utf-8",
        )
        return corpus

    def server(self, index_dir: Path, name: str, **extra: str) -> ServiceProcess:
        env = gateway_env(self.upstream.base_url, max_inflight=8)
        env |= {"HYBRID_DEFAULT_PIPELINE": "rag", "HYBRID_RAG__WATCH_INTERVAL_S": str(WATCH_INTERVAL_S)}
        return ServiceProcess(index_dir=index_dir, extra_env=env | extra, log=self.work / f"{name}.serve.log")


def rag_body(n: int) -> dict[str, Any]:
    question = QUESTIONS[n % len(QUESTIONS)]
    return {"model": "rag", "messages": [{"role": "user", "content": question}], "max_tokens": 8}


def steady_load(server: ServiceProcess) -> SteadyLoad:
    return SteadyLoad(f"{server.base_url}/v1/chat/completions", rag_body, concurrency=2, pause_s=0.05)


def ingest_process(corpus: Path, index_dir: Path, **popen: Any) -> subprocess.Popen[str]:
    command = [*hybridllm_command(), "ingest", str(corpus), "--index", str(index_dir)]
    return subprocess.Popen(
        command, env=service_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen
    )


def run_ingest(corpus: Path, index_dir: Path, **popen: Any) -> tuple[int, str, float]:
    """Exit code, the last line of stderr, seconds."""
    started = time.perf_counter()
    process = ingest_process(corpus, index_dir, **popen)
    _, err = process.communicate(timeout=900)
    lines = [line for line in err.splitlines() if line.strip()]
    return process.returncode, (lines[-1] if lines else ""), time.perf_counter() - started


def staging_folders(index_dir: Path) -> list[str]:
    versions = index_dir / VERSIONS_DIR
    return (
        sorted(p.name for p in versions.iterdir() if p.name.startswith(STAGING_PREFIX))
        if versions.is_dir()
        else []
    )


def index_check(index_dir: Path, expected_version: str, *, or_newer: bool = False) -> list[str]:
    """What was lost: empty when CURRENT names `expected_version` (or, with `or_newer`, a version published
    after it: a kill that came after the publish) and that version loads whole."""
    problems: list[str] = []
    current = read_current(index_dir)
    newer = or_newer and current is not None and current > expected_version
    if current != expected_version and not newer:
        problems.append(f"CURRENT names {current!r}, expected {expected_version!r}")
    try:
        snapshot = load_current(index_dir)
    except Exception as exc:  # any failure to load is a loss, whatever its type
        problems.append(f"the served version does not load: {exc}")
    else:
        if not snapshot.chunks:
            problems.append("the served version has no chunks")
    return problems


def wait_for_version(load: SteadyLoad, version: str, since_s: float, timeout_s: float = 60.0) -> float | None:
    """Seconds after `since_s` until a response named `version` (the server's watcher picked it up)."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        seen = [o.at_s for o in list(load.outcomes) if o.at_s >= since_s and o.index_version == version]
        if seen:
            return min(seen) - since_s
        time.sleep(0.1)
    return None


def no_retry_after(load: SteadyLoad) -> int:
    return sum(1 for o in load.outcomes if o.status == "503" and not o.retry_after)


# --------------------------------------------------------------------------- rows


def row_ingest_kill(bench: Workbench, trials: int = 4, seed: int = 0) -> Row:
    """kill -9 of `hybridllm ingest`: half the trials while the new version is being written."""
    rng = random.Random(seed)
    index_dir = bench.index_copy("ingest-kill")
    before = read_current(index_dir) or ""
    server = bench.server(index_dir, "ingest-kill")
    server.start()
    lost: list[str] = []
    kills: list[dict[str, Any]] = []
    try:
        with steady_load(server) as load:
            for trial in range(trials):
                mid_write = trial % 2 == 0
                process = ingest_process(bench.changed_corpus(f"kill-{trial}"), index_dir)
                staged = _wait_for_staging(index_dir, process) if mid_write else False
                if mid_write:
                    time.sleep(rng.uniform(0.0, 0.02))
                else:
                    time.sleep(rng.uniform(0.3, 2.5))
                exited_first = process.poll() is not None
                process.kill()
                process.communicate()
                # A kill after the publish (CURRENT written, the process still pruning) is no loss either.
                lost += [f"trial {trial}: {p}" for p in index_check(index_dir, before, or_newer=True)]
                published = read_current(index_dir) != before
                kills.append(
                    {"mid_write": mid_write, "staging_seen": staged, "exited_first": exited_first,
                     "published_before_the_kill": published}
                )  # fmt: skip
                before = read_current(index_dir) or before
            recovery_at = load.elapsed_s()
            code, last_line, seconds = run_ingest(bench.changed_corpus("recovered"), index_dir)
            new_version = read_current(index_dir) or ""
            served_after = wait_for_version(load, new_version, recovery_at)
            leftovers = staging_folders(index_dir)
            time.sleep(0.5)
    finally:
        server.stop()
    if code != 0:
        lost.append(f"the ingest after the kills failed ({code}): {last_line}")
    if leftovers:
        lost.append(f"staging folders left after a successful ingest: {leftovers}")
    return Row(
        name="ingest_kill",
        fault=f"kill -9 of `hybridllm ingest`, {trials} times ({sum(k['staging_seen'] for k in kills)} after "
        "the new version's staging folder appeared)",
        user_saw=load.statuses(),
        timeline=[(round(o.at_s, 3), o.status, round(o.latency_ms, 1)) for o in load.outcomes],
        data_lost=lost,
        recovery_s=round(seconds, 2),
        recovery="none needed: the old version served throughout; the next ingest cleaned up and published "
        f"(its wall time; served {_fmt_s(served_after)} after it started)",
        detail={"kills": kills, "503_without_retry_after": no_retry_after(load)},
    )


def _wait_for_staging(index_dir: Path, process: subprocess.Popen[str], timeout_s: float = 300.0) -> bool:
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline and process.poll() is None:
        if staging_folders(index_dir):
            return True
        time.sleep(0.002)
    return False


def row_server_kill_during_swap(bench: Workbench, seed: int = 0) -> Row:
    """kill -9 of the server while its watcher loads a new index version; then a restart."""
    rng = random.Random(seed)
    index_dir = bench.index_copy("swap-kill")
    server = bench.server(index_dir, "swap-kill")
    server.start()
    before = read_current(index_dir)
    try:
        with steady_load(server) as load:
            time.sleep(1.0)
            ingest = threading.Thread(target=run_ingest, args=(bench.changed_corpus("swap"), index_dir))
            ingest.start()
            while read_current(index_dir) == before and ingest.is_alive():
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, WATCH_INTERVAL_S))  # inside the watcher's next reload
            killed_at = load.elapsed_s()
            server.kill()
            ingest.join()
            new_version = read_current(index_dir) or ""
            restart_s = server.start()
            served_after = wait_for_version(load, new_version, killed_at)
            time.sleep(1.0)
            back = load.first_ok_after(killed_at)
    finally:
        server.stop()
    lost = index_check(index_dir, new_version)
    if served_after is None:
        lost.append("the restarted server never served the new version")
    return Row(
        name="server_kill_during_index_swap",
        fault="kill -9 of `hybridllm serve` within one watch interval of a new index version being published",
        user_saw=load.statuses(),
        timeline=[(round(o.at_s, 3), o.status, round(o.latency_ms, 1)) for o in load.outcomes],
        data_lost=lost,
        recovery_s=round(back - killed_at, 2) if back is not None else None,
        recovery=f"restart ({restart_s:.1f} s to ready) serving the new version; kill to first 200",
        detail={"restart_s": round(restart_s, 2), "503_without_retry_after": no_retry_after(load)},
    )


def row_disk_full(bench: Workbench) -> Row:
    """The disk fills while an ingest writes a new version (a small tmpfs; RLIMIT_FSIZE without root)."""
    version_bytes = _tree_bytes(bench.base_index)
    parent = bench.work / "disk-full"
    with _small_disk(parent / "index", int(version_bytes * 1.4) + (256 << 10)) as grow:
        index_dir = bench.index_copy("disk-full", parent=parent)
        before = read_current(index_dir) or ""
        server = bench.server(index_dir, "disk-full")
        server.start()
        try:
            with steady_load(server) as load:
                limit = grow.rlimit
                preexec = (
                    (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))) if limit else None
                )
                code, last_line, _ = run_ingest(bench.changed_corpus("full"), index_dir, preexec_fn=preexec)
                lost = index_check(index_dir, before)
                leftovers = staging_folders(index_dir)
                grown_at = load.elapsed_s()
                grow()
                recode, reline, _ = run_ingest(bench.changed_corpus("full"), index_dir)
                new_version = read_current(index_dir) or ""
                served_after = wait_for_version(load, new_version, grown_at)
                time.sleep(0.5)
        finally:
            server.stop()
    if code == 0:
        lost.append("the ingest did not notice the full disk")
    if leftovers:
        lost.append(f"staging folders left by the failed ingest: {leftovers}")
    if recode != 0 or served_after is None:
        lost.append(f"no recovery after space was freed ({recode}): {reline}")
    return Row(
        name="disk_full_during_ingest",
        fault=f"the disk fills while `hybridllm ingest` writes a new version ({grow.how})",
        user_saw=load.statuses(),
        timeline=[(round(o.at_s, 3), o.status, round(o.latency_ms, 1)) for o in load.outcomes],
        data_lost=lost,
        recovery_s=round(served_after, 2) if served_after is not None else None,
        recovery="free space, ingest again: time from freeing space to the new version being served",
        detail={
            "ingest_exit": code,
            "ingest_error": last_line,
            "503_without_retry_after": no_retry_after(load),
        },
    )


class _Grow:
    """Frees space on the small disk: a bigger tmpfs, or (RLIMIT_FSIZE mode) no limit for the next ingest."""

    def __init__(self, mount: Path | None, rlimit: int | None, how: str) -> None:
        self.mount, self.rlimit, self.how = mount, rlimit, how

    def __call__(self) -> None:
        if self.mount is not None:
            subprocess.run(["mount", "-o", "remount,size=64m", str(self.mount)], check=True)
        self.rlimit = None


@contextlib.contextmanager
def _small_disk(path: Path, size_bytes: int) -> Iterator[_Grow]:
    """`path` becomes a tmpfs of `size_bytes` (the index folder only: the embedder export stays beside)."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        mounted = (
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path)],
                capture_output=True,
                check=False,
            ).returncode
            == 0
        )
    except OSError:  # no mount command
        mounted = False
    if not mounted:  # no privilege to mount: cap the size of any one file instead
        yield _Grow(None, 256 << 10, "RLIMIT_FSIZE 256 KiB per file: no privilege to mount a tmpfs")
        return
    try:
        yield _Grow(path, None, f"a tmpfs of {size_bytes >> 10} KiB, one version fits")
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def row_damaged_caches(bench: Workbench) -> Row:
    """A flipped byte in the converted generator and in the embedder export, found at the next start.

    The embedded generator (ONNX, the packaged model) is converted into a fresh data folder first, so its
    manifest carries digests; its answer and a retrieval before the damage are the reference.
    """
    from services.core.settings import load_settings
    from services.llm.hf_folder import prepare_hf_model

    parent = bench.work / "damaged"
    index_dir = bench.index_copy("damaged")
    data_dir = parent / "data"
    hf_dir = prepare_hf_model(load_settings().generator, REPO_ROOT / "var")
    shutil.copytree(hf_dir, data_dir / "models" / "hf" / hf_dir.name)
    env = {"HYBRID_DATA_DIR": str(data_dir), "HYBRID_OBSERVABILITY__LOG_LEVEL": "WARNING"}
    server = ServiceProcess(index_dir=index_dir, extra_env=env, log=bench.work / "damaged.serve.log")
    cold_s = server.start()
    try:
        reference = _answers(server.base_url)
        server.stop()
        warm_s = server.start()
        damaged = [_flip_bytes(p) for p in (_only(data_dir / "models" / "onnx", "model.onnx.data"),
                                            _only(parent / "embedder-cache", "model.onnx"))]  # fmt: skip
        server.stop()
        with _poll(server.base_url) as seen:
            damaged_start_s = server.start()
        after = _answers(server.base_url)
    finally:
        server.stop()
    lost = [f"{path} was deleted, not moved aside" for path in damaged if not _moved_aside(path)]
    if after != reference:
        lost.append(f"answers differ after the rebuild: {after} != {reference}")
    return Row(
        name="damaged_caches_at_start",
        fault="one flipped byte (same size) in the converted generator's weights and in the embedder export, "
        "then a restart",
        user_saw=seen,
        data_lost=lost,
        recovery_s=round(damaged_start_s, 2),
        recovery=f"automatic: both moved aside (kept) and rebuilt; start with damage vs warm start "
        f"{warm_s:.1f} s, cold start (first conversion) {cold_s:.1f} s",
        detail={"cold_start_s": round(cold_s, 2), "warm_start_s": round(warm_s, 2), "reference": reference},
    )


def _answers(base_url: str) -> dict[str, Any]:
    """A greedy answer of the prompt pipeline and the top chunk of one retrieval: what damage would change."""
    with httpx.Client(timeout=120.0) as client:
        chat = client.post(
            f"{base_url}/v1/chat/completions",
            json={
                "model": "prompt",
                "messages": [{"role": "user", "content": "Name three colours of the rainbow."}],
                "max_tokens": 24,
                "temperature": 0,
            },
        )
        chat.raise_for_status()
        found = client.post(f"{base_url}/v1/retrieve", json={"query": QUESTIONS[0], "top_k": 1})
        found.raise_for_status()
    return {
        "answer": chat.json()["choices"][0]["message"]["content"],
        "top_chunk": found.json()["data"][0]["chunk_id"],
    }


def _only(folder: Path, file_name: str) -> Path:
    (found,) = sorted(folder.glob(f"*/{file_name}"))
    return found


def _flip_bytes(path: Path, count: int = 16) -> Path:
    """Invert `count` bytes in the middle of `path`: same size, other content. Returns the folder."""
    with path.open("r+b") as handle:
        handle.seek(path.stat().st_size // 2)
        data = handle.read(count)
        handle.seek(path.stat().st_size // 2)
        handle.write(bytes(b ^ 0xFF for b in data))
    return path.parent


def _moved_aside(folder: Path) -> bool:
    return folder.is_dir() and any(
        p.name.startswith(f"{folder.name}{DAMAGED_MARK}") for p in folder.parent.iterdir()
    )


@contextlib.contextmanager
def _poll(base_url: str, interval_s: float = 0.25) -> Iterator[dict[str, int]]:
    """While the block runs, ask /readyz and send a chat request every `interval_s`; counts what came back."""
    seen: collections.Counter[str] = collections.Counter()
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(timeout=5.0) as client:
            while not stop.wait(interval_s):
                for method, path, body in (
                    ("GET", "/readyz", None),
                    ("POST", "/v1/chat/completions", rag_body(0)),
                ):
                    try:
                        resp = client.request(method, base_url + path, json=body)
                    except httpx.HTTPError:
                        status = CONNECTION_FAILED
                    else:
                        status = str(resp.status_code)
                        if method == "POST" and status == "503" and "retry-after" not in resp.headers:
                            status += " without Retry-After"
                    seen[f"{status} ({path})"] += 1

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    result: dict[str, int] = {}
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        result.update(sorted(seen.items()))


def row_redis_dies(bench: Workbench, *, policy: str = "allow", down_s: float = 3.0) -> Row:
    """kill -9 of the Redis that holds the shared limits and the response cache (exact), under load; it
    comes back after `down_s`.

    Redis runs with an append-only file fsynced every second (the persistence deploy/ describes); the
    daily token count and the cached answers read a second and a half before the kill must survive.
    """
    redis = RedisServer(bench.work / f"redis-{policy}", persist=True)
    redis.start()
    env = {
        "HYBRID_REDIS__URL": redis.url,
        "HYBRID_LIMITS__BACKEND": "redis",
        "HYBRID_LIMITS__ON_STORE_FAILURE": policy,
        "HYBRID_LIMITS__REQUESTS_PER_MINUTE": "100000",
        "HYBRID_LIMITS__TOKENS_PER_DAY": "100000000",
        "HYBRID_CACHE__MODE": "exact",
        "HYBRID_CACHE__STORE": "redis",
    }
    server = bench.server(bench.index_copy(f"redis-{policy}"), f"redis-{policy}", **env)
    server.start()
    try:
        with steady_load(server) as load:
            time.sleep(2.0)
            counted, cached = _daily_tokens(redis.url), _cache_keys(redis.url)
            time.sleep(1.5)
            killed_at = load.elapsed_s()
            redis.stop(kill=True)
            time.sleep(down_s)
            back_at = load.elapsed_s()
            redis.start()
            recovered = _first_recorded_after(redis.url, back_at, load)
            time.sleep(2.0)
            kept, cached_after = _daily_tokens(redis.url), _cache_keys(redis.url)
    finally:
        server.stop()
        redis.stop()
    lost = [] if kept >= counted > 0 else [f"daily token count {counted} before the kill, {kept} after"]
    if not cached or not cached <= cached_after:
        lost.append(
            f"cached answers: {len(cached)} before the kill, {len(cached & cached_after)} of them after"
        )
    during = [o.latency_ms for o in load.outcomes if killed_at <= o.at_s < back_at]
    before = [o.latency_ms for o in load.outcomes if o.at_s < killed_at]
    return Row(
        name=f"redis_dies_under_load_{policy}",
        fault=f"kill -9 of Redis (limits with `on_store_failure: {policy}`, exact cache) under load, back "
        f"after {down_s:g} s",
        user_saw=load.statuses(),
        timeline=[(round(o.at_s, 3), o.status, round(o.latency_ms, 1)) for o in load.outcomes],
        data_lost=lost,
        recovery_s=recovered,
        recovery="automatic, no gateway restart: from Redis answering again to the first debit it records",
        detail={
            "p50_ms_before": round(percentile(before, 50), 1),
            "p50_ms_while_down": round(percentile(during, 50), 1) if during else None,
            "p99_ms_while_down": round(percentile(during, 99), 1) if during else None,
            "daily_tokens_before_kill": counted,
            "daily_tokens_after_restart": kept,
            "cached_answers_before_kill": len(cached),
            "cached_answers_after_restart": len(cached_after),
            "503_without_retry_after": no_retry_after(load),
        },
    )


def _daily_tokens(url: str) -> int:
    import redis as redis_py

    client = redis_py.Redis.from_url(url, socket_timeout=2.0)
    try:
        total = 0
        for key in client.scan_iter(match="*limits:*daily*"):
            value = client.hget(key, "tokens") if client.type(key) == b"hash" else client.get(key)
            total += int(float(value or 0))
        return total
    finally:
        client.close()


def _cache_keys(url: str) -> set[bytes]:
    import redis as redis_py

    client = redis_py.Redis.from_url(url, socket_timeout=2.0)
    try:
        return set(client.scan_iter(match="*cache:answer:*"))
    finally:
        client.close()


def _first_recorded_after(
    url: str, since_s: float, load: SteadyLoad, timeout_s: float = 10.0
) -> float | None:
    """Seconds from `since_s` (Redis restarted) until the daily count grows again: debits reach it."""
    start = _daily_tokens(url)
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        if _daily_tokens(url) > start:
            return round(load.elapsed_s() - since_s, 2)
        time.sleep(0.05)
    return None


ADMIN_KEY = "crash-matrix-admin"


def row_server_kill_during_adapter_load(bench: Workbench, seed: int = 0) -> Row:
    """kill -9 of the server while POST /admin/adapters publishes and loads a new adapter version.

    The embedded generator (ONNX, LoRA-ready) serves rag with the adapter `rag.adapter` names; the adapter
    is the one `make grounded` trains (var/adapters/grounded), posted again as version v2.
    """
    from services.gateway.adapter_versions import AdapterVersionStore
    from services.gateway.auth import sha256_hex

    adapter = REPO_ROOT / "var" / "adapters" / "grounded"
    versions = bench.work / "adapter-kill" / "adapter-versions"
    env = {
        "HYBRID_DEFAULT_PIPELINE": "rag",
        "HYBRID_GENERATOR__ADAPTERS": json.dumps({"grounded": str(adapter)}),
        "HYBRID_RAG__ADAPTER": "grounded",
        "HYBRID_SERVER__ADAPTER_VERSIONS_DIR": str(versions),
        "HYBRID_AUTH__ADMIN_KEY_SHA256": json.dumps([sha256_hex(ADMIN_KEY)]),
        "HYBRID_OBSERVABILITY__LOG_LEVEL": "WARNING",
    }
    index_dir = bench.index_copy("adapter-kill")
    server = ServiceProcess(index_dir=index_dir, extra_env=env, log=bench.work / "adapter-kill.serve.log")
    server.start()
    rng = random.Random(seed)
    posted: dict[str, Any] = {}
    try:
        with steady_load(server) as load:
            time.sleep(2.0)
            post = threading.Thread(target=_post_adapter, args=(server.base_url, adapter, "v2", posted))
            post.start()
            time.sleep(rng.uniform(0.05, 0.5))
            killed_at = load.elapsed_s()
            server.kill()
            post.join()
            published = AdapterVersionStore(versions).current()
            restart_s = server.start()
            time.sleep(1.0)
            back = load.first_ok_after(killed_at)
            after_restart = _adapter_version(server.base_url)
            _post_adapter(server.base_url, adapter, "v2", posted)
            after_repost = _adapter_version(server.base_url)
    finally:
        server.stop()
    expected = published["grounded"].version if "grounded" in published else "initial"
    lost: list[str] = []
    if after_restart != expected:
        lost.append(f"after the restart it serves {after_restart!r}, the published version is {expected!r}")
    if after_repost != "v2" or posted.get("status") != 200:
        lost.append(f"posting v2 again gave {posted} and then served {after_repost!r}")
    return Row(
        name="server_kill_during_adapter_load",
        fault="kill -9 of `hybridllm serve` (ONNX, LoRA) while POST /admin/adapters loads version v2",
        user_saw=load.statuses(),
        timeline=[(round(o.at_s, 3), o.status, round(o.latency_ms, 1)) for o in load.outcomes],
        data_lost=lost,
        recovery_s=round(back - killed_at, 2) if back is not None else None,
        recovery=f"restart ({restart_s:.1f} s to ready) on the last published version ({expected}); "
        "kill to first 200",
        detail={"published_at_kill": expected, "503_without_retry_after": no_retry_after(load)},
    )


def _post_adapter(base_url: str, adapter: Path, version: str, result: dict[str, Any]) -> None:
    body = {"name": "grounded", "path": str(adapter), "version": version}
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    try:
        resp = httpx.post(f"{base_url}/admin/adapters", json=body, headers=headers, timeout=120.0)
        result["status"] = resp.status_code
    except httpx.HTTPError as exc:
        result["status"] = type(exc).__name__


def _adapter_version(base_url: str) -> str | None:
    resp = httpx.post(f"{base_url}/v1/chat/completions", json=rag_body(0), timeout=120.0)
    resp.raise_for_status()
    adapter = resp.json()["hybrid"].get("adapter") or {}
    return adapter.get("version")


def _tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _fmt_s(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


ROWS: dict[str, Callable[[Workbench], Row]] = {
    "ingest_kill": row_ingest_kill,
    "server_kill_during_index_swap": row_server_kill_during_swap,
    "disk_full_during_ingest": row_disk_full,
    "damaged_caches_at_start": row_damaged_caches,
    "server_kill_during_adapter_load": row_server_kill_during_adapter_load,
    "redis_dies_under_load_allow": row_redis_dies,
    "redis_dies_under_load_deny": lambda bench: row_redis_dies(bench, policy="deny"),
}


@contextlib.contextmanager
def workbench(work: Path, corpus: Path) -> Iterator[Workbench]:
    """Ingest `corpus` once (the export of the query embedder lands beside it), start the fixture upstream."""
    base_index = work / "base" / "index"
    code, last_line, _ = run_ingest(corpus, base_index)
    if code != 0:
        raise RuntimeError(f"ingest of {corpus} failed: {last_line}")
    exports = REPO_ROOT / "var" / "embedder-cache"
    # Saves each server row the embedder export; an ingest with the ONNX embedder has made it already.
    if exports.is_dir() and not (base_index.parent / "embedder-cache").exists():
        shutil.copytree(exports, base_index.parent / "embedder-cache")
    upstream = FixtureProcess(delay_ms=20.0, tokens=8)
    upstream.start()
    try:
        yield Workbench(work=work, corpus=corpus, base_index=base_index, upstream=upstream)
    finally:
        upstream.stop()


def run(rows: Sequence[str], work: Path, corpus: Path) -> dict[str, Any]:
    results: list[Row] = []
    with workbench(work, corpus) as bench:
        for name in rows:
            logger.info("crash matrix: %s", name)
            results.append(ROWS[name](bench))
    return {
        "environment": environment(),
        "rows": [asdict(r) | {"target_met": r.target_met} for r in results],
        "target_met": all(r.target_met for r in results),
        "load_average": list(os.getloadavg()),
        "upstream_model": MODEL_NAME,
    }


def write_plot(payload: dict[str, Any], out: Path) -> str | None:
    """Latency against time per row with a steady load, one colour per status: the outage and recovery."""
    rows = [r for r in payload["rows"] if r.get("timeline")]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 1, figsize=(9, 2.2 * len(rows)), squeeze=False)
    for ax, row in zip(axes[:, 0], rows, strict=True):
        for status in sorted({s for _, s, _ in row["timeline"]}):
            points = [(t, ms) for t, s, ms in row["timeline"] if s == status]
            ax.scatter([t for t, _ in points], [ms for _, ms in points], s=6, label=status)
        ax.set_title(row["name"], fontsize=9)
        ax.set_ylabel("latency ms")
        ax.set_yscale("log")
        ax.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("seconds since the load began")
    fig.tight_layout()
    fig.savefig(out / "faults.png", dpi=110)
    plt.close(fig)
    return "faults.png"


def write_report(payload: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "faults.json", payload)
    plot = write_plot(payload, out)
    table = markdown_table(
        ["fault", "what clients saw", "data lost", "recovery (s)", "recovery", "target met"],
        [
            [
                r["fault"],
                ", ".join(f"{n}x {s}" for s, n in r["user_saw"].items()) or "no requests",
                "; ".join(r["data_lost"]) or "nothing",
                "-" if r["recovery_s"] is None else r["recovery_s"],
                r["recovery"],
                "yes" if r["target_met"] else "**no**",
            ]
            for r in payload["rows"]
        ],
        digits=2,
    )
    load = ", ".join(f"{x:.2f}" for x in payload["load_average"])
    text = (
        "# Crash matrix\n\n"
        f"{environment_markdown(payload.get('environment'))}\n\n"
        "Written by `hybridllm bench faults` (benchmarks/system/crash_matrix.py). Each row injects one "
        "fault into a running service under a steady load of rag requests (2 clients). Target: nothing "
        "lost and no 5xx other than 503 with Retry-After. "
        f"`{CONNECTION_FAILED}` counts requests sent while the only server process was dead: with one "
        "replica a crash is an outage; in a deployment the other replicas answer them.\n\n"
        f"{table}\n\n"
        + (f"![latency of each request over time, by status]({plot})\n\n" if plot else "")
        + f"Load average at the end (1, 5, 15 min): {load}. Details per row: faults.json.\n"
    )
    (out / "faults.md").write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of: {', '.join(ROWS)}")
    parser.add_argument("--corpus", type=Path, default=REPO_ROOT / "corpus" / "handbook")
    parser.add_argument("--out", type=Path, default=RESULTS_ROOT)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args(argv)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"--rows: unknown row {unknown[0]!r} (choose from {', '.join(ROWS)})")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with tempfile.TemporaryDirectory(prefix="hybridllm-faults-", dir=args.work) as tmp:
        payload = run(rows, Path(tmp), args.corpus)
    write_report(payload, args.out)
    print(json.dumps(payload), flush=True)
    return 0 if payload["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
