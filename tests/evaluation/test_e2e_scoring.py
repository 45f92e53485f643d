import json

import pytest

from services.core.errors import InvalidRequest
from services.evaluation.scoring import (
    EvalItem,
    aggregate,
    contains_any,
    hit_at_k,
    is_refusal,
    load_eval_items,
    same_file,
    score_answer,
)

pytestmark = pytest.mark.unit

RAG_ITEM = EvalItem(
    "k1", "rag", "How many vacation days?", ("benefits/time-off.md",), ("20 days", "twenty days")
)
OOS_ITEM = EvalItem("o1", "out_of_scope", "Stock tips?")


def test_same_file_accepts_a_corpus_prefix_on_either_side():
    assert same_file("benefits/time-off.md", "benefits/time-off.md")
    assert same_file("handbook/benefits/time-off.md", "benefits/time-off.md")
    assert same_file("./benefits/time-off.md", "handbook/benefits/time-off.md")
    assert not same_file("benefits/time-off.md", "benefits/time-off-policy.md")
    assert not same_file("off.md", "benefits/time-off.md")


def test_hit_at_5_looks_only_at_the_first_five_sources():
    sources = [f"other/{i}.md" for i in range(5)] + ["benefits/time-off.md"]
    assert hit_at_k(["benefits/time-off.md"], sources) is False
    assert hit_at_k(["benefits/time-off.md"], sources[1:]) is True
    assert hit_at_k([], sources) is None


def test_contains_any_is_case_insensitive_and_none_without_substrings():
    assert contains_any("You get Twenty Days a year", ["twenty days"]) is True
    assert contains_any("You get 15 days", ["20 days"]) is False
    assert contains_any("anything", []) is None


def test_refusal_from_the_router_target_or_the_wording():
    assert is_refusal("whatever", {"route": {"target": "refuse"}})
    assert is_refusal("Sorry, I can't help with stock tips.", {})
    assert not is_refusal("You get 20 days.", {"route": {"target": "rag"}})


def test_score_answer_reads_the_hybrid_extension():
    hybrid = {
        "route": {"intent": "knowledge", "confidence": 0.8, "scores": {"knowledge": 0.8}, "target": "rag"},
        "sources": [{"source": "benefits/time-off.md", "chunk_id": "c", "score": 0.7}],
        "cost_usd": {"total": 2e-5},
        "tokens": {"context": 300},
    }
    score = score_answer(
        RAG_ITEM, pipeline="hybrid", answer="New hires get 20 days.", hybrid=hybrid, latency_ms=12
    )
    assert (score.route_correct, score.hit_at_5, score.answer_contains, score.refused) == (
        True,
        True,
        True,
        False,
    )
    assert score.cost_usd == 2e-5 and score.context_tokens == 300 and score.target == "rag"


def test_score_answer_without_a_route_leaves_route_accuracy_undefined():
    score = score_answer(RAG_ITEM, pipeline="prompt", answer="No idea.", hybrid={}, latency_ms=5)
    assert score.route_correct is None
    assert score.hit_at_5 is False
    assert score.answer_contains is False


def test_failed_request_scores_false_where_a_metric_applies():
    score = score_answer(
        RAG_ITEM, pipeline="hybrid", answer="", hybrid={}, latency_ms=5, ok=False, error="503"
    )
    assert (score.route_correct, score.hit_at_5, score.answer_contains) == (False, False, False)


def test_aggregate_averages_each_metric_over_the_items_it_applies_to():
    scores = [
        score_answer(RAG_ITEM, pipeline="hybrid", answer="20 days", latency_ms=10,
                     hybrid={"route": {"intent": "knowledge", "target": "rag"}, "sources": []}),
        score_answer(RAG_ITEM, pipeline="hybrid", answer="no", latency_ms=30,
                     hybrid={"route": {"intent": "direct", "target": "prompt"}}),
        score_answer(OOS_ITEM, pipeline="hybrid", answer="...", latency_ms=20,
                     hybrid={"route": {"intent": "out_of_scope", "target": "refuse"}}),
    ]  # fmt: skip
    result = aggregate(scores)
    assert result["route_accuracy"] == pytest.approx(2 / 3)
    assert result["hit@5"] == 0.0
    assert result["answer_contains"] == 0.5
    assert result["refusal_accuracy"] == 1.0
    assert result["false_refusal_rate"] == 0.0
    assert result["p50_ms"] == 20
    assert (
        result["per_route"]["rag"]["n"] == 2 and result["per_route"]["out_of_scope"]["route_accuracy"] == 1.0
    )
    assert len(result["items"]) == 3


def test_load_eval_items_names_the_bad_line(tmp_path):
    path = tmp_path / "eval.jsonl"
    good = {"id": "a", "route": "rag", "question": "q?", "gold_files": [], "answer_substrings": []}
    path.write_text(json.dumps(good) + "\n\n" + json.dumps({**good, "route": "maybe"}) + "\n")
    with pytest.raises(InvalidRequest, match=r"eval.jsonl:3"):
        load_eval_items(path)
    path.write_text(json.dumps(good) + "\n")
    assert load_eval_items(path)[0].item_id == "a"
