"""The load generator end to end against the benchmark fixture upstream (real HTTP on 127.0.0.1)."""

import json
from typing import Any

import pytest

from benchmarks.harness.fixture_upstream import FixtureBehaviour, running_fixture_upstream
from benchmarks.harness.load import bench_load_main

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def upstream():
    with running_fixture_upstream(FixtureBehaviour(delay_s=0.005, tokens=6)) as url:
        yield url


def last_json_line(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    line: dict[str, Any] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return line


def test_closed_and_open_loop_streaming(upstream, tmp_path, capsys):
    argv = ["--base-url", upstream, "--pipeline", "fixture", "--concurrency", "1,3", "--rate", "20",
            "--requests", "6", "--goodput", "e2e:5000", "ttft:5000", "--out", str(tmp_path)]  # fmt: skip
    assert bench_load_main(argv) == 0
    result = last_json_line(capsys)
    assert [r["run"] for r in result["runs"]] == ["fixture @ c=1", "fixture @ c=3", "fixture @ 20 req/s"]
    assert all(r["completed"] == 6 and r["failed"] == 0 for r in result["runs"])
    assert all(r["goodput_req_per_s"] > 0 for r in result["runs"])
    saved = json.loads((tmp_path / "results.json").read_text())
    run = saved["runs"][0]["summary"]
    assert run["total_output_tokens"] == 36  # usage from the fixture's last chunk: 6 tokens each
    assert run["itl_ms"] and run["tpot_ms"]  # streamed: inter-token gaps measured
    assert (tmp_path / "report.md").exists() and (tmp_path / "latency_cdf.png").exists()


def test_non_streaming_and_failures_are_counted(upstream, tmp_path, capsys):
    argv = [
        "--base-url",
        upstream,
        "--pipeline",
        "fixture",
        "--requests",
        "3",
        "--no-stream",
        "--out",
        str(tmp_path),
    ]
    assert bench_load_main(argv) == 0
    assert last_json_line(capsys)["runs"][0]["completed"] == 3

    dead = ["--base-url", "http://127.0.0.1:9", "--requests", "2", "--warmup", "0", "--out", str(tmp_path)]
    assert bench_load_main(dead) == 0
    result = last_json_line(capsys)
    assert result["failed"] == 2 and result["runs"][0]["completed"] == 0


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert bench_load_main(["--goodput", "speed:1", "--out", str(tmp_path)]) == 2
    assert "goodput" in last_json_line(capsys)["error"]
