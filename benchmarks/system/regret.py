"""Routing regret: the router's RAG-or-direct decisions against which path answered correctly.

Shadow mode answers every item through both paths (`prompt` and `rag`), so for each item we know whether
retrieval was needed (only `rag` correct), wasted (only `prompt` correct, or both) or irrelevant (neither).
Regret is what the router's choices lose against an oracle that takes, per item, the cheapest correct path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchmarks.system.compare_report import GOAL_KNOWLEDGE_GAP
from benchmarks.system.sweep import SweepItem, cheapest_near_best, point_record, sweep

OUTCOMES: tuple[str, ...] = ("only_rag_correct", "only_prompt_correct", "both_correct", "neither_correct")


def outcome(item: SweepItem) -> str:
    if item.rag_correct and item.prompt_correct:
        return "both_correct"
    if item.rag_correct:
        return "only_rag_correct"
    if item.prompt_correct:
        return "only_prompt_correct"
    return "neither_correct"


def _oracle(item: SweepItem) -> tuple[bool, float]:
    """The oracle's correctness and cost on one item: the cheapest correct path, else the cheapest path."""
    correct = [
        c for ok, c in ((item.rag_correct, item.rag_cost), (item.prompt_correct, item.prompt_cost)) if ok
    ]
    return (True, min(correct)) if correct else (False, min(item.rag_cost, item.prompt_cost))


def routing_regret(items: Sequence[SweepItem], quality_drop: float = GOAL_KNOWLEDGE_GAP) -> dict[str, Any]:
    """Confusion matrix, regret in quality points and USD per 1k requests, and the threshold that minimises
    cost with quality at most `quality_drop` below always-RAG. Items the router neither sent to `rag` nor to
    `prompt` (refused) are counted apart and left out of the regret."""
    decided = [i for i in items if i.target in ("rag", "prompt")]
    matrix = {
        decision: {
            name: sum(1 for i in decided if i.target == decision and outcome(i) == name) for name in OUTCOMES
        }
        for decision in ("rag", "prompt")
    }
    n = len(decided)
    router_correct = sum((i.rag_correct if i.target == "rag" else i.prompt_correct) for i in decided)
    router_cost = sum((i.rag_cost if i.target == "rag" else i.prompt_cost) for i in decided)
    oracle = [_oracle(i) for i in decided]
    missed = [i for i in decided if i.target == "prompt" and outcome(i) == "only_rag_correct"]
    wasted = [i for i in decided if i.target == "rag" and i.prompt_correct]
    best = cheapest_near_best(sweep(items), quality_drop) if items else None
    return {
        "n": n,
        "not_decided": len(items) - n,
        "confusion": matrix,
        "router_quality": router_correct / n if n else None,
        "oracle_quality": sum(ok for ok, _ in oracle) / n if n else None,
        "regret_quality_points": (sum(ok for ok, _ in oracle) - router_correct) / n * 100.0 if n else None,
        "regret_usd_per_1k": (router_cost - sum(c for _, c in oracle)) / n * 1000.0 if n else None,
        "missed_retrieval_points": len(missed) / n * 100.0 if n else None,
        "wasted_retrieval_usd_per_1k": sum(i.rag_cost - i.prompt_cost for i in wasted) / n * 1000.0
        if n
        else None,
        "quality_floor": f"always-RAG quality - {quality_drop * 100:.0f} points",
        "recommended": None
        if best is None
        else {**point_record(best), "cost_per_1k_usd": best.mean_cost * 1000.0},
    }
