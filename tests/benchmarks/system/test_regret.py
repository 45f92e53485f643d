import pytest

from benchmarks.system.regret import routing_regret
from benchmarks.system.sweep import SweepItem

pytestmark = pytest.mark.unit

# prompt costs 1, rag costs 3 per request.
ITEMS = [
    # router right: needed retrieval and took it
    SweepItem("a", 0.9, prompt_correct=False, rag_correct=True, prompt_cost=1, rag_cost=3, target="rag"),
    # router wrong, costs quality: only rag was right, it chose prompt
    SweepItem("b", 0.5, prompt_correct=False, rag_correct=True, prompt_cost=1, rag_cost=3, target="prompt"),
    # router wrong, costs money: prompt was right too, it chose rag
    SweepItem("c", 0.8, prompt_correct=True, rag_correct=True, prompt_cost=1, rag_cost=3, target="rag"),
    # only prompt right and it chose prompt
    SweepItem("d", 0.1, prompt_correct=True, rag_correct=False, prompt_cost=1, rag_cost=3, target="prompt"),
    # refused: left out of the regret
    SweepItem("e", 0.2, prompt_correct=False, rag_correct=False, prompt_cost=1, rag_cost=3, target="refuse"),
]


def test_confusion_matrix_and_regret_on_a_fixture():
    result = routing_regret(ITEMS, quality_drop=0.0)
    assert result["n"] == 4 and result["not_decided"] == 1
    assert result["confusion"]["rag"] == {
        "only_rag_correct": 1, "only_prompt_correct": 0, "both_correct": 1, "neither_correct": 0
    }  # fmt: skip
    assert result["confusion"]["prompt"] == {
        "only_rag_correct": 1, "only_prompt_correct": 1, "both_correct": 0, "neither_correct": 0
    }  # fmt: skip
    # router: a, c, d right (3/4); oracle: all 4 right -> 25 points.
    assert result["router_quality"] == 0.75 and result["oracle_quality"] == 1.0
    assert result["regret_quality_points"] == pytest.approx(25.0)
    # router pays 3+1+3+1 = 8; oracle pays 3 (a) + 3 (b) + 1 (c) + 1 (d) = 8: same money, less quality.
    assert result["regret_usd_per_1k"] == pytest.approx(0.0)
    assert result["missed_retrieval_points"] == pytest.approx(25.0)
    assert result["wasted_retrieval_usd_per_1k"] == pytest.approx((3 - 1) / 4 * 1000)


def test_recommended_threshold_is_the_cheapest_at_the_quality_floor():
    # Always-RAG quality over all five: a, b, c right = 0.6. Prompt-only gets c, d right (0.4). Threshold 0.9
    # sends only a to rag: a, c, d right = 0.6, at cost (3 + 4 x 1) / 5, the cheapest point at the floor.
    result = routing_regret(ITEMS, quality_drop=0.0)
    rec = result["recommended"]
    assert rec["threshold"] == 0.9
    assert rec["quality"] == pytest.approx(0.6)
    assert rec["cost_per_1k_usd"] == pytest.approx((3 + 4 * 1) / 5 * 1000)
    # Allowing 25 points below always-RAG, prompt-only (0.4 >= 0.35) is cheaper still.
    assert routing_regret(ITEMS, quality_drop=0.25)["recommended"]["threshold"] is None


def test_no_decisions_means_no_regret():
    result = routing_regret([])
    assert result["n"] == 0 and result["regret_quality_points"] is None and result["recommended"] is None
