"""Incremental ingestion: load, chunk, embed only what changed, build a new index version, swap it in.

Unchanged chunks (same id = same source, headings and text) reuse the embeddings stored in the current
version, so re-ingesting a corpus after editing one file embeds only that file's changed chunks. Files that
left the corpus leave the index: every version is built from the full corpus as it is now.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from services.core.errors import IndexCorrupted, RetrievalError
from services.core.protocols import Embedder
from services.core.settings import RagSettings
from services.core.types import Chunk
from services.rag.chunking import chunk_documents, embedding_text
from services.rag.embedder import build_ingest_embedder
from services.rag.evidence import units_for_embedding
from services.rag.index_store import (
    VERSIONS_DIR,
    UnitVectors,
    VersionContents,
    ingest_lock,
    read_chunks,
    read_current,
    read_embeddings,
    read_manifest,
    read_unit_vectors,
    write_version,
)
from services.rag.loaders import Document, load_corpus
from services.rag.progress import EmbeddingProgress
from services.rag.sentences import SPLITTER_VERSION
from services.rag.sparse import Bm25Index
from services.rag.store import create_vector_store

logger = logging.getLogger(__name__)

EMBED_BATCH = 256
# [CLS] and [SEP] take two of the model's max_seq_length positions.
_SPECIAL_TOKENS = 2


@dataclass(frozen=True, slots=True)
class IngestReport:
    version: str
    chunks: int
    files: int
    added_chunks: int
    removed_chunks: int
    embedded: int
    reused_embeddings: int
    embedded_units: int
    skipped_files: tuple[str, ...]
    seconds: float
    # Seconds per stage (load, embedder_warm_up, chunk, embed_chunks, index, embed_units, write), in order.
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["skipped_files"] = list(self.skipped_files)
        values["seconds"] = round(self.seconds, 3)
        values["stage_seconds"] = {stage: round(s, 3) for stage, s in self.stage_seconds.items()}
        return values


class _StageClock:
    """Seconds since the previous mark, by stage name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def mark(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._last
        self._last = now


def effective_chunk_tokens(embedder: Embedder, requested: int) -> int:
    """Chunks longer than the model's input would be silently truncated when embedded: cap them."""
    return min(requested, embedder.max_seq_length - _SPECIAL_TOKENS)


def corpus_hash_of(chunks: Sequence[Chunk]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk.chunk_id.encode("ascii"))
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class ReusableVectors:
    """What the current version lets the next ingest reuse, by chunk id: chunk vectors and unit vectors."""

    chunks: dict[str, npt.NDArray[np.float32]]
    units: dict[str, npt.NDArray[np.float32]]


def _reusable_vectors(index_dir: Path, embedder: Embedder) -> ReusableVectors:
    """The current version's vectors when it was built with this embedder (unit vectors also need this unit
    splitter). The version is read once; anything unreadable means embedding again."""
    nothing = ReusableVectors({}, {})
    version = read_current(index_dir)
    if version is None:
        return nothing
    directory = index_dir / VERSIONS_DIR / version
    try:
        manifest = read_manifest(directory)
        if manifest.get("embedding_model") != embedder.model_id or manifest.get("dimensions") != (
            embedder.dimensions
        ):
            logger.info("embedder changed since version %s: embedding every chunk again", version)
            return nothing
        chunks = read_chunks(directory)
        vectors = read_embeddings(directory)
        if vectors.shape[0] != len(chunks):
            raise IndexCorrupted(f"{len(chunks)} chunks but {vectors.shape[0]} embeddings")
        units = read_unit_vectors(directory, manifest, len(chunks))
    except (IndexCorrupted, RetrievalError) as exc:
        logger.warning("cannot reuse the vectors of version %s (%s): embedding everything", version, exc)
        return nothing
    stored_units = units if units is not None and units.splitter == SPLITTER_VERSION else None
    return ReusableVectors(
        chunks={chunk.chunk_id: vectors[row] for row, chunk in enumerate(chunks)},
        units={}
        if stored_units is None
        else {chunk.chunk_id: stored_units.of_row(row) for row, chunk in enumerate(chunks)},
    )


def embed_texts(
    embedder: Embedder, texts: Sequence[str], *, progress: bool, what: str
) -> npt.NDArray[np.float32]:
    """Vectors of `texts`, in their order. Texts go to the embedder longest first, so each batch pads to
    texts of about its own length (a corpus mixes one-line units with full chunks); rows are put back
    in input order. Progress: a bar when `progress`, log lines otherwise."""
    # Characters stand in for tokens here: the embedder sorts each window by its own token counts.
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    vectors = np.zeros((len(texts), embedder.dimensions), dtype=np.float32)
    with EmbeddingProgress(len(texts), what, bar=progress) as bar:
        for start in range(0, len(order), EMBED_BATCH):
            rows = order[start : start + EMBED_BATCH]
            vectors[rows] = embedder.embed_documents([texts[i] for i in rows])
            bar.update(len(rows))
    return vectors


def _embed(embedder: Embedder, chunks: Sequence[Chunk], *, progress: bool) -> npt.NDArray[np.float32]:
    return embed_texts(embedder, [embedding_text(c) for c in chunks], progress=progress, what="chunks")


def embed_units(
    embedder: Embedder,
    chunks: Sequence[Chunk],
    previous: dict[str, npt.NDArray[np.float32]],
    *,
    progress: bool,
) -> tuple[UnitVectors, int]:
    """Every chunk's evidence units embedded (stored vectors of unchanged chunks reused), and how many
    units had to be embedded now."""
    units, texts = units_for_embedding(chunks)
    counts = [len(per) for per in units]
    offsets = np.zeros(len(chunks) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(counts)
    vectors = np.zeros((int(offsets[-1]), embedder.dimensions), dtype=np.float16)
    todo: list[int] = []  # rows of `vectors` to embed now
    for row, chunk in enumerate(chunks):
        start, end = int(offsets[row]), int(offsets[row + 1])
        stored = previous.get(chunk.chunk_id)
        if stored is not None and len(stored) == end - start:
            vectors[start:end] = stored
        else:
            todo.extend(range(start, end))
    if todo:
        vectors[todo] = embed_texts(embedder, [texts[i] for i in todo], progress=progress, what="units")
    return UnitVectors(vectors=vectors, offsets=offsets, splitter=SPLITTER_VERSION), len(todo)


def _unique_chunks(
    documents: Sequence[Document], embedder: Embedder, chunk_tokens: int, overlap: int
) -> list[Chunk]:
    """The documents' chunks in model tokens; the same text twice in one source (a repeated boilerplate
    paragraph) is one chunk."""
    chunks = chunk_documents(
        documents,
        embedder.token_spans,
        chunk_tokens=chunk_tokens,
        chunk_overlap=min(overlap, chunk_tokens // 2),
    )
    unique: dict[str, Chunk] = {}
    for chunk in chunks:
        unique.setdefault(chunk.chunk_id, chunk)
    return list(unique.values())


def _chunk_vectors(
    chunks: Sequence[Chunk],
    previous: dict[str, npt.NDArray[np.float32]],
    to_embed: Sequence[Chunk],
    embedder: Embedder,
    *,
    progress: bool,
) -> npt.NDArray[np.float32]:
    """One row per chunk: embedded now for `to_embed`, reused from the previous version for the rest."""
    fresh = dict(
        zip((c.chunk_id for c in to_embed), _embed(embedder, to_embed, progress=progress), strict=True)
    )
    rows = [fresh[c.chunk_id] if c.chunk_id in fresh else previous[c.chunk_id] for c in chunks]
    return np.stack(rows).astype(np.float32)


def ingest(
    paths: Sequence[Path],
    settings: RagSettings,
    *,
    embedder: Embedder | None = None,
    progress: bool = True,
    manifest_extra: Mapping[str, Any] | None = None,
) -> IngestReport:
    """Ingest `paths` (folders or files) into a new version of `settings.index_dir` and make it current.

    With several paths, sources are prefixed by each root's folder name (`handbook/people/x.md`) so they
    stay unique; with one path they are relative to it. Raises RetrievalError when another ingest holds the
    lock or no readable document is found. `manifest_extra` is recorded in the version's manifest.json
    (a project records the fingerprint of what it ingested).
    """
    started = time.perf_counter()
    index_dir = Path(settings.index_dir)
    with ingest_lock(index_dir):
        stages = _StageClock()
        loaded = load_corpus([Path(path) for path in paths])
        stages.mark("load")
        embedder = embedder or build_ingest_embedder(settings)
        embedder.warm_up()
        stages.mark("embedder_warm_up")
        chunk_tokens = effective_chunk_tokens(embedder, settings.chunking.tokens)
        chunks = _unique_chunks(loaded.documents, embedder, chunk_tokens, settings.chunking.overlap)
        if not chunks:
            raise RetrievalError(f"the documents under {[str(p) for p in paths]} produced no text to index")
        stages.mark("chunk")
        reusable = _reusable_vectors(index_dir, embedder)
        previous = reusable.chunks
        to_embed = [chunk for chunk in chunks if chunk.chunk_id not in previous]
        embeddings = _chunk_vectors(chunks, previous, to_embed, embedder, progress=progress)
        stages.mark("embed_chunks")

        vectors = create_vector_store(settings, embeddings.shape[1], expected_count=len(chunks))
        vectors.add(embeddings)
        sparse = Bm25Index.build([embedding_text(chunk) for chunk in chunks])
        stages.mark("index")
        units, embedded_units = embed_units(embedder, chunks, reusable.units, progress=progress)
        stages.mark("embed_units")
        current_ids = {chunk.chunk_id for chunk in chunks}
        manifest = {
            "embedding_model": embedder.model_id,
            "files": loaded.files,
            "roots": [Path(path).resolve().name for path in paths],
            "chunk_tokens": chunk_tokens,
            "chunk_overlap": settings.chunking.overlap,
            "skipped_files": loaded.skipped,
            **(manifest_extra or {}),
        }
        contents = VersionContents(
            corpus_hash_of(chunks), chunks, embeddings, vectors, sparse, manifest, units
        )
        version = write_version(index_dir, contents)
        stages.mark("write")
    report = IngestReport(
        version=version,
        chunks=len(chunks),
        files=loaded.files,
        added_chunks=len(current_ids - previous.keys()),
        removed_chunks=len(previous.keys() - current_ids),
        embedded=len(to_embed),
        reused_embeddings=len(chunks) - len(to_embed),
        embedded_units=embedded_units,
        skipped_files=tuple(loaded.skipped),
        seconds=time.perf_counter() - started,
        stage_seconds=stages.seconds,
    )
    logger.info(
        "ingested %d files into version %s: %d chunks, %d embedded, %d reused, %d removed",
        report.files,
        version,
        report.chunks,
        report.embedded,
        report.reused_embeddings,
        report.removed_chunks,
    )
    return report
