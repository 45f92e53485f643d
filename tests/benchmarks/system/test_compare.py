"""The comparison end to end against the fake of the HTTP contract (no models): the bookkeeping is right."""

import json

import pytest

from benchmarks.system.compare import adapter_env, bench_compare_main, merge_variant, variant_skip_reason
from benchmarks.system.compare_report import write_compare_report
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


def test_compare_at_a_mix_with_goodput_mix_sweep_regret_and_all_sections(eval_file, tmp_path, capsys):
    """--mix draws the workload, all four architectures run, the report renders from results.json alone."""
    out = tmp_path / "out"
    pipelines = ("prompt", "rag", "tuned", "hybrid")
    with serve_fake(SAMPLE_ROWS, pipelines) as url:
        code = bench_compare_main(["--base-url", url, "--data", str(eval_file), "--concurrency", "1",
                                   "--mix", "knowledge=0.5,direct=0.5", "--limit", "8", "--seed", "3",
                                   "--open-loads", "2", "--slo", "5000", "--rag-variants", "chunks",
                                   "--validate-limit", "4", "--target-mix", "knowledge=0.5,direct=0.5",
                                   "--out", str(out)])  # fmt: skip
    assert code == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(line["pipelines"]) == set(pipelines)
    results = json.loads((out / "results.json").read_text())
    assert results["skipped_pipelines"] == []
    assert results["mix"]["drawn"] == {"knowledge": 0.5, "direct": 0.5, "out_of_scope": 0.0}
    assert results["pipelines"]["rag"]["quality"]["n"] == 8
    assert "service the bench starts" in results["skipped_variants"]["rag+chunks"]
    # goodput: one closed (c=1) and one open-loop row per pipeline; the fake answers well within 5 s.
    rows = [r for r in results["goodput"] if r["pipeline"] == "rag"]
    assert [r["mode"] for r in rows] == ["closed", "open"]
    assert rows[1]["offered_req_per_s"] == pytest.approx(2 * rows[0]["req_per_s"])
    assert all(r["good_fraction"] == 1.0 and r["errors"] == 0 for r in results["goodput"])
    sweep = results["mix_sweep"]
    assert len(sweep["points"]) == 11
    assert sweep["pooled_requests"]["rag"] == {"knowledge": 4, "direct": 4, "out_of_scope": 0}
    # The base mix has no out_of_scope share, so every point splits the rest to direct: hybrid goes from all
    # prompt-path answers to all rag answers; always-RAG pays the rag price at every share.
    hybrid_ends = [sweep["points"][i]["pipelines"]["hybrid"]["cost_per_1k_usd"] for i in (0, -1)]
    assert hybrid_ends == pytest.approx([PRICES["prompt"] * 1000, PRICES["rag"] * 1000])
    assert sweep["points"][0]["pipelines"]["rag"]["cost_per_1k_usd"] == pytest.approx(PRICES["rag"] * 1000)
    validation = sweep["validation"]
    assert validation["same_requests"] is False
    assert validation["pipelines"]["rag"]["measured_cost_per_1k_usd"] == pytest.approx(PRICES["rag"] * 1000)
    assert validation["pipelines"]["rag"]["computed_cost_per_1k_usd"] == pytest.approx(PRICES["rag"] * 1000)
    regret = results["routing_regret"]
    # 8 requests drawn from 3 knowledge and 2 direct items: 5 distinct items, every one routed right.
    assert regret["n"] == 5 and regret["regret_quality_points"] == 0.0

    rendered = tmp_path / "rendered"
    write_compare_report(json.loads((out / "results.json").read_text()), rendered)
    markdown = (rendered / "report.md").read_text()
    for heading in ("## Goals", "## Traffic mix", "## Cost, p95 and quality against the knowledge share",
                    "## Goodput", "## Routing regret"):  # fmt: skip
        assert heading in markdown
    assert "Run: prompt, rag, tuned, hybrid." in markdown
    assert (rendered / "mix_sweep.png").exists() and (rendered / "p99_vs_load.png").exists()


def test_a_started_service_gets_every_adapter_folder(tmp_path):
    for name in ("tuned", "grounded"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "adapter_config.json").write_text("{}")
    (tmp_path / "half-written").mkdir()
    env = adapter_env(tmp_path, {})
    assert json.loads(env["HYBRID_GENERATOR__ADAPTERS"]) == {
        "grounded": str(tmp_path / "grounded"), "tuned": str(tmp_path / "tuned")
    }  # fmt: skip
    assert adapter_env(tmp_path, {"HYBRID_GENERATOR__ADAPTERS": "{}"}) == {}  # the caller's setting wins
    assert adapter_env(tmp_path / "missing", {}) == {}


def test_rag_variants_say_why_they_are_skipped(tmp_path):
    with_grounded = {"HYBRID_GENERATOR__ADAPTERS": json.dumps({"grounded": "x"})}
    assert variant_skip_reason("rag+grounded", None, with_grounded) is None
    assert variant_skip_reason("rag+grounded", None, {}) == "no 'grounded' adapter (make grounded)"
    assert "service the bench starts" in variant_skip_reason("rag+chunks", "http://127.0.0.1:1", {})


def test_a_variant_row_reads_its_services_rag_metrics_as_its_own():
    results = {"pipelines": {}, "runs": [], "items": {}, "goodput": [], "validation_measured": {},
               "skipped_variants": {}}  # fmt: skip
    server = {
        "stages": {"rag": {"generate": {}}},
        "cost_usd_by_pipeline": {"rag": 0.1},
        "egress_tokens": {"rag": 1},
    }
    run = {"pipelines": {"rag": {"pipeline": "rag"}}, "runs": [{"pipeline": "rag", "server": server}],
           "items": {"rag": [{"pipeline": "rag"}]}, "goodput": [{"pipeline": "rag"}],
           "validation_measured": {}}  # fmt: skip
    merge_variant(results, "rag+grounded", run)
    assert results["pipelines"]["rag+grounded"]["pipeline"] == "rag+grounded"
    merged = results["runs"][0]
    assert merged["pipeline"] == "rag+grounded"
    assert merged["server"]["stages"] == {"rag+grounded": {"generate": {}}}
    assert merged["server"]["cost_usd_by_pipeline"] == {"rag+grounded": 0.1}
    assert merged["server"]["egress_tokens"] == {"rag": 1}  # not a per-pipeline table
    assert results["items"]["rag+grounded"] == [{"pipeline": "rag+grounded"}]
    assert results["goodput"] == [{"pipeline": "rag+grounded"}]
