"""Retrieval quality on a BEIR data set (`corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`).

Metrics follow BEIR / MTEB: nDCG@10 (graded gains from the qrels, log2 discount), recall@10, MRR@10, each
averaged over the queries that have qrels and reported on a 0-100 scale as the BEIR and MTEB papers print
them (64.51 means 0.6451). As in BEIR, a retrieved document whose id equals the query id is ignored.

Documents are embedded the way BEIR/MTEB do: `(title + " " + text).strip()`, truncated by the model at its
max_seq_length (256 word pieces for all-MiniLM-L6-v2, the sentence-transformers config MTEB used). With
`doc_mode="chunked"` documents go through the ingestion chunker instead and a document ranks where its best
chunk ranks. The ranking itself is `rank_chunks`, the code that serves queries.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from services.core.errors import RetrievalError
from services.core.protocols import Embedder
from services.core.settings import RagSettings
from services.core.types import Chunk
from services.rag.chunking import chunk_documents, embedding_text
from services.rag.embedder import SentenceTransformerEmbedder
from services.rag.index_store import IndexSnapshot
from services.rag.ingest import effective_chunk_tokens
from services.rag.loaders import read_beir_corpus
from services.rag.rerank import build_reranker
from services.rag.retriever import RetrievalParams, rank_chunks
from services.rag.sparse import Bm25Index
from services.rag.store import create_vector_store

logger = logging.getLogger(__name__)

EvalMode = Literal["fused", "rrf", "weighted", "dense", "sparse"]
DocMode = Literal["whole", "chunked"]
CUTOFF = 10

Qrels = Mapping[str, Mapping[str, int]]


def read_queries(beir_dir: Path) -> dict[str, str]:
    queries = {}
    with (beir_dir / "queries.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                queries[str(row["_id"])] = str(row["text"])
    return queries


def read_qrels(beir_dir: Path, split: str) -> dict[str, dict[str, int]]:
    path = beir_dir / "qrels" / f"{split}.tsv"
    if not path.is_file():
        raise RetrievalError(f"no qrels for split {split!r}: {path} does not exist")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            parts = line.rstrip("\n").split("\t")
            if number == 0 and parts[0] == "query-id":
                continue
            if len(parts) >= 3:
                qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    return qrels


def ndcg_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int = CUTOFF) -> float:
    dcg = sum(relevant.get(doc, 0) / math.log2(rank + 2) for rank, doc in enumerate(ranked[:k]))
    ideal = sorted((gain for gain in relevant.values() if gain > 0), reverse=True)[:k]
    idcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int = CUTOFF) -> float:
    positives = {doc for doc, gain in relevant.items() if gain > 0}
    return len(positives.intersection(ranked[:k])) / len(positives) if positives else 0.0


def mrr_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int = CUTOFF) -> float:
    for rank, doc in enumerate(ranked[:k], start=1):
        if relevant.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0


def _embed_cached(
    embedder: Embedder, texts: Sequence[str], cache_dir: Path | None, key: str
) -> npt.NDArray[np.float32]:
    """Embeddings of `texts`, cached under `cache_dir` by model, texts and max length (the expensive part)."""
    if cache_dir is None:
        return embedder.embed_documents(texts)
    digest = hashlib.sha256(key.encode("utf-8"))
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\x1f")
    path = Path(cache_dir) / f"beir-embeddings-{digest.hexdigest()[:16]}.npy"
    if path.is_file():
        cached = np.load(path)
        if cached.shape[0] == len(texts):
            logger.info("reusing cached embeddings %s", path)
            return np.asarray(cached, dtype=np.float32)
    vectors = embedder.embed_documents(texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def _build_snapshot(
    beir_dir: Path,
    settings: RagSettings,
    embedder: Embedder,
    *,
    doc_mode: DocMode,
    cache_dir: Path | None,
) -> tuple[IndexSnapshot, float]:
    documents = list(read_beir_corpus(beir_dir / "corpus.jsonl"))
    if not documents:
        raise RetrievalError(f"{beir_dir / 'corpus.jsonl'} holds no documents")
    if doc_mode == "whole":
        chunks = [
            Chunk(chunk_id=doc.source, source=doc.source, text=doc.text, title=doc.title) for doc in documents
        ]
        texts = [f"{chunk.title} {chunk.text}".strip() for chunk in chunks]
    else:
        chunk_tokens = effective_chunk_tokens(embedder, settings.chunking.tokens)
        chunks = chunk_documents(
            documents,
            embedder.token_spans,
            chunk_tokens=chunk_tokens,
            chunk_overlap=min(settings.chunking.overlap, chunk_tokens // 2),
        )
        texts = [embedding_text(chunk) for chunk in chunks]
    started = time.perf_counter()
    key = f"{embedder.model_id}|{embedder.max_seq_length}|{doc_mode}"
    embeddings = _embed_cached(embedder, texts, cache_dir, key)
    embed_seconds = time.perf_counter() - started
    vectors = create_vector_store(settings, embeddings.shape[1], expected_count=len(chunks))
    vectors.add(embeddings)
    snapshot = IndexSnapshot(
        version=f"beir-{beir_dir.name}",
        manifest={"embedding_model": embedder.model_id},
        chunks=chunks,
        embeddings=embeddings,
        vectors=vectors,
        sparse=Bm25Index.build(texts),
        directory=beir_dir,
    )
    return snapshot, embed_seconds


def evaluate_beir(
    beir_dir: Path,
    *,
    split: str = "test",
    settings: RagSettings,
    mode: EvalMode = "fused",
    embedder: Embedder | None = None,
    doc_mode: DocMode = "whole",
    cache_dir: Path | None = None,
    max_queries: int | None = None,
) -> dict[str, Any]:
    """Evaluate retrieval on a BEIR folder. IR metrics are on a 0-100 scale, latencies in milliseconds.

    mode: "fused" uses settings.fusion.method; "rrf", "weighted", "dense", "sparse" force that fusion mode.
    Returns {"ndcg@10", "recall@10", "mrr@10", "p50_ms", "p99_ms", "queries", "corpus_docs", "mode",
    "fusion", "doc_mode", "chunks", "embed_seconds", "embedder", "split"}.
    """
    beir_dir = Path(beir_dir)
    if not (beir_dir / "corpus.jsonl").is_file():
        raise RetrievalError(f"{beir_dir} is not a BEIR folder (no corpus.jsonl)")
    if max_queries is not None and max_queries <= 0:
        raise ValueError(f"max_queries must be > 0, got {max_queries}")
    fusion = settings.fusion.method if mode == "fused" else mode
    settings = settings.model_copy(update={"fusion": settings.fusion.model_copy(update={"method": fusion})})
    embedder = embedder or SentenceTransformerEmbedder(settings.embedder)
    embedder.warm_up()
    reranker = build_reranker(settings.rerank.reranker)
    reranker.warm_up()

    snapshot, embed_seconds = _build_snapshot(
        beir_dir, settings, embedder, doc_mode=doc_mode, cache_dir=cache_dir
    )
    queries = read_queries(beir_dir)
    qrels = read_qrels(beir_dir, split)
    query_ids = sorted(qid for qid in qrels if qid in queries)
    if max_queries is not None:
        query_ids = query_ids[:max_queries]
    if not query_ids:
        raise RetrievalError(f"no query of {beir_dir / 'queries.jsonl'} has qrels in split {split!r}")

    # Chunked documents need more chunks than documents to fill the top 10 with distinct documents.
    top_k = CUTOFF + 1 if doc_mode == "whole" else 10 * CUTOFF
    params = RetrievalParams.from_settings(settings, top_k=top_k)
    params = replace(params, dense_k=max(params.dense_k, top_k))
    latencies: list[float] = []
    totals = {"ndcg@10": 0.0, "recall@10": 0.0, "mrr@10": 0.0}
    for query_id in query_ids:
        started = time.perf_counter()
        query_vector = embedder.embed_query(queries[query_id])
        ranked = rank_chunks(snapshot, queries[query_id], query_vector, params, reranker)
        latencies.append((time.perf_counter() - started) * 1000.0)
        documents: list[str] = []
        for scored in ranked.chunks:
            doc = scored.chunk.source
            if doc != query_id and doc not in documents:
                documents.append(doc)
        relevant = qrels[query_id]
        totals["ndcg@10"] += ndcg_at_k(documents, relevant)
        totals["recall@10"] += recall_at_k(documents, relevant)
        totals["mrr@10"] += mrr_at_k(documents, relevant)

    count = len(query_ids)
    return {
        **{name: round(100.0 * total / count, 2) for name, total in totals.items()},
        "p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "p99_ms": round(float(np.percentile(latencies, 99)), 2),
        "queries": count,
        "corpus_docs": len({chunk.source for chunk in snapshot.chunks}),
        "chunks": len(snapshot.chunks),
        "mode": mode,
        "fusion": fusion,
        "doc_mode": doc_mode,
        "split": split,
        "embedder": embedder.model_id,
        "embed_seconds": round(embed_seconds, 1),
    }
