import json

import pytest

from benchmarks.harness.load import run_entry
from benchmarks.harness.prom import delta, parse_metrics
from benchmarks.harness.report import markdown_table, write_load_report
from benchmarks.harness.stats import RequestRecord

pytestmark = pytest.mark.unit

METRICS = """
# TYPE hybrid_stage_duration_seconds histogram
hybrid_stage_duration_seconds_count{pipeline="rag",stage="embed"} 3.0
hybrid_stage_duration_seconds_sum{pipeline="rag",stage="embed"} 0.03
hybrid_stage_duration_seconds_count{pipeline="rag",stage="generate"} 3.0
hybrid_stage_duration_seconds_sum{pipeline="rag",stage="generate"} 0.9
"""


def records(n: int, e2e: float) -> list[RequestRecord]:
    return [RequestRecord("rag", str(i), 0.0, e2e, True, ttft_s=e2e / 4, output_tokens=8) for i in range(n)]


def test_markdown_table_formats_missing_values():
    table = markdown_table(["a", "b"], [[1, None], [0.5, float("nan")]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 | – |", "| 0.5 | – |"]


def test_load_report_writes_json_markdown_and_plots(tmp_path):
    runs = [
        run_entry("rag", "closed", 1, records(3, 0.3), 1.0, {"e2e": 0.5}, delta({}, parse_metrics(METRICS))),
        run_entry("rag", "closed", 4, records(3, 0.6), 0.5, {"e2e": 0.5}, {}),
        run_entry("rag", "open", 2.0, records(3, 0.4), 1.5, {}, {}),
    ]
    results = {"name": "t", "base_url": "http://x", "config": {"stream": True, "max_tokens": 8}, "runs": runs}
    files = write_load_report(results, tmp_path)
    for name in ("results.json", "report.md", "latency_cdf.png", "p99_vs_load.png", "stage_breakdown.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    markdown = (tmp_path / "report.md").read_text()
    assert "| run | ok | failed | req/s |" in markdown
    assert "| rag @ c=1 | 3 | 0 | 3.00 |" in markdown
    assert "rag @ 2 req/s" in markdown
    assert "| rag @ c=1 | rag | embed | 3 | 10.000 |" in markdown
    loaded = json.loads((tmp_path / "results.json").read_text())
    assert loaded["runs"][0]["summary"]["goodput"]["good_requests"] == 3
    assert loaded["runs"][1]["summary"]["goodput"]["good_requests"] == 0
    assert files["markdown"].endswith("report.md")
