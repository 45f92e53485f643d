"""The retrieval algorithm over one loaded index: dense + sparse search, fusion, reranking.

Shared by RetrievalService (the served index) and evaluate_beir (an in-memory index), so the numbers the
evaluation reports are the numbers of the code that serves.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from services.core.settings import RagSettings
from services.core.types import ScoredChunk
from services.rag.chunking import embedding_text
from services.rag.fusion import FusionMode, fuse
from services.rag.index_store import IndexSnapshot
from services.rag.rerank import Candidates, NoReranker, Reranker


@dataclass(frozen=True, slots=True)
class RetrievalParams:
    dense_k: int = 30
    sparse_k: int = 30
    fusion: FusionMode = "rrf"
    rrf_k: int = 60
    dense_weight: float = 0.5
    rerank_candidates: int = 20
    top_k: int = 5

    def __post_init__(self) -> None:
        for name in ("dense_k", "sparse_k", "rrf_k", "rerank_candidates", "top_k"):
            value = getattr(self, name)
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")

    @classmethod
    def from_settings(cls, settings: RagSettings, *, top_k: int | None = None) -> RetrievalParams:
        return cls(
            dense_k=settings.fusion.dense_k,
            sparse_k=settings.fusion.sparse_k,
            fusion=settings.fusion.method,
            rrf_k=settings.fusion.rrf_k,
            dense_weight=settings.fusion.dense_weight,
            rerank_candidates=settings.rerank.candidates,
            top_k=settings.top_k if top_k is None else top_k,
        )


@dataclass(frozen=True, slots=True)
class RankedChunks:
    chunks: list[ScoredChunk]
    max_dense_score: float
    search_ms: float
    rerank_ms: float


def rank_chunks(
    snapshot: IndexSnapshot,
    query: str,
    query_vector: npt.NDArray[np.float32],
    params: RetrievalParams,
    reranker: Reranker | None = None,
) -> RankedChunks:
    """Top chunks for `query`, ordered by fused (then reranked) rank.

    Each ScoredChunk's score is the cosine similarity of the chunk to the query (in [-1, 1]), whatever the
    fusion mode: a fused RRF score (~0.03) means nothing to a user, a cosine does, and it is comparable
    across queries and with `min_dense_score`.
    """
    reranker = reranker or NoReranker()
    started = time.perf_counter()
    # Dense search always runs: its best cosine decides whether the index knows anything about the query.
    dense = snapshot.vectors.search(query_vector, params.dense_k)
    sparse = snapshot.sparse.search(query, params.sparse_k) if params.fusion != "dense" else []
    fused = fuse(dense, sparse, mode=params.fusion, rrf_k=params.rrf_k, dense_weight=params.dense_weight)
    reranking = not isinstance(reranker, NoReranker)
    candidates = [row for row, _ in fused[: params.rerank_candidates if reranking else params.top_k]]
    candidate_vectors = np.asarray(snapshot.embeddings[candidates], dtype=np.float32).reshape(
        len(candidates), -1
    )
    searched = time.perf_counter()
    if reranking and candidates:
        texts = [embedding_text(snapshot.chunks[row]) for row in candidates]
        order = reranker.rerank(Candidates(query, query_vector, texts, candidate_vectors), params.top_k)
    else:
        order = list(range(len(candidates)))
    reranked = time.perf_counter()
    cosines = candidate_vectors @ query_vector if candidates else np.zeros(0, dtype=np.float32)
    chunks = [ScoredChunk(chunk=snapshot.chunks[candidates[i]], score=float(cosines[i])) for i in order]
    return RankedChunks(
        chunks=chunks,
        max_dense_score=dense[0][1] if dense else -1.0,
        search_ms=(searched - started) * 1000.0,
        rerank_ms=(reranked - searched) * 1000.0,
    )
