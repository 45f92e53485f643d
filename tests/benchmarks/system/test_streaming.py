"""The streaming bench's summary: medians per side, the decode ratio and the TTFT gap against the goals."""

from __future__ import annotations

import pytest

from benchmarks.system.streaming import (
    Sample,
    attribution_lines,
    cached_lines,
    engine_messages,
    held_lines,
    summarize,
)

pytestmark = pytest.mark.unit


def test_summary_compares_the_gateway_with_the_engine_by_medians() -> None:
    samples = [
        Sample("engine", 0, ttft_ms=60.0, decode_tok_s=150.0, tokens=128),
        Sample("engine", 1, ttft_ms=70.0, decode_tok_s=140.0, tokens=128),
        Sample("engine", 2, ttft_ms=500.0, decode_tok_s=10.0, tokens=128),  # an outlier the median ignores
        Sample("gateway", 0, ttft_ms=75.0, decode_tok_s=140.0, tokens=128),
        Sample("gateway", 1, ttft_ms=80.0, decode_tok_s=120.0, tokens=128),
        Sample("gateway", 2, ttft_ms=90.0, decode_tok_s=130.0, tokens=128),
    ]
    summary = summarize(samples)
    assert summary["engine"] == {"ttft_ms": 70.0, "decode_tok_s": 140.0}
    assert summary["gateway"] == {"ttft_ms": 80.0, "decode_tok_s": 130.0}
    assert summary["decode_ratio"] == round(130 / 140, 3)
    assert summary["ttft_gap_ms"] == 10.0
    assert summary["goals"]["decode_ratio"]["met"] and summary["goals"]["ttft_gap_ms"]["met"]


def test_a_slow_gateway_misses_both_goals() -> None:
    samples = [
        Sample("engine", 0, ttft_ms=60.0, decode_tok_s=150.0, tokens=128),
        Sample("gateway", 0, ttft_ms=200.0, decode_tok_s=75.0, tokens=128),
    ]
    goals = summarize(samples)["goals"]
    assert not goals["decode_ratio"]["met"] and not goals["ttft_gap_ms"]["met"]


def test_the_engine_gets_the_prompt_pipelines_messages() -> None:
    messages = engine_messages("Why is the sky blue?")
    assert [m.role for m in messages] == ["system", "user"]
    assert messages[-1].content == "Why is the sky blue?"


def test_the_gap_is_split_by_the_gateways_own_ttft() -> None:
    samples = [
        Sample("engine", 0, ttft_ms=100.0, decode_tok_s=150.0, tokens=64),
        Sample("gateway", 0, ttft_ms=140.0, decode_tok_s=150.0, tokens=64, server_visible_ms=130.0,
               server_model_ms=115.0),
    ]  # fmt: skip
    summary = summarize(samples)
    assert summary["gateway_server_ttft"] == {"server_visible_ms": 130.0, "server_model_ms": 115.0}
    table = "\n".join(attribution_lines(summary))
    assert "| 115.0 |" in table and "| 15.0 |" in table and "| 10.0 |" in table
    assert attribution_lines({**summary, "gateway_server_ttft": {}}) == []


def test_the_cached_gateway_is_reported_beside_the_goal_and_not_in_it() -> None:
    samples = [
        Sample("engine", 0, ttft_ms=100.0, decode_tok_s=150.0, tokens=64),
        Sample("gateway", 0, ttft_ms=130.0, decode_tok_s=150.0, tokens=64, server_visible_ms=126.0,
               server_model_ms=112.0),
        Sample("gateway-cached", 0, ttft_ms=60.0, decode_tok_s=150.0, tokens=64, server_visible_ms=55.0,
               server_model_ms=40.0),
    ]  # fmt: skip
    summary = summarize(samples)
    assert summary["ttft_gap_ms"] == 30.0 and not summary["goals"]["ttft_gap_ms"]["met"]
    assert summary["gateway_server_ttft"] == {"server_visible_ms": 126.0, "server_model_ms": 112.0}
    assert "40.0 ms before" in "\n".join(cached_lines(summary))
    assert cached_lines({k: v for k, v in summary.items() if k != "gateway-cached"}) == []


def test_the_held_gateway_is_reported_against_the_released_one() -> None:
    samples = [
        Sample("engine", 0, ttft_ms=100.0, decode_tok_s=150.0, tokens=64),
        Sample("gateway", 0, ttft_ms=120.0, decode_tok_s=150.0, tokens=64, server_visible_ms=116.0,
               server_model_ms=106.0),
        Sample("gateway-held", 0, ttft_ms=130.0, decode_tok_s=140.0, tokens=64, server_visible_ms=126.0,
               server_model_ms=107.0),
    ]  # fmt: skip
    summary = summarize(samples)
    assert summary["gateway_held_server_ttft"] == {"server_visible_ms": 126.0, "server_model_ms": 107.0}
    [line] = held_lines(summary)
    assert "130.0 ms against 120.0 ms" in line and "0.933x" in line
    assert "`model` is 107.0 ms against 106.0 ms" in line and "19.0 against 10.0 ms" in line
    assert held_lines({**summary, "gateway-held": None}) == []
