from typing import Any

import pytest

from benchmarks.system.compare_report import goals, update_cell

pytestmark = pytest.mark.unit

UPDATE_COST = {
    "architectures": {
        "rag": {"seconds": 4.2, "cpu_seconds": 6.0, "quality_before": 0.1, "quality_after": 0.8},
        "tuned": {"seconds": 95.0, "cpu_seconds": 180.0, "quality_before": 0.0, "quality_after": 0.3},
    }
}


def test_update_cell_reads_update_cost_json():
    assert update_cell("rag", UPDATE_COST).endswith(
        "seconds 4.20, cpu seconds 6.00, quality before 0.10, quality after 0.80"
    )
    assert "seconds 4.20" in update_cell("hybrid", UPDATE_COST)  # knowledge updates the way rag does
    assert "seconds 95.00" in update_cell("tuned", UPDATE_COST)
    assert "not in update_cost.json" in update_cell("prompt", UPDATE_COST)
    assert "no benchmarks/results/update_cost.json" in update_cell("rag", None)


def summary(cost: float, p95: float, knowledge: float) -> dict[str, Any]:
    return {
        "cost_per_1k_usd": {"from_responses": cost, "from_metrics": cost},
        "latency": {"4": {"p95": p95}},
        "knowledge_answer_contains": knowledge,
    }


def test_goals_against_rag_and_prompt():
    result = goals({"hybrid": summary(0.5, 600, 0.79), "rag": summary(1.0, 1000, 0.80),
                    "prompt": summary(0.2, 300, 0.4)}, level=4)  # fmt: skip
    assert result["mean_cost_vs_rag"] == {"value": 0.5, "target": "<= 0.6", "met": True}
    assert result["p95_latency_vs_rag"]["value"] == pytest.approx(0.6) and result["p95_latency_vs_rag"]["met"]
    assert result["knowledge_answer_contains_gap_vs_rag"]["met"] is True
    assert result["knowledge_answer_contains_lead_vs_prompt"]["value"] == pytest.approx(0.39)
    worse = goals({"hybrid": summary(0.7, 900, 0.70), "rag": summary(1.0, 1000, 0.80)}, level=4)
    assert not worse["mean_cost_vs_rag"]["met"] and not worse["p95_latency_vs_rag"]["met"]
    assert not worse["knowledge_answer_contains_gap_vs_rag"]["met"]
    assert "knowledge_answer_contains_lead_vs_prompt" not in worse
    assert goals({"rag": summary(1, 1, 1)}, level=4) == {}
