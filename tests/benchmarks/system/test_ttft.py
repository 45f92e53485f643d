"""The TTFT bench's arithmetic: medians and ratios per option, the prompt prefix, the per-token slope."""

from __future__ import annotations

import pytest

from benchmarks.system.ttft import Sample, engine_options, summarize, ttft_slope

pytestmark = pytest.mark.unit


def _samples(option: str, ms_100: list[float], ms_500: list[float], first: int = 7) -> list[Sample]:
    return [Sample(option, "100", 100, ms, first) for ms in ms_100] + [
        Sample(option, "500", 500, ms, first) for ms in ms_500
    ]


def test_each_option_is_compared_with_the_baseline_by_medians() -> None:
    samples = [
        *_samples("baseline", [200.0, 210.0, 900.0], [1000.0, 1100.0, 1050.0]),  # 900: an outlier
        *_samples("fast", [100.0, 110.0, 105.0], [500.0, 550.0, 525.0]),
        *_samples("wrong", [150.0, 150.0, 150.0], [800.0, 800.0, 800.0], first=8),
    ]
    decode = {"baseline": [100.0, 110.0, 90.0], "fast": [99.0], "wrong": [100.0]}
    summary = summarize(samples, ["baseline", "fast", "wrong"], decode)
    assert summary["median_ttft_ms"]["baseline"] == {"100": 210.0, "500": 1050.0}
    assert summary["ratio_to_baseline"]["fast"] == pytest.approx(0.5, abs=0.001)
    assert summary["first_token_agreement"] == {"baseline": 1.0, "fast": 1.0, "wrong": 0.0}
    assert summary["decode_ratio_to_baseline"]["fast"] == 0.99
    assert summary["chosen"] == "fast"
    assert summary["goal_ttft_ms_at_100"] == {"goal": 120.0, "chosen_ms": 105.0, "met": True}


@pytest.mark.parametrize(
    ("fast_decode", "fast_first_token", "fast_ms"),
    [(50.0, 7, 100.0), (100.0, 8, 100.0), (100.0, 7, 200.0)],
    ids=["slower-decode", "other-first-token", "within-noise"],
)
def test_an_option_that_costs_decode_or_answers_or_gains_too_little_is_not_chosen(
    fast_decode: float, fast_first_token: int, fast_ms: float
) -> None:
    samples = [
        *_samples("baseline", [210.0], [1000.0]),
        *_samples("fast", [fast_ms], [fast_ms * 5], first=fast_first_token),
    ]
    summary = summarize(samples, ["baseline", "fast"], {"baseline": [100.0], "fast": [fast_decode]})
    assert summary["chosen"] == "baseline"
    assert summary["goal_ttft_ms_at_100"] == {"goal": 120.0, "chosen_ms": 210.0, "met": False}


def test_the_slope_is_the_cost_of_one_more_prompt_token() -> None:
    slope = ttft_slope({"a": 60.0, "b": 110.0, "c": 210.0}, {"a": 100, "b": 200, "c": 400})
    assert slope == {"intercept_ms": 10.0, "per_token_ms": 0.5}


def test_every_option_set_changes_one_thing_from_the_baseline() -> None:
    options = {o.name: o for o in engine_options(threads=2)}
    base = options["baseline"].session
    assert base.threads == 2 and base.intra_op_spinning and base.inter_op_spinning
    assert base.graph_optimization == "all"
    assert options["threads=1"].session.threads == 1
    assert not options["intra_spin=0"].session.intra_op_spinning
    assert options["opt=basic"].session.graph_optimization == "basic"
    assert options["accuracy=1 (fp32)"].accuracy_level == 1


def test_hybridllm_bench_ttft_runs_this_bench_with_the_rest_of_the_arguments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import argparse

    from benchmarks import cli
    from benchmarks.system import ttft

    seen: list[list[str]] = []
    monkeypatch.setattr(ttft, "main", lambda argv: seen.append(list(argv)) or 0)
    parser = argparse.ArgumentParser()
    cli.register_bench(parser.add_subparsers())
    args = parser.parse_args(["bench", "ttft", "--rounds", "1"])
    with pytest.raises(SystemExit) as exited:
        args.handler(args)
    assert exited.value.code == 0
    assert seen == [["--rounds", "1"]]
