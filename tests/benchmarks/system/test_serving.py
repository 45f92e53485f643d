"""The serving bench's pure parts: ratios against concurrency 1, the goal check, the report and the plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks.system.serving import (
    check_goals,
    mode_env,
    render_markdown,
    stage_ms_per_request,
    with_ratios,
    write_plot,
)

pytestmark = pytest.mark.unit


def row(workload: str, mode: str, concurrency: int, req_per_s: float, p95: float) -> dict[str, Any]:
    return {
        "workload": workload,
        "mode": mode,
        "concurrency": concurrency,
        "completed": 8,
        "failed": 0,
        "req_per_s": req_per_s,
        "out_tok_per_s": req_per_s * 64,
        "ttft_p50_ms": 100.0,
        "e2e_p50_ms": p95 / 2,
        "e2e_p95_ms": p95,
        "e2e_p99_ms": p95 * 1.1,
        "mean_prompt_tokens": 40.0,
        "mean_output_tokens": 60.0,
        "stage_ms_per_request": {"generate": 900.0, "privacy": 0.2},
        "load_1m": [1.0, 1.2],
        "errors": {},
    }


ROWS = [
    row("prompt", "off", 1, 1.0, 1000.0),
    row("prompt", "cohort", 1, 1.1, 900.0),
    row("prompt", "off", 4, 1.0, 4000.0),
    row("prompt", "cohort", 4, 3.3, 1300.0),
    row("rag", "cohort", 1, 0.5, 2000.0),
    row("rag", "cohort", 4, 0.9, 5000.0),
    row("prompt", "engine", 1, 1.0, 900.0),
    row("prompt", "engine", 4, 1.2, 2000.0),
]


def test_ratios_are_against_concurrency_one_of_the_same_workload_and_mode() -> None:
    runs = {(r["workload"], r["mode"], r["concurrency"]): r for r in with_ratios(ROWS)}
    assert runs[("prompt", "cohort", 4)]["req_per_s_x"] == pytest.approx(3.0)
    assert runs[("prompt", "off", 4)]["req_per_s_x"] == pytest.approx(1.0)
    assert runs[("prompt", "cohort", 4)]["e2e_p95_x"] == pytest.approx(1300 / 900)
    assert runs[("rag", "cohort", 1)]["out_tok_per_s_x"] == pytest.approx(1.0)


def test_goals_say_which_are_met_and_by_how_much() -> None:
    goals = {(g["mode"], g["workload"], g["metric"]): g for g in check_goals(with_ratios(ROWS))}
    prompt = goals[("cohort", "prompt", "throughput")]
    assert prompt["met"] is True and prompt["measured"] == pytest.approx(3.0)
    rag = goals[("cohort", "rag", "throughput")]
    assert rag["met"] is False and rag["versus_target"] == pytest.approx(0.9)
    p95 = goals[("cohort", "rag", "p95")]
    assert p95["met"] is False and p95["measured"] == pytest.approx(2.5)
    engine = goals[("engine", "prompt", "throughput")]  # each batched mode is checked on its own rows
    assert engine["met"] is False and engine["measured"] == pytest.approx(1.2)
    assert goals[("engine", "rag", "throughput")]["met"] is None


def test_a_goal_without_its_runs_is_unknown_rather_than_failed() -> None:
    goals = check_goals(with_ratios([r for r in ROWS if r["workload"] == "prompt"]))
    rag = [g for g in goals if g["workload"] == "rag"]
    assert rag and all(g["met"] is None and g["measured"] is None for g in rag)


def test_only_max_concurrency_and_the_batch_scheduler_differ_between_the_modes() -> None:
    assert mode_env("off", 8) == {"HYBRID_GENERATOR__MAX_CONCURRENCY": "1"}
    assert mode_env("held", 8) == {
        "HYBRID_GENERATOR__MAX_CONCURRENCY": "1",
        "HYBRID_GENERATOR__RELEASE_GIL": "false",
    }
    assert mode_env("cohort", 8) == {
        "HYBRID_GENERATOR__MAX_CONCURRENCY": "8",
        "HYBRID_GENERATOR__BATCH_SCHEDULER": "cohort",
    }
    assert mode_env("engine", 4)["HYBRID_GENERATOR__BATCH_SCHEDULER"] == "engine"
    with pytest.raises(ValueError, match="mode"):
        mode_env("both", 8)


def test_report_and_plot_are_written(tmp_path: Path) -> None:
    runs = with_ratios(ROWS)
    results = {
        "started_at": "2026-12-03T17:00:00+00:00",
        "machine": "2 cores",
        "config": {"requests": 8, "max_tokens": 64, "batch_size": 8},
        "runs": runs,
        "goals": check_goals(runs),
        "notes": "## Why\n\nBecause.",
    }
    text = render_markdown(results)
    assert "| prompt | cohort | 4 |" in text
    assert "| engine | prompt | throughput >= target x |" in text
    assert "1.00, 1.20" in text  # the load average of each run
    assert "## Why" in text
    assert "| prompt | cohort | 4 | 40.0 | 60.0 | 900.0 | 0.2 |" in text  # stage ms per request
    write_plot(runs, tmp_path / "serving.png")
    assert (tmp_path / "serving.png").stat().st_size > 0


def test_stage_time_is_per_completed_request_of_the_pipeline() -> None:
    server = {"stages": {"rag": {"generate": {"seconds": 4.0}, "search": {"seconds": 0.2}}, "prompt": {}}}
    assert stage_ms_per_request(server, "rag", 4) == {"generate": 1000.0, "search": 50.0}
    assert stage_ms_per_request(server, "prompt", 0) == {}
