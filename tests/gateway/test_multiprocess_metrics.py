"""Metrics with several worker processes: `hybridllm serve` with 2 workers and PROMETHEUS_MULTIPROC_DIR.

Every scrape, whichever worker answers it, reports the totals of all workers; a new server starts from
zero (a previous server's files are removed); a stopped worker leaves no live gauge behind. One server
start only: each worker takes tens of seconds to build its components on a loaded 2-core machine. The
generator is the `openai` backend on the benchmark fixture upstream, so the workers load no model.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from benchmarks.harness.fixture_upstream import FixtureBehaviour, gateway_env, running_fixture_upstream
from services.evaluation.local_server import started_service
from services.gateway.metrics import claim_multiprocess_dir
from tests.gateway.metrics_scrape import by_process, scrape, total

MAX_REQUESTS = 200
BATCH = 10


def requests_by_process(directory: Path) -> dict[str, float]:
    """hybrid_requests_total per worker, read from the workers' own files (file name: counter_<pid>.db)."""
    return by_process(directory, "counter_*.db", "hybrid_requests_total")


def send(client: httpx.Client, base_url: str, count: int) -> None:
    body = {"model": "prompt", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 4}
    for _ in range(count):
        # A new connection per request, so the kernel hands requests to either worker.
        resp = client.post(base_url + "/v1/chat/completions", json=body, headers={"connection": "close"})
        assert resp.status_code == 200, resp.text


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with running_fixture_upstream(FixtureBehaviour(delay_s=0.002, tokens=4)) as url:
        yield url


def service_env(upstream: str, metrics_dir: Path, tmp: Path) -> dict[str, str]:
    return {
        **gateway_env(upstream, 8),
        "HYBRID_SERVER__WORKERS": "2",
        "HYBRID_DATA_DIR": str(tmp / "data"),
        "HYBRID_ROUTER__MODEL_DIR": str(tmp / "no-router"),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }


@pytest.mark.integration
def test_two_workers_report_the_same_totals(upstream: str, tmp_path: Path) -> None:
    metrics_dir = tmp_path / "prom"
    metrics_dir.mkdir()
    stale = metrics_dir / "counter_999999.db"
    stale.write_bytes(b"\0" * 16)  # a previous server's file: must not survive the start
    env = service_env(upstream, metrics_dir, tmp_path)
    with started_service(None, extra_env=env, ready_timeout_s=120) as service:
        assert not stale.exists()
        sent = 0
        with httpx.Client(timeout=30) as client:
            while sent < MAX_REQUESTS:
                send(client, service.base_url, BATCH)
                sent += BATCH
                served = requests_by_process(metrics_dir)
                if len([v for v in served.values() if v > 0]) >= 2:
                    break
        assert len([v for v in served.values() if v > 0]) == 2, f"requests never spread: {served}"
        assert sum(served.values()) == sent
        for _ in range(8):  # scrapes land on either worker
            samples = scrape(service.base_url)
            assert total(samples, "hybrid_requests_total", pipeline="prompt", status="ok") == sent
            assert total(samples, "hybrid_request_duration_seconds_count", pipeline="prompt") == sent
            assert total(samples, "hybrid_tokens_total", pipeline="prompt", kind="completion") == 4 * sent
            assert total(samples, "hybrid_requests_in_flight") == 0
    # Both workers ran their shutdown: their live gauges are gone from the folder.
    assert list(metrics_dir.glob("gauge_livesum_*.db")) == []


@pytest.mark.unit
def test_claim_empties_the_folder_once_per_server(tmp_path: Path) -> None:
    (tmp_path / "counter_1.db").write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("not ours")
    assert claim_multiprocess_dir(tmp_path, server_pid=4242) is True
    assert not (tmp_path / "counter_1.db").exists()
    assert (tmp_path / "notes.txt").exists()  # only metric files are removed
    (tmp_path / "counter_2.db").write_bytes(b"new")  # the first worker's file
    assert claim_multiprocess_dir(tmp_path, server_pid=4242) is False  # the second worker keeps it
    assert (tmp_path / "counter_2.db").exists()
    assert claim_multiprocess_dir(tmp_path, server_pid=os.getpid()) is True  # the next server
    assert not (tmp_path / "counter_2.db").exists()


@pytest.mark.unit
def test_claim_creates_a_missing_folder(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    assert claim_multiprocess_dir(target, server_pid=1) is True
    assert (target / "server.owner").read_text() == "1"
