"""Soak: steady load at half of the measured capacity, with an index swap and an upstream restart in the
middle. Errors (goal: zero), latency p50/p99 before, during and after the events, RSS growth of the
service process (goal: under 10 %).

    python -m benchmarks.system.soak --duration 180

The service runs as a user runs it (`hybridllm ingest`, `hybridllm serve`, a subprocess) with the openai
backend against benchmarks/harness/fixture_upstream.py (a fixed-delay OpenAI-compatible upstream, its own
process, so it can be killed and restarted) and a second fixture as `fallback_generator`. The load generator
is an async client in this process. Prints one JSON object as the last stdout line; writes soak.json, soak.md
and soak.png to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.harness.environment import environment, environment_markdown
from benchmarks.harness.fixture_upstream import MODEL_NAME, FixtureProcess
from benchmarks.harness.paths import REPO_ROOT, RESULTS_ROOT
from benchmarks.harness.report import markdown_table, write_json
from benchmarks.harness.stats import percentile
from services.evaluation.local_server import ingest, service_env, started_service

logger = logging.getLogger(__name__)

ADMIN_KEY = "soak-admin-key"
QUESTIONS = (
    "How many vacation days do new employees get?",
    "What is the per diem for travel abroad?",
    "How do I report a phishing email?",
    "Who approves expenses above the limit?",
    "How long is parental leave?",
    "What are the support tiers and their SLAs?",
)
RAMP_LEVELS = (1, 4, 16)
GOAL_RSS_GROWTH_PCT = 10.0
SETTLE_S = 10.0  # after the last event, still counted as "during"


@dataclass(slots=True)
class Sample:
    sent_at: float  # seconds since the steady load began
    e2e_ms: float
    ok: bool
    backend: str | None = None
    index_version: str | None = None
    fallback: bool = False
    error: str | None = None


@dataclass(slots=True)
class Event:
    name: str
    start: float
    end: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)


@contextmanager
def fixtures(delay_ms: float, tokens: int) -> Iterator[tuple[FixtureProcess, FixtureProcess]]:
    primary, backup = FixtureProcess(delay_ms, tokens), FixtureProcess(delay_ms, tokens)
    try:
        primary.start()
        backup.start()
        yield primary, backup
    finally:
        primary.stop()
        backup.stop()


def service_config(primary: FixtureProcess, backup: FixtureProcess, path: Path) -> Path:
    from services.gateway.auth import sha256_hex

    upstream = {"backend": "openai", "model": MODEL_NAME, "max_retries": 0, "timeout_s": 5.0}
    upstream |= {"max_concurrency": 64, "max_queue": 256}
    config = {
        "default_pipeline": "rag",
        "generator": {**upstream, "name": "primary", "base_url": f"{primary.base_url}/v1"},
        "fallback_generator": {**upstream, "name": "backup", "base_url": f"{backup.base_url}/v1"},
        "circuit": {"failure_threshold": 3, "window_s": 10.0, "cooldown_s": 2.0},
        "rag": {"watch_interval_s": 0},
        "auth": {"admin_key_sha256": [sha256_hex(ADMIN_KEY)]},
        "observability": {"log_level": "WARNING"},
    }
    path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    return path


def rss_bytes(pid: int) -> int | None:
    try:
        import psutil

        return int(psutil.Process(pid).memory_info().rss)
    except ImportError:
        pass
    except Exception:  # the process is gone
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


async def one_request(client: httpx.AsyncClient, base_url: str, question: str, max_tokens: int) -> Sample:
    body = {"model": "rag", "messages": [{"role": "user", "content": question}], "max_tokens": max_tokens}
    started = time.perf_counter()
    try:
        resp = await client.post(f"{base_url}/v1/chat/completions", json=body)
    except httpx.HTTPError as exc:
        return Sample(0.0, (time.perf_counter() - started) * 1000.0, False, error=type(exc).__name__)
    e2e_ms = (time.perf_counter() - started) * 1000.0
    if resp.status_code != 200:
        return Sample(0.0, e2e_ms, False, error=f"{resp.status_code}: {resp.text[:120]}")
    hybrid = resp.json().get("hybrid", {})
    backend = (hybrid.get("backend") or {}).get("name")
    return Sample(0.0, e2e_ms, True, backend, hybrid.get("index_version"), "fallback" in hybrid)


async def measure_capacity(
    client: httpx.AsyncClient, base_url: str, max_tokens: int, seconds_per_level: float
) -> list[dict[str, Any]]:
    """Closed loop at each concurrency level for a fixed time; throughput of successful requests."""
    levels = []
    for concurrency in RAMP_LEVELS:
        deadline = time.perf_counter() + seconds_per_level
        samples: list[Sample] = []

        async def worker(offset: int, samples: list[Sample] = samples, deadline: float = deadline) -> None:
            n = offset
            while time.perf_counter() < deadline:
                samples.append(await one_request(client, base_url, QUESTIONS[n % len(QUESTIONS)], max_tokens))
                n += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
        ok = [s.e2e_ms for s in samples if s.ok]
        levels.append(
            {
                "concurrency": concurrency,
                "completed": len(ok),
                "failed": len(samples) - len(ok),
                "req_per_s": round(len(ok) / elapsed, 2),
                "p50_ms": round(percentile(ok, 50), 1),
                "p99_ms": round(percentile(ok, 99), 1),
            }
        )
        logger.info("capacity at concurrency %d: %s", concurrency, levels[-1])
    return levels


async def swap_index(
    client: httpx.AsyncClient, base_url: str, corpus: Path, index_dir: Path, clock: Any
) -> Event:
    """A changed corpus ingested by `hybridllm ingest` into the served index, then an admin reload."""
    event = Event("index swap", clock())
    (corpus / "soak-swap.md").write_text(
        "# Soak swap\n\nThis document was added during the soak benchmark to force a new index version.\n",
        encoding="utf-8",
    )
    await asyncio.to_thread(ingest, corpus, index_dir, service_env(), 600.0)
    resp = await client.post(
        f"{base_url}/admin/reload-index", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    )
    event.end = clock()
    event.detail = {"status": resp.status_code, **(resp.json() if resp.status_code == 200 else {})}
    return event


async def restart_upstream(primary: FixtureProcess, down_s: float, clock: Any) -> Event:
    event = Event("upstream restart", clock())
    await asyncio.to_thread(primary.kill)
    await asyncio.sleep(down_s)
    await asyncio.to_thread(primary.start)
    event.end = clock()
    event.detail = {"down_s": down_s}
    return event


async def steady_load(
    base_url: str,
    pid: int,
    rate: float,
    duration_s: float,
    max_tokens: int,
    primary: FixtureProcess,
    corpus: Path,
    index_dir: Path,
    seed: int,
) -> tuple[list[Sample], list[Event], list[tuple[float, int]]]:
    """Open-loop Poisson arrivals; the index swap at 35 % of the run, the upstream restart at 50 %."""
    rng = random.Random(seed)
    samples: list[Sample] = []
    rss: list[tuple[float, int]] = []
    origin = time.perf_counter()

    def clock() -> float:
        return time.perf_counter() - origin

    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0), limits=limits) as client:

        async def timed(question: str) -> None:
            sent_at = clock()
            sample = await one_request(client, base_url, question, max_tokens)
            sample.sent_at = sent_at
            samples.append(sample)

        async def sample_rss() -> None:
            while True:
                value = rss_bytes(pid)
                if value is not None:
                    rss.append((clock(), value))
                await asyncio.sleep(1.0)

        async def events() -> list[Event]:
            await asyncio.sleep(duration_s * 0.35)
            swap = await swap_index(client, base_url, corpus, index_dir, clock)
            await asyncio.sleep(max(0.0, duration_s * 0.5 - clock()))
            restart = await restart_upstream(primary, 3.0, clock)
            return [swap, restart]

        sampler = asyncio.create_task(sample_rss())
        event_task = asyncio.create_task(events())
        in_flight: set[asyncio.Task[None]] = set()
        next_at, n = 0.0, 0
        while next_at < duration_s:
            await asyncio.sleep(max(0.0, next_at - clock()))
            task = asyncio.create_task(timed(QUESTIONS[n % len(QUESTIONS)]))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            n += 1
            next_at += rng.expovariate(rate)
        await asyncio.gather(*in_flight)
        happened = await event_task
        sampler.cancel()
    return samples, happened, rss


def phase_summary(samples: Sequence[Sample]) -> dict[str, Any]:
    ok = [s.e2e_ms for s in samples if s.ok]
    return {
        "requests": len(samples),
        "errors": len(samples) - len(ok),
        "fallbacks": sum(1 for s in samples if s.fallback),
        "p50_ms": round(percentile(ok, 50), 1) if ok else None,  # None, not NaN: the JSON stays JSON
        "p99_ms": round(percentile(ok, 99), 1) if ok else None,
    }


def ratio(numerator: float | None, denominator: float | None) -> str:
    return f"{numerator / denominator:.2f}x" if numerator and denominator else "n/a"


def summarize(
    samples: Sequence[Sample], events: Sequence[Event], rss: Sequence[tuple[float, int]]
) -> dict[str, Any]:
    first_event = min(e.start for e in events)
    last_event = max(e.end for e in events) + SETTLE_S
    phases = {
        "before": [s for s in samples if s.sent_at < first_event],
        "during": [s for s in samples if first_event <= s.sent_at < last_event],
        "after": [s for s in samples if s.sent_at >= last_event],
    }
    errors = [s.error for s in samples if not s.ok]
    rss_start, rss_end = rss[0][1], rss[-1][1]
    versions = sorted({s.index_version for s in samples if s.index_version}, key=lambda v: v or "")
    return {
        "requests": len(samples),
        "errors": len(errors),
        "error_samples": sorted(set(str(e) for e in errors))[:5],
        "fallbacks": sum(1 for s in samples if s.fallback),
        "phases": {name: phase_summary(group) for name, group in phases.items()},
        "index_versions_seen": versions,
        "rss_mb": {
            "start": round(rss_start / 2**20, 1),
            "end": round(rss_end / 2**20, 1),
            "max": round(max(v for _, v in rss) / 2**20, 1),
            "growth_pct": round((rss_end - rss_start) / rss_start * 100.0, 2),
        },
        "events": [
            {"name": e.name, "start_s": round(e.start, 2), "end_s": round(e.end, 2), **e.detail}
            for e in events
        ],
    }


def write_plot(
    samples: Sequence[Sample], events: Sequence[Event], rss: Sequence[tuple[float, int]], path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lat, mem) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, height_ratios=(3, 1))
    for backend, colour in (("primary", "tab:blue"), ("backup", "tab:orange")):
        points = [(s.sent_at, s.e2e_ms) for s in samples if s.ok and s.backend == backend]
        if points:
            lat.scatter(*zip(*points, strict=True), s=4, color=colour, label=f"answered by {backend}")
    failed = [(s.sent_at, s.e2e_ms) for s in samples if not s.ok]
    if failed:
        lat.scatter(*zip(*failed, strict=True), s=16, marker="x", color="red", label="error")
    for event, colour in zip(events, ("tab:green", "tab:purple"), strict=False):
        for ax in (lat, mem):
            ax.axvspan(event.start, max(event.end, event.start + 0.5), color=colour, alpha=0.2)
        lat.text(event.start, 1.0, f" {event.name}", transform=lat.get_xaxis_transform(), va="top")
    lat.set_yscale("log")
    lat.set_ylabel("end-to-end latency (ms)")
    lat.legend(loc="upper right", fontsize=8)
    lat.set_title("Soak: latency per request (by send time) with the events marked")
    mem.plot([t for t, _ in rss], [v / 2**20 for _, v in rss], color="black")
    mem.set_ylabel("service RSS (MiB)")
    mem.set_xlabel("seconds since the steady load began")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(result: dict[str, Any], out_dir: Path) -> None:
    s = result["soak"]
    rows = [
        [name, p["requests"], p["errors"], p["fallbacks"], p["p50_ms"], p["p99_ms"]]
        for name, p in s["phases"].items()
    ]
    before, during, after = (s["phases"][k] for k in ("before", "during", "after"))
    ramp = [
        [lvl["concurrency"], lvl["completed"], lvl["failed"], lvl["req_per_s"], lvl["p50_ms"], lvl["p99_ms"]]
        for lvl in result["capacity"]["levels"]
    ]
    rss = s["rss_mb"]
    lines = [
        "# Soak benchmark",
        "",
        environment_markdown(result.get("environment")),
        "",
        f"Machine: {os.cpu_count()} cores (shared), load average {result['load_average']:.1f} at start. "
        f"`rag` pipeline, openai backend against the fixture upstream ({result['config']['delay_ms']:g} ms "
        f"delay, {result['config']['tokens']} tokens) with a second fixture as `fallback_generator`; "
        f"non-streaming, max_tokens {result['config']['max_tokens']}.",
        "",
        "## Capacity (closed loop, short ramp)",
        "",
        markdown_table(["concurrency", "ok", "failed", "req/s", "p50 ms", "p99 ms"], ramp),
        "",
        f"Capacity {result['capacity']['req_per_s']:.1f} req/s; steady load at half: "
        f"**{result['rate']:.1f} req/s** open loop (Poisson) for {result['config']['duration']:.0f} s.",
        "",
        "## Steady load with an index swap and an upstream restart",
        "",
        markdown_table(["phase", "requests", "errors", "fallbacks", "p50 ms", "p99 ms"], rows),
        "",
        f"- Errors: **{s['errors']}** of {s['requests']} (goal 0) {s['error_samples'] or ''}",
        f"- p99 during / before: {ratio(during['p99_ms'], before['p99_ms'])}; "
        f"after / before: {ratio(after['p99_ms'], before['p99_ms'])}",
        f"- RSS of the service: {rss['start']} MiB -> {rss['end']} MiB (max {rss['max']}), "
        f"growth **{rss['growth_pct']:+.2f} %** (goal < {GOAL_RSS_GROWTH_PCT:g} %)",
        f"- Index versions answered from: {', '.join(s['index_versions_seen'])}",
        "- Events (seconds since the steady load began): "
        + "; ".join(f"{e['name']} {e['start_s']}-{e['end_s']} s" for e in s["events"]),
        f"- 'during' is from the first event's start to {SETTLE_S:g} s after the last event's end.",
        "",
        "![latency over time](soak.png)",
        "",
    ]
    (out_dir / "soak.md").write_text("\n".join(lines), encoding="utf-8")


async def soak(args: argparse.Namespace, base_url: str, pid: int, primary: FixtureProcess, tmp: Path) -> Any:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0), limits=limits) as client:
        for question in QUESTIONS:  # warm-up
            await one_request(client, base_url, question, args.max_tokens)
        levels = await measure_capacity(client, base_url, args.max_tokens, args.ramp_s)
    capacity = max(level["req_per_s"] for level in levels)
    rate = capacity / 2.0
    samples, events, rss = await steady_load(
        base_url, pid, rate, args.duration, args.max_tokens, primary, tmp / "corpus", tmp / "index", args.seed
    )
    return {"levels": levels, "req_per_s": capacity}, rate, samples, events, rss


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration", type=float, default=150.0, help="steady-load seconds (default %(default)s)"
    )
    parser.add_argument("--ramp-s", type=float, default=8.0, help="seconds per capacity level")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="fixture delay before the answer")
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS_ROOT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    load_average = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(prefix="hybridllm-soak-") as tmp_name:
        tmp = Path(tmp_name)
        shutil.copytree(REPO_ROOT / "corpus" / "handbook", tmp / "corpus")
        logger.info("ingesting the handbook")
        ingest(tmp / "corpus", tmp / "index", service_env(), 600.0)
        with fixtures(args.delay_ms, args.tokens) as (primary, backup):
            config = service_config(primary, backup, tmp / "soak.yaml")
            with started_service(None, config=config, index_dir=tmp / "index", ready_timeout_s=300) as svc:
                capacity, rate, samples, events, rss = asyncio.run(
                    soak(args, svc.base_url, svc.pid, primary, tmp)
                )

    summary = summarize(samples, events, rss)
    result = {
        "benchmark": "soak",
        "environment": environment(),
        "load_average": load_average,
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "capacity": capacity,
        "rate": round(rate, 2),
        "soak": summary,
        "goals": {
            "zero_errors": summary["errors"] == 0,
            "rss_growth_under_10pct": summary["rss_mb"]["growth_pct"] < GOAL_RSS_GROWTH_PCT,
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "soak.json", result)
    write_plot(samples, events, rss, args.out / "soak.png")
    write_report(result, args.out)
    phases = summary["phases"]
    headline = {
        "benchmark": "soak",
        "capacity_req_per_s": capacity["req_per_s"],
        "rate_req_per_s": result["rate"],
        "requests": summary["requests"],
        "errors": summary["errors"],
        "fallbacks": summary["fallbacks"],
        **{f"p50_ms_{k}": v["p50_ms"] for k, v in phases.items()},
        **{f"p99_ms_{k}": v["p99_ms"] for k, v in phases.items()},
        "rss_growth_pct": summary["rss_mb"]["growth_pct"],
        "goals": result["goals"],
    }
    print(json.dumps(headline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
