"""Router-threshold sweep and shadow-mode counts, computed from answers already collected (no re-run).

Each item has the router's probability that it needs retrieval (`p_knowledge`), and whether the `prompt` and
the `rag` pipeline answered it correctly, at what cost. Sending an item to RAG iff p_knowledge >= t and
sweeping t traces quality against the share of requests sent to RAG (and against cost), as RouteLLM does
for strong/weak model routing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

QUALITY_TOLERANCE = 0.01  # "within 1 point" of always-RAG quality


@dataclass(frozen=True, slots=True)
class SweepItem:
    item_id: str
    p_knowledge: float
    prompt_correct: bool
    rag_correct: bool
    prompt_cost: float
    rag_cost: float
    target: str | None = None  # what the hybrid router actually chose ("prompt", "rag", "refuse")


@dataclass(frozen=True, slots=True)
class SweepPoint:
    threshold: float
    share_rag: float
    quality: float
    mean_cost: float


def p_knowledge(route: Mapping[str, Any]) -> float | None:
    """P(knowledge) from a reported route: its score, else its confidence if the intent is knowledge."""
    scores = route.get("scores") or {}
    if "knowledge" in scores:
        return float(scores["knowledge"])
    confidence = route.get("confidence")
    if confidence is None or route.get("intent") is None:
        return None
    return float(confidence) if route["intent"] == "knowledge" else 1.0 - float(confidence)


def sweep(items: Sequence[SweepItem]) -> list[SweepPoint]:
    """One point per distinct threshold, from 0 % to 100 % of requests sent to RAG."""
    if not items:
        return []
    n = len(items)
    thresholds = [math.inf, *sorted({i.p_knowledge for i in items}, reverse=True)]
    points = []
    for t in thresholds:
        to_rag = [i.p_knowledge >= t for i in items]
        quality = sum(
            (i.rag_correct if rag else i.prompt_correct) for i, rag in zip(items, to_rag, strict=True)
        )  # fmt: skip
        cost = sum((i.rag_cost if rag else i.prompt_cost) for i, rag in zip(items, to_rag, strict=True))
        points.append(
            SweepPoint(threshold=t, share_rag=sum(to_rag) / n, quality=quality / n, mean_cost=cost / n)
        )
    return points


def area_under_curve(points: Sequence[SweepPoint]) -> float:
    """Trapezoid area of quality over share-to-RAG in [0, 1] (points span 0 to 1 by construction)."""
    ordered = sorted(points, key=lambda p: p.share_rag)
    area = 0.0
    for a, b in zip(ordered, ordered[1:], strict=False):
        area += (b.share_rag - a.share_rag) * (a.quality + b.quality) / 2.0
    return area


def cheapest_near_best(
    points: Sequence[SweepPoint], tolerance: float = QUALITY_TOLERANCE
) -> SweepPoint | None:
    """The lowest-cost point whose quality is within `tolerance` of always-RAG (share 1.0)."""
    always_rag = [p for p in points if p.share_rag == 1.0]
    if not always_rag:
        return None
    floor = always_rag[0].quality - tolerance - 1e-12
    candidates = [p for p in points if p.quality >= floor]
    return min(candidates, key=lambda p: (p.mean_cost, p.share_rag))


def shadow_counts(items: Sequence[SweepItem]) -> dict[str, Any]:
    """Both paths' outcomes for the router's actual choice on each item.

    unnecessary retrieval: the router chose RAG but `prompt` was already correct.
    missed retrieval: the router chose `prompt` but only `rag` was correct.
    """
    chose_rag = [i for i in items if i.target == "rag"]
    chose_prompt = [i for i in items if i.target == "prompt"]
    unnecessary = [i.item_id for i in chose_rag if i.prompt_correct]
    missed = [i.item_id for i in chose_prompt if i.rag_correct and not i.prompt_correct]
    return {
        "n": len(items),
        "chose_rag": len(chose_rag),
        "chose_prompt": len(chose_prompt),
        "chose_other": len(items) - len(chose_rag) - len(chose_prompt),
        "unnecessary_retrievals": len(unnecessary),
        "missed_retrievals": len(missed),
        "both_correct": sum(1 for i in items if i.prompt_correct and i.rag_correct),
        "neither_correct": sum(1 for i in items if not i.prompt_correct and not i.rag_correct),
        "unnecessary_ids": unnecessary,
        "missed_ids": missed,
    }


def point_record(point: SweepPoint) -> dict[str, Any]:
    """A sweep point as results.json holds it (the always-prompt point's infinite threshold as null)."""
    return {
        "threshold": None if math.isinf(point.threshold) else point.threshold,
        "share_rag": point.share_rag,
        "quality": point.quality,
        "mean_cost": point.mean_cost,
    }


def analyse(items: Sequence[SweepItem], tolerance: float = QUALITY_TOLERANCE) -> dict[str, Any]:
    """The sweep curve, its area, normalized gain, the recommended threshold and shadow-mode counts."""
    points = sweep(items)
    if not points:
        return {"n": 0, "points": []}
    by_share = sorted(points, key=lambda p: p.share_rag)
    prompt_only, rag_only = by_share[0], by_share[-1]
    auc = area_under_curve(points)
    gap = rag_only.quality - prompt_only.quality
    best = cheapest_near_best(points, tolerance)
    return {
        "n": len(items),
        "points": [point_record(p) for p in points],
        "auc": auc,
        # Average performance gap recovered (RouteLLM's APGR): 0 = no better than prompt-only, 1 = always-RAG.
        "apgr": (auc - prompt_only.quality) / gap if gap > 0 else None,
        "prompt_only": {"quality": prompt_only.quality, "mean_cost": prompt_only.mean_cost},
        "rag_only": {"quality": rag_only.quality, "mean_cost": rag_only.mean_cost},
        "recommended": None
        if best is None
        else {
            **point_record(best),
            "cost_vs_rag_only": best.mean_cost / rag_only.mean_cost if rag_only.mean_cost else None,
        },
        "tolerance": tolerance,
        "shadow": shadow_counts(items),
    }
