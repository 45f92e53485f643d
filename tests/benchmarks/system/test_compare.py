"""The comparison end to end against the fake of the HTTP contract (no models): the bookkeeping is right."""

import json

import pytest

from benchmarks.system.compare import bench_compare_main
from tests.evaluation.e2e_fake_service import PRICES, SAMPLE_ROWS, serve_fake

pytestmark = pytest.mark.unit


@pytest.fixture
def eval_file(tmp_path):
    path = tmp_path / "e2e.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in SAMPLE_ROWS))
    return path


def test_compare_scores_costs_sweeps_and_reports(eval_file, tmp_path, capsys):
    out = tmp_path / "out"
    with serve_fake(SAMPLE_ROWS) as url:
        code = bench_compare_main(["--base-url", url, "--data", str(eval_file), "--concurrency", "1,2",
                                   "--out", str(out)])  # fmt: skip
    assert code == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(line["pipelines"]) == {"prompt", "rag", "hybrid"}  # tuned is not listed by the service
    results = json.loads((out / "results.json").read_text())
    assert results["skipped_pipelines"] == ["tuned"]
    hybrid, rag, prompt = (results["pipelines"][p] for p in ("hybrid", "rag", "prompt"))
    assert hybrid["quality"]["route_accuracy"] == 1.0
    assert hybrid["quality"]["refusal_accuracy"] == 1.0
    assert rag["quality"]["hit@5"] == 1.0 and prompt["quality"]["hit@5"] == 0.0
    assert hybrid["knowledge_answer_contains"] == 1.0 and prompt["knowledge_answer_contains"] == 0.0
    # rag: every item costs PRICES["rag"]; the two ways of counting cost agree.
    assert rag["cost_per_1k_usd"]["from_responses"] == pytest.approx(PRICES["rag"] * 1000)
    assert rag["cost_per_1k_usd"]["from_metrics"] == pytest.approx(PRICES["rag"] * 1000)
    # hybrid: 3 rag, 2 prompt, 1 refusal (free) out of 6
    expected_hybrid = (3 * PRICES["rag"] + 2 * PRICES["prompt"]) / 6 * 1000
    assert hybrid["cost_per_1k_usd"]["from_responses"] == pytest.approx(expected_hybrid)
    assert hybrid["cost_per_1k_usd"]["from_metrics"] == pytest.approx(expected_hybrid)
    assert rag["egress_tokens"]["local"]["internal"] > 0
    goals = results["goals"]
    assert goals["mean_cost_vs_rag"]["value"] == pytest.approx(expected_hybrid / (PRICES["rag"] * 1000))
    assert goals["knowledge_answer_contains_gap_vs_rag"]["met"] is True
    assert goals["knowledge_answer_contains_lead_vs_prompt"]["met"] is True
    sweep = results["sweep"]
    assert sweep["n"] == 5  # the out-of-scope item is not a prompt-vs-rag choice
    assert sweep["rag_only"]["quality"] == 1.0
    assert sweep["shadow"]["unnecessary_retrievals"] == 0 and sweep["shadow"]["missed_retrievals"] == 0
    markdown = (out / "report.md").read_text()
    for heading in (
        "## Goals",
        "## Scorecard",
        "## Quality",
        "## Latency and cost",
        "## Router threshold sweep",
    ):
        assert heading in markdown
    for dimension in ("privacy", "latency", "control", "update frequency", "deployment target", "cost"):
        assert f"| {dimension} |" in markdown
    assert (out / "threshold_sweep.png").exists()


def test_missing_data_file_exits_2(tmp_path, capsys):
    assert bench_compare_main(["--base-url", "http://127.0.0.1:9", "--data", str(tmp_path / "no.jsonl")]) == 2
    assert "error" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])
