"""The retrieval-options bench on a tiny corpus with the hashing embedder: its scoring and its report."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.components.retrieval_options import (
    Option,
    run_set,
    summarise,
    synthetic_search_cost,
    tune_on_dev,
    verdict,
    write_report,
)
from services.evaluation.scoring import EvalItem
from services.rag.ingest import ingest
from tests.rag.conftest import HashingEmbedder, rag_settings, write_handbook

pytestmark = pytest.mark.unit


def test_options_are_scored_per_set_and_reported(tmp_path: Path) -> None:
    settings = rag_settings(tmp_path / "index")
    ingest([write_handbook(tmp_path / "handbook")], settings, embedder=HashingEmbedder(), progress=False)
    items = [
        EvalItem(
            item_id="a", route="rag", question="meal allowance abroad", gold_files=("expenses/travel.md",)
        ),
        EvalItem(item_id="b", route="rag", question="onboarding buddy", gold_files=("people/wrong.md",)),
    ]
    embedder = HashingEmbedder()
    options = [Option("baseline"), Option("both", path_weight=1.0, rewrite_below=2.0)]
    rows = run_set(settings, embedder, items, options)
    baseline = summarise(rows["baseline"])
    assert (baseline["n"], baseline["hit@1"], baseline["prompt_hit"], baseline["rewrite_rate"]) == (
        2,
        0.5,
        0.5,
        0,
    )
    assert baseline["extra_ms_when_fired_p50"] is None
    both = summarise(rows["both"])
    assert both["rewrite_rate"] == 1.0 and both["extra_ms_when_fired_p50"] is not None
    grid, weight, threshold = tune_on_dev(settings, embedder, items)
    assert len(grid) == 10 and weight > 0 and -1 <= threshold <= 1
    results = {
        "environment": None,
        "load_average_after": [0.5, 0.5, 0.5],
        "path_weight": weight,
        "rewrite_below": threshold,
        "dev_grid": grid,
        "sets": {"dev": {"baseline": baseline, "both": both}},
        "synthetic_size": 2000,
        "synthetic": synthetic_search_cost(options, 2000, 5),
    }
    write_report(results, tmp_path / "report")
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "| baseline | 2 | 0.500 | 0.500 |" in text and "corpus/eval, dev half" in text
    assert "- both: prompt hit@5 vs baseline dev +0.000: keep off" in text
    assert "path field build" in text and (tmp_path / "report.json").is_file()


def test_the_default_rule_needs_a_corpus_eval_gain_and_no_loss_and_a_dev_chosen_setting() -> None:
    def scores(prompt_hit: float) -> dict[str, float]:
        return {"prompt_hit": prompt_hit}

    sets = {
        "dev": {"baseline": scores(0.5), "a": scores(0.6), "b": scores(0.6), "c (not chosen)": scores(0.9)},
        "sourcegraph": {
            "baseline": scores(0.5),
            "a": scores(0.5),
            "b": scores(0.4),
            "c (not chosen)": scores(0.9),
        },
    }
    lines = verdict(sets)
    assert lines[0] == "- a: prompt hit@5 vs baseline dev +0.100, sourcegraph +0.000: turn on"
    assert lines[1].endswith("sourcegraph -0.100: keep off")
    assert lines[2] == "- c (not chosen): reported only, its threshold was not chosen on the dev half"
