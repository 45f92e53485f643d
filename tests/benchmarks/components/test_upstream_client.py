"""The upstream-client bench: a real short run against the fixture upstream, and its summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.components import upstream_client


def test_a_short_run_measures_every_client_and_writes_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = upstream_client.main(
        ["--requests", "20", "--concurrency", "4", "--rounds", "2", "--out-dir", str(tmp_path)]
    )

    assert code == 0
    result = json.loads((tmp_path / "upstream_client.json").read_text())
    assert sorted(run["client"] for run in result["runs"]) == sorted(upstream_client.CLIENTS * 2)
    assert all(run["cpu_ms_per_request"] > 0 for run in result["runs"])
    assert result["environment"]["cpu"]["usable_cores"] >= 1
    report = (tmp_path / "upstream_client.md").read_text()
    assert "| httpx |" in report and "| backend |" in report
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["summary"]["httpx"]["vs_httpx"] == 1.0


def test_the_summary_is_the_median_per_client_as_a_ratio_to_httpx() -> None:
    measured = [("httpx", 1.0), ("httpx", 3.0), ("httpx", 2.0), ("aiohttp", 0.5), ("backend", 0.6)]
    runs = [{"client": client, "cpu_ms_per_request": cpu} for client, cpu in measured]
    summary = upstream_client.summarize(runs)
    assert summary["httpx"]["cpu_ms_per_request_median"] == 2.0
    assert summary["aiohttp"]["vs_httpx"] == pytest.approx(0.25)
    assert summary["backend"]["max"] == 0.6


def test_a_bad_count_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert upstream_client.main(["--rounds", "0"]) == 2
    assert capsys.readouterr().out.strip() == "error: --rounds must be >= 1, got 0"
