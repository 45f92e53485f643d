import pytest

from benchmarks.harness.stats import RequestRecord, summarize_records
from benchmarks.system.goodput import goodput_row, offered_rates, parse_load_factors

pytestmark = pytest.mark.unit


def record(e2e_s, ok=True, ttft_s=0.1):
    return RequestRecord("rag", "i", 0.0, e2e_s, ok=ok, ttft_s=ttft_s if ok else None, output_tokens=4)


def test_goodput_against_a_hand_computation():
    # 5 requests in 2 s: 3 within the 1000 ms SLO, one too slow, one failed (fast, but failed never counts).
    records = [record(0.2), record(0.5), record(0.9), record(1.5), record(0.1, ok=False)]
    run = {"pipeline": "rag", "mode": "closed", "concurrency": 2, "rate": None,
           "summary": summarize_records(records, 2.0, {"e2e": 1.0})}  # fmt: skip
    row = goodput_row(run, 1000.0)
    assert row["goodput_req_per_s"] == pytest.approx(3 / 2.0)
    assert row["good_fraction"] == pytest.approx(3 / 5)
    assert row["req_per_s"] == pytest.approx(4 / 2.0)
    assert row["errors"] == 1 and row["requests"] == 5
    assert row["p50_ms"] == pytest.approx(700.0)  # median of 200, 500, 900, 1500
    assert row["p95_ms"] == pytest.approx(900 + 0.85 * 600)  # numpy's linear rule
    assert row["p95_within_slo"] is False
    assert row["ttft_p50_ms"] == pytest.approx(100.0)


def test_offered_rates_are_multiples_of_the_concurrency_1_throughput():
    assert offered_rates(0.5, (2, 4, 8)) == [1.0, 2.0, 4.0]
    with pytest.raises(ValueError, match="0"):
        offered_rates(0.0, (2,))


@pytest.mark.parametrize(("text", "named"), [("2,x", "'x'"), ("2,-1", "'-1'"), ("", "''")])
def test_bad_load_factors_name_the_value(text, named):
    with pytest.raises(ValueError) as caught:
        parse_load_factors(text)
    assert named in str(caught.value)
