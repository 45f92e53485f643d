import math

import numpy as np
import pytest

from benchmarks.harness.stats import (
    RequestRecord,
    meets_slos,
    parse_goodput,
    percentile,
    summarize_ms,
    summarize_records,
)

pytestmark = pytest.mark.unit


def record(
    e2e: float,
    ttft: float | None = None,
    tokens: int = 0,
    ok: bool = True,
    itl: tuple[float, ...] | list[float] = (),
) -> RequestRecord:
    return RequestRecord("hybrid", "x", 0.0, e2e, ok, ttft_s=ttft, output_tokens=tokens, itl_s=list(itl))


@pytest.mark.parametrize("n", [1, 2, 7, 100, 1001])
@pytest.mark.parametrize("q", [0, 1, 50, 90, 95, 99, 99.9, 100])
def test_percentile_matches_numpy(n, q):
    values = list(np.random.default_rng(n).lognormal(size=n))
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_of_nothing_is_nan_and_bad_q_is_rejected():
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError, match="101"):
        percentile([1.0], 101)


def test_summarize_ms_converts_seconds():
    summary = summarize_ms([0.1, 0.2, 0.3])
    assert summary["mean"] == pytest.approx(200.0)
    assert summary["p50"] == pytest.approx(200.0)
    assert summary["max"] == pytest.approx(300.0)
    assert summarize_ms([]) == {}


def test_parse_goodput_reads_milliseconds_and_rejects_unknown_metrics():
    assert parse_goodput(["ttft:500", "tpot:50", "e2e:3000"]) == {"ttft": 0.5, "tpot": 0.05, "e2e": 3.0}
    for bad in ("latency:5", "ttft", "ttft:fast", "e2e:-1"):
        with pytest.raises(ValueError):
            parse_goodput([bad])


def test_tpot_and_slos():
    r = record(e2e=1.0, ttft=0.2, tokens=5)
    assert r.tpot_s == pytest.approx(0.2)
    assert meets_slos(r, {"ttft": 0.25, "tpot": 0.25, "e2e": 1.0})
    assert not meets_slos(r, {"tpot": 0.1})
    assert not meets_slos(record(e2e=0.1, ok=False), {"e2e": 1.0})
    # One output token: no TPOT to violate.
    assert meets_slos(record(e2e=0.1, ttft=0.1, tokens=1), {"tpot": 0.001})


def test_summarize_records_counts_throughput_and_goodput():
    records = [
        record(1.0, 0.1, 10, itl=[0.1] * 9),
        record(2.0, 0.3, 10, itl=[0.2] * 9),
        record(0.5, ok=False),
    ]
    summary = summarize_records(records, duration_s=4.0, slos={"ttft": 0.2})
    assert summary["completed"] == 2 and summary["failed"] == 1
    assert summary["request_throughput"] == pytest.approx(0.5)
    assert summary["output_throughput"] == pytest.approx(5.0)
    assert summary["e2e_ms"]["p50"] == pytest.approx(1500.0)
    assert summary["itl_ms"]["p50"] == pytest.approx(150.0)
    assert summary["goodput"]["good_requests"] == 1
    assert summary["goodput"]["request_goodput"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="duration_s"):
        summarize_records(records, duration_s=0)
