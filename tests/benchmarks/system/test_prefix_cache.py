"""The prefix-cache bench's summary: timings without the filling round, ratios, and answer comparison."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.system.prefix_cache import Sample, kv_buffer_mb, summarize


def sample(round_: int, workload: str, side: str, ttft: float, text: str = "same", cached: int = 0) -> Sample:
    return Sample(round_, workload, "q1", side, 100, cached, ttft, ttft * 3, 10, text)


def test_the_filling_round_is_compared_but_not_timed() -> None:
    samples = [
        sample(0, "prompt-100", "off", 150.0),
        sample(0, "prompt-100", "on", 150.0),  # the cache was empty
        sample(1, "prompt-100", "off", 140.0),
        sample(1, "prompt-100", "on", 35.0, cached=70),
        sample(2, "prompt-100", "on", 45.0, cached=72),
        sample(2, "prompt-100", "off", 160.0, text="other"),
    ]
    summary = summarize(samples)
    row = summary["workloads"]["prompt-100"]
    assert (row["requests"], row["timed_requests"]) == (3, 2)
    assert (row["off_ttft_ms"], row["on_ttft_ms"]) == (150.0, 40.0)
    assert row["ttft_ratio"] == round(40.0 / 150.0, 3)
    assert row["cached_tokens_median"] == 71
    assert row["same_answers"] == 2
    assert summary["answers"] == {"same": 2, "of": 3}
    assert summary["goal_ttft_ms_at_100"] == {
        "goal": 120.0,
        "off_ms": 150.0,
        "on_ms": 40.0,
        "met_with_cache": True,
        "met_without_cache": False,
    }


def test_the_kv_buffer_is_computed_from_the_models_config(tmp_path: Path) -> None:
    decoder = {"num_hidden_layers": 30, "num_key_value_heads": 3, "head_size": 64}
    (tmp_path / "genai_config.json").write_text(json.dumps({"model": {"decoder": decoder}}), encoding="utf-8")
    assert kv_buffer_mb(tmp_path, 1024) == 30 * 2 * 3 * 64 * 4 * 1024 / 2**20
