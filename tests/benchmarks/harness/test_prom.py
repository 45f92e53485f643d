import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from benchmarks.harness.prom import (
    attribute_stages,
    delta,
    parse_metrics,
    sample_values,
    scrape_blocking,
    summarize_delta,
)
from services.core.ports import free_port

pytestmark = pytest.mark.unit

BEFORE = """
# HELP hybrid_stage_duration_seconds Latency of one pipeline stage.
# TYPE hybrid_stage_duration_seconds histogram
hybrid_stage_duration_seconds_bucket{le="+Inf",pipeline="rag",stage="embed"} 2.0
hybrid_stage_duration_seconds_count{pipeline="rag",stage="embed"} 2.0
hybrid_stage_duration_seconds_sum{pipeline="rag",stage="embed"} 0.02
hybrid_stage_duration_seconds_count{pipeline="rag",stage="generate"} 2.0
hybrid_stage_duration_seconds_sum{pipeline="rag",stage="generate"} 1.0
# HELP hybrid_cost_usd_total Cost.
# TYPE hybrid_cost_usd_total counter
hybrid_cost_usd_total{pipeline="rag",stage="generate"} 0.001
# HELP hybrid_egress_tokens_total Egress.
# TYPE hybrid_egress_tokens_total counter
hybrid_egress_tokens_total{backend="local",trust="internal"} 100.0
"""

AFTER = """
# HELP hybrid_stage_duration_seconds Latency of one pipeline stage.
# TYPE hybrid_stage_duration_seconds histogram
hybrid_stage_duration_seconds_bucket{le="+Inf",pipeline="rag",stage="embed"} 6.0
hybrid_stage_duration_seconds_count{pipeline="rag",stage="embed"} 6.0
hybrid_stage_duration_seconds_sum{pipeline="rag",stage="embed"} 0.06
hybrid_stage_duration_seconds_count{pipeline="rag",stage="generate"} 6.0
hybrid_stage_duration_seconds_sum{pipeline="rag",stage="generate"} 3.0
hybrid_stage_duration_seconds_count{pipeline="prompt",stage="generate"} 0.0
hybrid_stage_duration_seconds_sum{pipeline="prompt",stage="generate"} 0.0
# HELP hybrid_cost_usd_total Cost.
# TYPE hybrid_cost_usd_total counter
hybrid_cost_usd_total{pipeline="rag",stage="generate"} 0.005
# HELP hybrid_egress_tokens_total Egress.
# TYPE hybrid_egress_tokens_total counter
hybrid_egress_tokens_total{backend="local",trust="internal"} 500.0
hybrid_egress_tokens_total{backend="cloud",trust="external"} 40.0
"""


def test_stage_attribution_is_the_delta_of_sum_and_count():
    stages = attribute_stages(delta(parse_metrics(BEFORE), parse_metrics(AFTER)))
    assert set(stages) == {"rag"}  # prompt did nothing in between
    assert stages["rag"]["embed"]["count"] == 4
    assert stages["rag"]["embed"]["seconds"] == pytest.approx(0.04)
    assert stages["rag"]["embed"]["mean_ms"] == pytest.approx(10.0)
    assert stages["rag"]["generate"]["mean_ms"] == pytest.approx(500.0)
    assert stages["rag"]["generate"]["cost_usd"] == pytest.approx(0.004)
    assert stages["rag"]["embed"]["cost_usd"] == 0.0


def test_summary_totals_cost_and_egress_by_trust():
    summary = summarize_delta(delta(parse_metrics(BEFORE), parse_metrics(AFTER)))
    assert summary["cost_usd_by_pipeline"] == {"rag": pytest.approx(0.004)}
    assert summary["egress_tokens"] == {"local": {"internal": 400.0}, "cloud": {"external": 40.0}}


def test_a_counter_reset_counts_from_zero():
    before = parse_metrics(AFTER)
    after = parse_metrics(BEFORE)  # the server restarted: counters went down
    diff = delta(before, after)
    assert diff[("hybrid_cost_usd_total", (("pipeline", "rag"), ("stage", "generate")))] == pytest.approx(
        0.001
    )


def test_sample_values_lists_one_value_per_label_set():
    scrape = parse_metrics(AFTER)
    assert sorted(sample_values(scrape, "hybrid_egress_tokens_total")) == [40.0, 500.0]
    assert sample_values(scrape, "hybrid_not_exported") == []


class _MetricsHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = AFTER.encode() if self.path == "/metrics" else b""
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep the test output quiet
        pass


@contextmanager
def _metrics_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _MetricsHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_blocking_scrape_parses_metrics_and_is_empty_when_nothing_answers():
    with _metrics_server() as url:
        assert scrape_blocking(url + "/") == parse_metrics(AFTER)
    assert scrape_blocking(f"http://127.0.0.1:{free_port()}", timeout_s=2.0) == {}
