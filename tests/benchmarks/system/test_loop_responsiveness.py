"""The event-loop bench's summary and question builder (the servers themselves run in the bench)."""

from __future__ import annotations

import pytest

from benchmarks.system.loop_responsiveness import long_question, summarize

pytestmark = pytest.mark.unit


def run(probes: list[float], ttft: float = 800.0, decode: float = 100.0) -> dict[str, object]:
    return {"ttft_ms": ttft, "decode_tok_s": decode, "tokens": 64, "probe_ms": probes}


def test_summary_pools_the_probes_of_every_run_and_compares_held_with_released() -> None:
    samples = {
        "released": [run([1.0, 2.0, 3.0]), run([2.0, 4.0], decode=110.0)],
        "held": [run([10.0, 800.0], decode=90.0), run([12.0, 760.0], decode=100.0)],
    }
    summary = summarize(samples)
    assert summary["released"]["probes"] == 5
    assert summary["released"]["probe_p50_ms"] == 2.0
    assert summary["released"]["probe_max_ms"] == 4.0
    assert summary["held"]["probe_max_ms"] == 800.0
    assert summary["released"]["decode_tok_s"] == 105.0
    assert summary["held_over_released"]["probe_max"] == 200.0
    assert summary["held_over_released"]["decode"] == round(95.0 / 105.0, 3)


def test_questions_are_numbered_and_about_the_requested_length() -> None:
    first, second = long_question(400, 1), long_question(400, 2)
    assert first != second and first.startswith("Request 1.")
    assert 400 <= len(first.split()) <= 420
