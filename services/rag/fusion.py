"""Combine dense and sparse rankings into one.

- "rrf": reciprocal rank fusion, score = sum over lists of 1 / (rrf_k + rank), rank from 1. Uses only
  ranks, so cosine and BM25 scales never have to be reconciled (Cormack et al., 2009; k=60 there).
- "weighted": dense_weight * dense + (1 - dense_weight) * sparse, each list min-max scaled to [0, 1]
  over its own candidates (a chunk missing from a list gets 0 for it).
- "dense" / "sparse": one list alone.
Further weighted rankings (the path field) add weight / (rrf_k + rank) under "rrf" and weight times their
min-max scaled score under "weighted"; the single-list modes ignore them.
Returns (row, fused score) pairs, best first; ties break on the row for a deterministic order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

FusionMode = Literal["rrf", "weighted", "dense", "sparse"]
FUSION_MODES: tuple[FusionMode, ...] = ("rrf", "weighted", "dense", "sparse")

Ranking = Sequence[tuple[int, float]]


WeightedRanking = tuple[Ranking, float]


def reciprocal_rank_fusion(
    rankings: Sequence[Ranking], *, rrf_k: int = 60, extra: Sequence[WeightedRanking] = ()
) -> list[tuple[int, float]]:
    if rrf_k <= 0:
        raise ValueError(f"rrf_k must be > 0, got {rrf_k}")
    fused: dict[int, float] = {}
    for ranking, weight in [*((r, 1.0) for r in rankings), *extra]:
        for rank, (row, _) in enumerate(ranking, start=1):
            fused[row] = fused.get(row, 0.0) + weight / (rrf_k + rank)
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


def _min_max(ranking: Ranking) -> dict[int, float]:
    if not ranking:
        return {}
    scores = [score for _, score in ranking]
    low, high = min(scores), max(scores)
    if high == low:
        return {row: 1.0 for row, _ in ranking}
    return {row: (score - low) / (high - low) for row, score in ranking}


def weighted_score_fusion(
    dense: Ranking, sparse: Ranking, *, dense_weight: float, extra: Sequence[WeightedRanking] = ()
) -> list[tuple[int, float]]:
    if not 0.0 <= dense_weight <= 1.0:
        raise ValueError(f"dense_weight must be in [0, 1], got {dense_weight}")
    weighted = [(_min_max(dense), dense_weight), (_min_max(sparse), 1.0 - dense_weight)]
    weighted += [(_min_max(ranking), weight) for ranking, weight in extra]
    fused: dict[int, float] = {}
    for scaled, weight in weighted:
        for row, score in scaled.items():
            fused[row] = fused.get(row, 0.0) + weight * score
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


def fuse(
    dense: Ranking,
    sparse: Ranking,
    *,
    mode: FusionMode,
    rrf_k: int = 60,
    dense_weight: float = 0.5,
    extra: Sequence[WeightedRanking] = (),
) -> list[tuple[int, float]]:
    if mode == "rrf":
        return reciprocal_rank_fusion([dense, sparse], rrf_k=rrf_k, extra=extra)
    if mode == "weighted":
        return weighted_score_fusion(dense, sparse, dense_weight=dense_weight, extra=extra)
    if mode == "dense":
        return list(dense)
    if mode == "sparse":
        return list(sparse)
    raise ValueError(f"fusion mode must be one of {FUSION_MODES}, got {mode!r}")
