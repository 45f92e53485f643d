"""Gateway overhead: the same open-loop load sent to the fixture upstream directly and through the gateway.

    python -m benchmarks.system.overhead --rates 50,100,200,400 --duration 10

The gateway serves the `prompt` pipeline with the `openai` backend pointed at the BENCHMARK FIXTURE
upstream (benchmarks/harness/fixture_upstream.py: a fixed delay, no model), so the difference between the
two paths is the gateway: parsing, privacy gate, template, the upstream HTTP hop, metrics, the `hybrid`
extension. Three processes: the fixture, the gateway, and the load generator
(`python -m benchmarks.harness.load`, started per run), so none of them shares an interpreter (GIL) with
another. They still share this machine's cores, and the report says how many there were. Prints one JSON
object as the last stdout line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.harness import prom
from benchmarks.harness.environment import environment, environment_markdown
from benchmarks.harness.fixture_upstream import (
    MODEL_NAME,
    FixtureBehaviour,
    gateway_env,
    running_fixture_upstream,
)
from benchmarks.harness.load import configure_logging
from benchmarks.harness.paths import REPO_ROOT, RESULTS_ROOT
from benchmarks.harness.report import markdown_table, write_json
from services.evaluation.local_server import ServiceHandle, started_service

logger = logging.getLogger(__name__)

GOAL_RATE = 200.0
GOAL_ADDED_P50_MS = 2.0
GOAL_ADDED_P99_MS = 10.0
# Achieved throughput below this share of the offered rate, or this share of failures, is saturation.
SATURATED_THROUGHPUT = 0.9
SATURATED_ERRORS = 0.01
LOAD_WARMUP = 20
IDLE_WAIT_S = 60.0


def run_load_process(
    base_url: str,
    pipeline: str,
    rate: float,
    duration_s: float,
    *,
    max_tokens: int,
    stream: bool,
    out_dir: Path,
) -> dict[str, Any]:
    """One open-loop run by the load generator in its own process; returns its run entry."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.harness.load",
        "--base-url",
        base_url,
        "--pipeline",
        pipeline,
        "--rate",
        str(rate),
        "--duration",
        str(duration_s),
        "--max-tokens",
        str(max_tokens),
        "--warmup",
        str(LOAD_WARMUP),
        "--drain-timeout",
        str(max(5.0, duration_s)),
        "--out",
        str(out_dir),
        "--name",
        out_dir.name,
    ]
    if not stream:
        command.append("--no-stream")
    drain_s = max(5.0, duration_s)
    # A hard bound on the whole run: warm-up, arrivals, drain, start-up and writing the report.
    limit_s = 120.0 + duration_s + drain_s
    try:
        done = subprocess.run(
            command, cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=limit_s
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"load generator did not finish within {limit_s:.0f} s at {rate:g} req/s") from exc
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    results = json.loads((out_dir / "results.json").read_text(encoding="utf-8"))
    run: dict[str, Any] = results["runs"][0]
    return run


