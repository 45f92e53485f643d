"""A real Prometheus scrapes a live gateway every second, and PromQL over its HTTP API answers the
dashboard's question: the p95 latency of each pipeline stage that ran.

The gateway serves `prompt` and `rag` (real privacy gate, MiniLM, FAISS, BM25, MMR reranking) with the
`openai` backend on the benchmark fixture upstream. Prometheus is Debian's `prometheus` package (installed
by .ci/deploy-tools.sh); the test is skipped without it. Bounded: it gives up after 60 s.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.harness.fixture_upstream import FixtureBehaviour, running_fixture_upstream
from services.core.ports import free_port
from services.evaluation.local_server import stop
from services.gateway.app import create_app
from services.gateway.metrics import STAGE_BUCKETS
from tests.conftest import serve_in_thread
from tests.gateway.test_metrics import chat, gateway_settings

pytestmark = pytest.mark.integration

P95_BY_STAGE = "histogram_quantile(0.95, sum by (le, stage) (rate(hybrid_stage_duration_seconds_bucket[1m])))"
DEADLINE_S = 60.0
RAN = {"privacy", "embed", "search", "rerank", "select", "generate", "verify"}


def prometheus_binary() -> str:
    found = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    if found is None:
        pytest.skip("prometheus is not installed (Debian package `prometheus`; see .ci/deploy-tools.sh)")
    return found


@pytest.fixture(scope="module")
def gateway(handbook_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("prom-gw")
    with running_fixture_upstream(FixtureBehaviour(delay_s=0.005, tokens=24)) as upstream:
        settings = gateway_settings(
            upstream,
            tmp,
            rag={"index_dir": str(handbook_index), "watch_interval_s": 0, "rerank": {"reranker": "mmr"}},
        )
        with serve_in_thread(create_app(settings)) as url:
            yield url


@pytest.fixture
def prometheus(gateway: str, tmp_path: Path) -> Iterator[str]:
    binary = prometheus_binary()
    target = gateway.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        f"  - job_name: hybridllm\n    static_configs:\n      - targets: ['{target}']\n"
    )
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _get(url + "/-/ready") == 200, "Prometheus to be ready", process, tmp_path)
        yield url
    finally:
        stop(process, grace_s=15.0)
        log.close()


def _get(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


def wait_for(check: Any, what: str, process: subprocess.Popen[bytes], tmp_path: Path) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not check():
        if process.poll() is not None:
            tail = (tmp_path / "prometheus.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"prometheus exited with code {process.returncode}:\n{tail}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what} after {DEADLINE_S:.0f} s")
        time.sleep(0.5)


def query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    resp = httpx.get(prometheus + "/api/v1/query", params={"query": promql}, timeout=5)
    resp.raise_for_status()
    body = resp.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def numeric_by_stage(prometheus: str) -> dict[str, float]:
    values = {
        row["metric"].get("stage", ""): float(row["value"][1]) for row in query(prometheus, P95_BY_STAGE)
    }
    return {stage: value for stage, value in values.items() if not math.isnan(value)}


def bucket_bound(seconds: float) -> float:
    """The upper bound of the histogram bucket an observation of `seconds` falls in."""
    return next(bound for bound in STAGE_BUCKETS if seconds <= bound)


def test_p95_stage_latency_over_the_prometheus_http_api(gateway: str, prometheus: str) -> None:
    # One scrape before the requests, so the rates have a zero to grow from.
    up = 'up{job="hybridllm"} == 1'
    deadline = time.monotonic() + DEADLINE_S
    while not query(prometheus, up):
        assert time.monotonic() < deadline, "Prometheus never scraped the gateway"
        time.sleep(0.5)
    extensions = [
        chat(gateway, pipeline, "How many vacation days do I get?") for pipeline in ("prompt", "rag")
    ]
    extensions += [chat(gateway, "rag", "Who approves a team offsite?", stream=True)]
    ran = {stage for e in extensions for stage in e["timings_ms"]} - {"total"}
    assert ran == RAN

    p95: dict[str, float] = {}
    while set(p95) != ran:  # two or more scrapes after the requests
        assert time.monotonic() < deadline, f"p95 only for {sorted(p95)} after {DEADLINE_S:.0f} s"
        time.sleep(1.0)
        p95 = numeric_by_stage(prometheus)
    for stage, seconds in p95.items():
        # timings_ms is rounded to 3 decimals (±0.5 µs): an observation can sit just above a bucket bound
        # that its rounded value equals, so allow for the rounding before finding the bucket.
        slowest = max(e["timings_ms"].get(stage, 0.0) for e in extensions) / 1000 + 1e-6
        # Interpolated inside the buckets: above zero, at most the bound of the slowest observation's bucket.
        assert 0 < seconds <= bucket_bound(slowest), (stage, seconds, slowest)
    # The counters agree too: Prometheus saw every request of this test.
    scraped = query(prometheus, 'sum(hybrid_requests_total{status="ok"})')
    assert float(scraped[0]["value"][1]) == len(extensions)
