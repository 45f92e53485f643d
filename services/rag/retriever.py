"""The retrieval algorithm over one loaded index: dense + sparse search, fusion, reranking.

Shared by RetrievalService (the served index) and evaluate_beir (an in-memory index), so the numbers the
evaluation reports are the numbers of the code that serves.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import numpy.typing as npt

from services.core.settings import RagSettings
from services.core.types import ScoredChunk
from services.rag.chunking import embedding_text
from services.rag.fusion import FusionMode, fuse
from services.rag.index_store import IndexSnapshot
from services.rag.query_rewrite import expand_query, expansion_terms
from services.rag.rerank import Candidates, NoReranker, Reranker
from services.rag.sparse import Bm25Tokenizer

QueryRewrite = Literal["off", "prf"]


@dataclass(frozen=True, slots=True)
class RetrievalParams:
    dense_k: int = 30
    sparse_k: int = 30
    fusion: FusionMode = "rrf"
    rrf_k: int = 60
    dense_weight: float = 0.5
    rerank_candidates: int = 20
    top_k: int = 5
    path_field: bool = False
    path_weight: float = 0.1
    path_files: int = 5
    path_chunks_per_file: int = 2
    query_rewrite: QueryRewrite = "off"
    rewrite_below: float = 0.5
    rewrite_feedback_chunks: int = 3
    rewrite_terms: int = 5

    def __post_init__(self) -> None:
        names = ("dense_k", "sparse_k", "rrf_k", "rerank_candidates", "top_k", "path_weight", "path_files")
        for name in (*names, "path_chunks_per_file", "rewrite_feedback_chunks", "rewrite_terms"):
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
            path_field=settings.path_field.enabled,
            path_weight=settings.path_field.weight,
            path_files=settings.path_field.files,
            path_chunks_per_file=settings.path_field.chunks_per_file,
            query_rewrite=settings.query_rewrite.method,
            rewrite_below=settings.query_rewrite.below,
            rewrite_feedback_chunks=settings.query_rewrite.feedback_chunks,
            rewrite_terms=settings.query_rewrite.terms,
        )


@dataclass(frozen=True, slots=True)
class RankedChunks:
    chunks: list[ScoredChunk]
    max_dense_score: float
    search_ms: float
    rerank_ms: float
    # The query of the second search when query rewriting fired (its time is inside search_ms).
    rewritten_query: str | None = None
    rewrite_ms: float = 0.0


@lru_cache(maxsize=1)
def _rewrite_tokenizer() -> Bm25Tokenizer:
    return Bm25Tokenizer()


def _fused_ranking(
    snapshot: IndexSnapshot,
    query: str,
    query_vector: npt.NDArray[np.float32],
    dense: list[tuple[int, float]],
    params: RetrievalParams,
) -> list[tuple[int, float]]:
    """Sparse (and path field) search for `query`, fused with the `dense` ranking."""
    sparse = snapshot.sparse.search(query, params.sparse_k) if params.fusion != "dense" else []
    extra = []
    if params.path_field and params.fusion in ("rrf", "weighted"):
        path = snapshot.path_field.search(
            query,
            query_vector,
            snapshot.embeddings,
            files=params.path_files,
            chunks_per_file=params.path_chunks_per_file,
        )
        extra.append((path, params.path_weight))
    return fuse(
        dense, sparse, mode=params.fusion, rrf_k=params.rrf_k, dense_weight=params.dense_weight, extra=extra
    )


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
    fused = _fused_ranking(snapshot, query, query_vector, dense, params)
    rewritten_query, rewrite_ms = None, 0.0
    if params.query_rewrite == "prf" and (not dense or dense[0][1] < params.rewrite_below):
        rewrite_started = time.perf_counter()
        feedback = [snapshot.chunks[row] for row, _ in fused[: params.rewrite_feedback_chunks]]
        terms = expansion_terms(query, feedback, terms=params.rewrite_terms, tokenizer=_rewrite_tokenizer())
        if terms:
            # The dense ranking stays: the terms are topic words for BM25, not a sentence to embed.
            rewritten_query = expand_query(query, terms)
            fused = _fused_ranking(snapshot, rewritten_query, query_vector, dense, params)
        rewrite_ms = (time.perf_counter() - rewrite_started) * 1000.0
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
        rewritten_query=rewritten_query,
        rewrite_ms=rewrite_ms,
    )