def wait_until_idle(base_url: str, timeout_s: float) -> bool:
    """Wait until the gateway reports no request in flight (a backlog from the last run skews the next)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        scrape = prom.scrape_blocking(base_url, timeout_s=5.0)
        if not scrape:  # no answer, or no /metrics: nothing to wait for
            return False
        in_flight = sum(prom.sample_values(scrape, "hybrid_requests_in_flight"))
        if in_flight <= 0:
            return True
        time.sleep(0.5)
    logger.warning("gateway still busy after %.0f s; measuring anyway", timeout_s)
    return False


def _side(run: Mapping[str, Any]) -> dict[str, Any]:
    s = run["summary"]
    sent = s["completed"] + s["failed"]
    return {
        "completed": s["completed"],
        "failed": s["failed"],
        "achieved_rps": s["request_throughput"],
        "error_share": s["failed"] / sent if sent else 0.0,
        "p50_ms": s["e2e_ms"].get("p50"),
        "p90_ms": s["e2e_ms"].get("p90"),
        "p99_ms": s["e2e_ms"].get("p99"),
        "mean_ms": s["e2e_ms"].get("mean"),
        "server": run.get("server", {}),
    }


def compare_rate(rate: float, direct: Mapping[str, Any], gateway: Mapping[str, Any]) -> dict[str, Any]:
    d, g = _side(direct), _side(gateway)

    def added(key: str) -> float | None:
        return g[key] - d[key] if g[key] is not None and d[key] is not None else None

    saturated = (
        g["achieved_rps"] < SATURATED_THROUGHPUT * d["achieved_rps"] or g["error_share"] > SATURATED_ERRORS
    )
    return {
        "rate": rate,
        "direct": d,
        "gateway": g,
        "added_p50_ms": added("p50_ms"),
        "added_p99_ms": added("p99_ms"),
        "added_mean_ms": added("mean_ms"),
        "gateway_saturated": saturated,
    }


def verdict(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    saturation = next((row["rate"] for row in rows if row["gateway_saturated"]), None)
    at_goal = next((row for row in rows if row["rate"] == GOAL_RATE), None)
    out: dict[str, Any] = {
        "saturates_at_rps": saturation,
        "highest_unsaturated_rps": max((r["rate"] for r in rows if not r["gateway_saturated"]), default=None),
    }
    if at_goal is None and saturation is not None and saturation <= GOAL_RATE:
        out["goal"] = {
            "rate": GOAL_RATE,
            "added_p50_ms": None,
            "added_p99_ms": None,
            "p50_met": False,
            "p99_met": False,
            "note": f"the gateway saturated at {saturation:g} req/s, below the goal rate",
        }
    if at_goal is not None:
        p50, p99 = at_goal["added_p50_ms"], at_goal["added_p99_ms"]
        out["goal"] = {
            "rate": GOAL_RATE,
            "added_p50_ms": p50,
            "added_p99_ms": p99,
            "p50_met": p50 is not None and p50 <= GOAL_ADDED_P50_MS,
            "p99_met": p99 is not None and p99 <= GOAL_ADDED_P99_MS,
        }
    return out


def write_overhead_report(results: Mapping[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "results.json", results)
    rows = [
        [
            r["rate"],
            r["direct"]["achieved_rps"],
            r["gateway"]["achieved_rps"],
            r["direct"]["p50_ms"],
            r["gateway"]["p50_ms"],
            r["added_p50_ms"],
            r["direct"]["p99_ms"],
            r["gateway"]["p99_ms"],
            r["added_p99_ms"],
            r["gateway"]["failed"],
            r["gateway_saturated"],
            r.get("gateway_cpu_ms_per_request"),
            " / ".join(f"{x:.1f}" for x in r.get("load_average_1m", [])),
        ]
        for r in results["rows"]
    ]
    headers = [
        "offered req/s",
        "direct req/s",
        "gateway req/s",
        "direct p50",
        "gateway p50",
        "added p50",
        "direct p99",
        "gateway p99",
        "added p99",
        "gateway failed",
        "saturated",
        "gateway CPU ms/req",
        "load avg before / after",
    ]
    v = results["verdict"]
    goal = v.get("goal")
    goal_line = (
        f"Goal at {GOAL_RATE:g} req/s: added p50 <= {GOAL_ADDED_P50_MS:g} ms "
        f"({'met' if goal['p50_met'] else 'NOT met'}: {goal['added_p50_ms']:.2f} ms), added p99 <= "
        f"{GOAL_ADDED_P99_MS:g} ms ({'met' if goal['p99_met'] else 'NOT met'}: "
        f"{goal['added_p99_ms']:.2f} ms)."
        if goal and goal["added_p50_ms"] is not None and goal["added_p99_ms"] is not None
        else f"Goal at {GOAL_RATE:g} req/s: NOT met ({goal['note']}; runs stop at the first saturated rate)."
        if goal and goal.get("note")
        else f"Goal rate {GOAL_RATE:g} req/s was not measured."
    )
    config = results["config"]
    text = "\n".join(
        [
            "# Gateway overhead",
            "",
            environment_markdown(results.get("environment")),
            "",
            f"Fixture upstream (a benchmark fixture, not a model): {config['delay_ms']:g} ms fixed delay, "
            f"{config['tokens']} tokens, {'streaming' if config['stream'] else 'non-streaming'}. "
            f"Open-loop Poisson arrivals, {config['duration_s']:g} s per run, direct and through the gateway "
            "(`prompt` pipeline, `openai` "
            f"backend) at each rate in turn, {config.get('workers', 1)} gateway worker process(es). "
            f"{results['machine']}",
            "",
            markdown_table(headers, rows, digits=2),
            "",
            "Latencies in ms, end to end at the client. Gateway CPU ms/req: the gateway processes' "
            "user+system CPU time over the run (its workers included) divided by the requests it served "
            "(one process's ceiling is about 1000 / that many req/s). Load average: the machine's 1-minute "
            "load before and after the pair of runs (other work on the machine competes for the same "
            "cores). Saturated: the gateway's "
            "achieved rate fell below "
            f"{SATURATED_THROUGHPUT:.0%} of the direct path's, or more than {SATURATED_ERRORS:.0%} of its "
            "requests failed.",
            "",
            f"Gateway saturates at: {v['saturates_at_rps'] or 'not within the rates tested'}"
            f"; highest unsaturated rate: {v['highest_unsaturated_rps']}.",
            "",
            goal_line,
            "",
        ]
    )
    path = out_dir / "report.md"
    path.write_text(text, encoding="utf-8")
    return path


@contextlib.contextmanager
def _gateway(
    gateway_url: str | None, upstream_url: str, max_inflight: int, workers: int
) -> Iterator[ServiceHandle | str]:
    if gateway_url is not None:
        yield gateway_url
        return
    env = {**gateway_env(upstream_url, max_inflight), "HYBRID_SERVER__WORKERS": str(workers)}
    with started_service(None, extra_env=env, ready_timeout_s=180) as handle:
        yield handle


def _cpu(gateway: ServiceHandle | str) -> float | None:
    return None if isinstance(gateway, str) else gateway.cpu_seconds()


def _float_list(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.system.overhead", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rates", type=_float_list, default=[50.0, 100.0, 200.0, 400.0], help="req/s")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="the fixture's fixed delay")
    parser.add_argument("--tokens", type=int, default=16, help="tokens the fixture returns")
    parser.add_argument("--stream", action="store_true", help="streaming requests (default non-streaming)")
    parser.add_argument(
        "--max-inflight", type=int, default=512, help="gateway generator slots for this bench"
    )
    parser.add_argument("--workers", type=int, default=1, help="the gateway's uvicorn worker processes")
    parser.add_argument("--gateway-url", default=None, help="a gateway already pointed at --upstream-url")
    parser.add_argument(
        "--upstream-url", default=None, help="an upstream already running (default: start one)"
    )
    parser.add_argument("--all-rates", action="store_true", help="go on past the first saturated rate")
    parser.add_argument("--name", default="overhead")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/<name>")
    return parser


@contextlib.contextmanager
def _upstream(url: str | None, behaviour: FixtureBehaviour) -> Iterator[str]:
    if url is not None:
        yield url
        return
    with running_fixture_upstream(behaviour) as started:
        yield started


def bench_overhead_main(argv: list[str]) -> int:
    configure_logging()
    args = build_parser().parse_args(argv)
    if not args.rates or any(r <= 0 for r in args.rates) or args.duration <= 0:
        print(json.dumps({"error": f"rates and duration must be > 0, got {args.rates} and {args.duration}"}))
        return 2
    out_dir: Path = args.out or RESULTS_ROOT / args.name
    behaviour = FixtureBehaviour(delay_s=args.delay_ms / 1000.0, tokens=args.tokens)
    rows = []
    try:
        with (
            _upstream(args.upstream_url, behaviour) as upstream_url,
            _gateway(args.gateway_url, upstream_url, args.max_inflight, args.workers) as gateway,
            tempfile.TemporaryDirectory(prefix="overhead-") as tmp,
        ):
            gateway_url = gateway if isinstance(gateway, str) else gateway.base_url
            for rate in args.rates:
                kw = {"max_tokens": args.tokens, "stream": args.stream}
                load_before = os.getloadavg()[0]
                direct = run_load_process(
                    upstream_url,
                    MODEL_NAME,
                    rate,
                    args.duration,
                    out_dir=Path(tmp) / f"direct-{rate:g}",
                    **kw,
                )
                wait_until_idle(gateway_url, timeout_s=IDLE_WAIT_S)
                cpu_before = _cpu(gateway)
                through = run_load_process(
                    gateway_url, "prompt", rate, args.duration, out_dir=Path(tmp) / f"gateway-{rate:g}", **kw
                )
                cpu_after = _cpu(gateway)
                rows.append(compare_rate(rate, direct, through))
                rows[-1]["load_average_1m"] = [load_before, os.getloadavg()[0]]
                if cpu_before is not None and cpu_after is not None:
                    # The load generator's warm-up requests fall inside this window too.
                    served = through["summary"]["completed"] + through["summary"]["failed"] + LOAD_WARMUP
                    rows[-1]["gateway_cpu_ms_per_request"] = (cpu_after - cpu_before) * 1000.0 / served
                logger.info(
                    "%g req/s: added p50 %s ms, p99 %s ms, saturated %s",
                    rate,
                    rows[-1]["added_p50_ms"],
                    rows[-1]["added_p99_ms"],
                    rows[-1]["gateway_saturated"],
                )
                if rows[-1]["gateway_saturated"] and not args.all_rates:
                    # Past saturation, higher rates only grow the backlog; the saturation point is found.
                    break
    except (RuntimeError, TimeoutError) as exc:
        print(json.dumps({"error": str(exc).splitlines()[0]}))
        return 1
    results = {
        "name": args.name,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": environment(),
        "machine": f"{os.cpu_count()} cores visible, shared by the fixture, the gateway and the load "
        "generator.",
        "config": {
            "delay_ms": args.delay_ms,
            "tokens": args.tokens,
            "stream": args.stream,
            "duration_s": args.duration,
            "rates": args.rates,
            "max_inflight": args.max_inflight,
            "workers": args.workers,
        },
        "rows": rows,
        "verdict": verdict(rows),
    }
    report = write_overhead_report(results, out_dir)
    print(
        json.dumps(
            {
                "name": args.name,
                "report": str(report),
                "verdict": results["verdict"],
                "added_ms": {f"{r['rate']:g}": [r["added_p50_ms"], r["added_p99_ms"]] for r in rows},
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(bench_overhead_main(sys.argv[1:]))
