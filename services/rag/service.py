"""RetrievalService: what the `rag` pipeline calls. Loads the current index version and answers queries.

Hot reload: `reload_if_changed()` reads the small CURRENT file; when it names a new version, that version is
loaded and validated completely before one reference assignment swaps it in. A query in flight holds its own
reference to the snapshot it started with, so it finishes on the old version; no query ever sees a
half-loaded index. A corrupted new version is refused (logged) and the old one keeps serving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from services.core.errors import IndexCorrupted, InvalidRequest, NotReady, RetrievalError
from services.core.protocols import Embedder
from services.core.settings import RagSettings
from services.core.types import ContextSelection, RetrievalOutcome, ScoredChunk
from services.rag.context import select_context_within_budget
from services.rag.embedder import build_query_embedder
from services.rag.evidence import (
    EmbeddingUnitSource,
    EvidenceSelection,
    UnitsWithVectors,
    UnitVectorCache,
    select_evidence,
)
from services.rag.index_store import IndexInfo, IndexSnapshot, load_current, load_version, read_current
from services.rag.rerank import Reranker, build_reranker
from services.rag.retriever import RetrievalParams, rank_chunks
from services.rag.sentences import SPLITTER_VERSION, split_units
from services.rag.sparse import Bm25Tokenizer

logger = logging.getLogger(__name__)


class IndexedUnitSource:
    """Unit vectors the index stored at ingestion; chunks it has none for are embedded by `fallback`."""

    def __init__(self, snapshot: IndexSnapshot, fallback: EmbeddingUnitSource) -> None:
        stored = snapshot.units
        self._units = stored if stored is not None and stored.splitter == SPLITTER_VERSION else None
        self._rows = snapshot.rows_by_chunk_id
        self._fallback = fallback

    def units_and_vectors(self, chunks: Sequence[ScoredChunk]) -> list[UnitsWithVectors]:
        if self._units is None:
            return self._fallback.units_and_vectors(chunks)
        found: list[UnitsWithVectors | None] = []
        for scored in chunks:
            row = self._rows.get(scored.chunk.chunk_id)
            units = split_units(scored.chunk.text)
            vectors = self._units.of_row(row) if row is not None else None
            found.append((units, vectors) if vectors is not None and len(vectors) == len(units) else None)
        missing = [i for i, entry in enumerate(found) if entry is None]
        if missing:
            embedded = self._fallback.units_and_vectors([chunks[i] for i in missing])
            for i, entry in zip(missing, embedded, strict=True):
                found[i] = entry
        return [entry for entry in found if entry is not None]


class RetrievalService:
    def __init__(
        self,
        settings: RagSettings,
        embedder: Embedder | None = None,
        *,
        reranker: Reranker | None = None,
    ) -> None:
        self._settings = settings
        self._index_dir = Path(settings.index_dir)
        self._embedder = embedder or build_query_embedder(settings)
        self._reranker = reranker or build_reranker(settings.rerank.reranker)
        self._params = RetrievalParams.from_settings(settings)
        self._snapshot: IndexSnapshot | None = None
        self._refused_version: str | None = None
        self._reload_lock = threading.Lock()
        # For index versions without stored unit vectors. Chunk ids are hashes of their text, so cached
        # unit vectors stay valid across index versions.
        self._embedded_units = EmbeddingUnitSource(self._embedder, UnitVectorCache())
        self._unit_tokenizer = Bm25Tokenizer()

    def warm_up(self) -> None:
        """Load the embedder, the reranker and the CURRENT index.

        Raises RetrievalError when no index exists, IndexCorrupted when the current one is damaged.
        """
        # The index first: without one there is nothing to serve, so no reason to load (or export) models.
        snapshot = load_current(self._index_dir)
        self._embedder.warm_up()
        self._reranker.warm_up()
        self._check_compatible(snapshot)
        self._prepare(snapshot)
        self._snapshot = snapshot
        # One throwaway query pays the first-call costs (lazy imports, allocator growth) here, not on a user.
        self.retrieve("warm up")
        logger.info("serving index version %s (%d chunks)", snapshot.version, len(snapshot.chunks))

    def _check_compatible(self, snapshot: IndexSnapshot) -> None:
        model = snapshot.manifest.get("embedding_model")
        if model != self._embedder.model_id or snapshot.vectors.dimensions != self._embedder.dimensions:
            raise IndexCorrupted(
                f"index version {snapshot.version} was built with embedder {model!r} "
                f"({snapshot.vectors.dimensions} dimensions), the service uses {self._embedder.model_id!r} "
                f"({self._embedder.dimensions}); re-ingest the corpus",
                code="embedder_mismatch",
            )

    def _prepare(self, snapshot: IndexSnapshot) -> None:
        """Build what the enabled options derive from the index before it serves, not on a user's query."""
        if self._settings.path_field.enabled:
            _ = snapshot.path_field

    def _current(self) -> IndexSnapshot:
        snapshot = self._snapshot
        if snapshot is None:
            raise NotReady("retrieval service is not warmed up")
        return snapshot

    def retrieve(self, query: str, *, top_k: int | None = None) -> RetrievalOutcome:
        if not query.strip():
            raise InvalidRequest("query must not be empty", param="query")
        if top_k is not None and top_k <= 0:
            raise InvalidRequest(f"top_k must be > 0, got {top_k}", param="top_k")
        # One read of the reference: this query uses this snapshot to the end, even if a reload swaps it.
        snapshot = self._current()
        params = self._params if top_k is None else RetrievalParams.from_settings(self._settings, top_k=top_k)
        started = time.perf_counter()
        query_vector = self._embedder.embed_query(query)
        embed_ms = (time.perf_counter() - started) * 1000.0
        ranked = rank_chunks(snapshot, query, query_vector, params, self._reranker)
        return RetrievalOutcome(
            chunks=ranked.chunks,
            timings_ms={"embed": embed_ms, "search": ranked.search_ms, "rerank": ranked.rerank_ms},
            index_version=snapshot.version,
            max_dense_score=ranked.max_dense_score,
            relevant=ranked.max_dense_score >= self._settings.relevance.min_dense_score,
            query_vector=query_vector,
            rewritten_query=ranked.rewritten_query,
            rewrite_ms=ranked.rewrite_ms,
        )

    def select_context(
        self, chunks: Sequence[ScoredChunk], budget_tokens: int | None = None
    ) -> ContextSelection:
        budget = self._settings.context.budget_tokens if budget_tokens is None else budget_tokens
        return select_context_within_budget(chunks, budget)

    def select_evidence(
        self, query: str, outcome: RetrievalOutcome, budget_tokens: int | None = None
    ) -> EvidenceSelection:
        """The sentences of `outcome.chunks` that best answer `query`, within the evidence budget."""
        budget = self._settings.evidence.budget_tokens if budget_tokens is None else budget_tokens
        return select_evidence(
            query,
            outcome.query_vector,
            outcome.chunks,
            IndexedUnitSource(self._current(), self._embedded_units),
            budget_tokens=budget,
            count_tokens=self._embedder.count_tokens,
            neighbours=self._settings.evidence.neighbours,
            tokenizer=self._unit_tokenizer,
        )

    def reload_if_changed(self) -> bool:
        """Swap in the version CURRENT names if it changed and is valid. True when a swap happened."""
        with self._reload_lock:
            current = self._current()
            version = read_current(self._index_dir)
            if version is None or version == current.version or version == self._refused_version:
                return False
            try:
                snapshot = load_version(self._index_dir, version)
                self._check_compatible(snapshot)
                self._prepare(snapshot)
            except RetrievalError as exc:
                # Remember the refusal so a periodic caller does not reload a broken version every tick.
                self._refused_version = version
                logger.error("refusing index version %s, still serving %s: %s", version, current.version, exc)
                return False
            self._snapshot = snapshot
            self._refused_version = None
            logger.info("now serving index version %s (%d chunks)", version, len(snapshot.chunks))
            return True

    @property
    def index_info(self) -> IndexInfo:
        snapshot = self._current()
        return IndexInfo(
            version=snapshot.version,
            chunks=len(snapshot.chunks),
            created_at=snapshot.created_at,
            index_dir=self._index_dir,
        )
