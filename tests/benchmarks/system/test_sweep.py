import math

import pytest

from benchmarks.system.sweep import (
    SweepItem,
    analyse,
    area_under_curve,
    cheapest_near_best,
    p_knowledge,
    sweep,
)

pytestmark = pytest.mark.unit

# Four items. prompt costs 1, rag costs 3. The router is well calibrated: the items only RAG gets right
# have the highest P(knowledge).
ITEMS = [
    SweepItem("a", 0.9, prompt_correct=False, rag_correct=True, prompt_cost=1, rag_cost=3, target="rag"),
    SweepItem("b", 0.7, prompt_correct=False, rag_correct=True, prompt_cost=1, rag_cost=3, target="rag"),
    SweepItem("c", 0.4, prompt_correct=True, rag_correct=True, prompt_cost=1, rag_cost=3, target="prompt"),
    SweepItem("d", 0.1, prompt_correct=True, rag_correct=False, prompt_cost=1, rag_cost=3, target="prompt"),
]


def test_sweep_goes_from_prompt_only_to_rag_only():
    points = sweep(ITEMS)
    assert [p.share_rag for p in points] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert [p.quality for p in points] == [0.5, 0.75, 1.0, 1.0, 0.75]
    assert [p.mean_cost for p in points] == [1.0, 1.5, 2.0, 2.5, 3.0]
    assert math.isinf(points[0].threshold) and points[2].threshold == 0.7


def test_area_under_the_curve_by_trapezoids():
    # 0.25 * ((0.5+0.75)/2 + (0.75+1)/2 + (1+1)/2 + (1+0.75)/2)
    assert area_under_curve(sweep(ITEMS)) == pytest.approx(0.25 * (0.625 + 0.875 + 1.0 + 0.875))


def test_cheapest_point_within_one_point_of_always_rag():
    best = cheapest_near_best(sweep(ITEMS))
    assert best is not None
    # always-RAG quality is 0.75; the cheapest point reaching 0.74 is 25 % to RAG at cost 1.5
    assert (best.share_rag, best.mean_cost, best.threshold) == (0.25, 1.5, 0.9)


def test_analyse_reports_apgr_recommendation_and_shadow_counts():
    result = analyse(ITEMS)
    assert result["prompt_only"] == {"quality": 0.5, "mean_cost": 1.0}
    assert result["rag_only"] == {"quality": 0.75, "mean_cost": 3.0}
    assert result["apgr"] == pytest.approx((result["auc"] - 0.5) / 0.25)
    assert result["recommended"]["cost_vs_rag_only"] == pytest.approx(0.5)
    shadow = result["shadow"]
    assert shadow["unnecessary_retrievals"] == 0  # a and b: prompt was wrong
    assert shadow["missed_retrievals"] == 0  # c: prompt was right; d: rag was wrong
    assert shadow["both_correct"] == 1 and shadow["neither_correct"] == 0


def test_shadow_counts_unnecessary_and_missed_retrievals():
    items = [
        SweepItem("u", 0.8, prompt_correct=True, rag_correct=True, prompt_cost=1, rag_cost=3, target="rag"),
        SweepItem(
            "m", 0.3, prompt_correct=False, rag_correct=True, prompt_cost=1, rag_cost=3, target="prompt"
        ),
    ]
    shadow = analyse(items)["shadow"]
    assert (shadow["unnecessary_retrievals"], shadow["missed_retrievals"]) == (1, 1)
    assert shadow["unnecessary_ids"] == ["u"] and shadow["missed_ids"] == ["m"]


def test_p_knowledge_from_scores_or_confidence():
    assert p_knowledge({"scores": {"knowledge": 0.3}}) == 0.3
    assert p_knowledge({"intent": "direct", "confidence": 0.8}) == pytest.approx(0.2)
    assert p_knowledge({}) is None
    assert analyse([]) == {"n": 0, "points": []}
