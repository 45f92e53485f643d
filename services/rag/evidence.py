"""Evidence selection: the sentences of the retrieved chunks that answer the question, under a token budget.

A small generator answers better from three relevant sentences than from four whole chunks, and reads
them faster. Each unit (sentence, list item, table row; see sentences.py) of the candidate chunks is
scored by
- its embedding's cosine with the question (the embedder the index uses, heading prepended for context),
- lexical coverage: the idf-weighted share of the question's stemmed terms it contains,
- a prior from its chunk's retrieval score,
- the answer type: when the question asks for a quantity (how much, how long, when...), units that state
  one are preferred,
then picked greedily with MMR (a unit too similar to one already picked is a repeat) until the budget is
spent. A picked unit that cannot stand alone (a question, a fragment of a few words) brings its
neighbour. Each unit keeps the chunk it came from, so citations still point at chunks.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from services.core.protocols import Embedder
from services.core.types import Chunk, ScoredChunk
from services.rag.sentences import TextUnit, split_units
from services.rag.sparse import Bm25Tokenizer

# Questions whose answer is a quantity: a unit that states one is more likely to be the answer.
_QUANTITY_QUESTION = re.compile(
    r"\b(how (much|many|long|far|often|soon|early|late|old|big|large|high|low|fast|quickly)|"
    r"what (percent|percentage|share|amount|date|day|time|age|limit|rate|deadline)|when|by when|"
    r"what'?s the (limit|deadline|cap|maximum|minimum|rate|amount))\b",
    re.IGNORECASE,
)
_HAS_QUANTITY = re.compile(
    r"\d|\b(one|two|three|four|five|six|seven|eight|nine|ten|twelve|twenty|thirty|hundred|half|"
    r"monday|tuesday|wednesday|thursday|friday|daily|weekly|monthly|quarterly|annually|yearly)\b",
    re.IGNORECASE,
)
# A unit this close (cosine) to one already picked says the same thing: skipped whatever its relevance.
DUPLICATE_COSINE = 0.95
# A unit with fewer words than this is a fragment ("No.", "Yes, with approval."): it brings the unit before.
MIN_STANDALONE_WORDS = 6


@dataclass(frozen=True, slots=True)
class EvidenceWeights:
    """How the unit score is mixed. Defaults were chosen on the dev half of corpus/eval (see the report)."""

    dense: float = 0.6
    lexical: float = 0.4
    chunk_prior: float = 0.1
    answer_type: float = 0.1
    mmr_lambda: float = 0.75

    def __post_init__(self) -> None:
        for name in ("dense", "lexical", "chunk_prior", "answer_type"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 < self.mmr_lambda <= 1.0:
            raise ValueError(f"mmr_lambda must be in (0, 1], got {self.mmr_lambda}")


@dataclass(frozen=True, slots=True)
class EvidenceUnit:
    """One selected piece of evidence. `text` may join a unit with its neighbour (see the module doc)."""

    text: str
    chunk: Chunk
    score: float


@dataclass(frozen=True, slots=True)
class EvidenceSelection:
    units: list[EvidenceUnit]  # best first
    chunks: list[ScoredChunk]  # the chunks the units came from, best unit first: citation order
    token_count: int
    select_ms: float

    def units_of(self, chunk: Chunk) -> list[EvidenceUnit]:
        return [unit for unit in self.units if unit.chunk.chunk_id == chunk.chunk_id]


UnitsWithVectors = tuple[list[TextUnit], npt.NDArray[np.float32]]


class UnitSource(Protocol):
    """Each chunk's units and their (L2-normalised) embeddings, in the order of `chunks`."""

    def units_and_vectors(self, chunks: Sequence[ScoredChunk]) -> list[UnitsWithVectors]: ...


def unit_embedding_text(unit: TextUnit, chunk: Chunk) -> str:
    """What the embedder sees for a unit: its nearest heading (or the chunk's) on top, for context."""
    heading = unit.heading or (chunk.heading_path[-1] if chunk.heading_path else chunk.title)
    return f"{heading}: {unit.text}" if heading and heading not in unit.text else unit.text


def units_for_embedding(chunks: Sequence[Chunk]) -> tuple[list[list[TextUnit]], list[str]]:
    """Every chunk's units, and the embedding texts of all of them in one flat list (chunk order)."""
    units = [split_units(chunk.text) for chunk in chunks]
    texts = [unit_embedding_text(u, chunk) for chunk, per in zip(chunks, units, strict=True) for u in per]
    return units, texts


class UnitVectorCache:
    """Embeddings of each chunk's units, by chunk id, least recently used dropped first (thread-safe).

    Hot chunks are asked about again and again; embedding their units once saves most of the stage.
    """

    def __init__(self, max_chunks: int = 4096) -> None:
        if max_chunks <= 0:
            raise ValueError(f"max_chunks must be > 0, got {max_chunks}")
        self._max = max_chunks
        self._entries: OrderedDict[str, UnitsWithVectors] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, chunk_id: str) -> UnitsWithVectors | None:
        with self._lock:
            entry = self._entries.get(chunk_id)
            if entry is not None:
                self._entries.move_to_end(chunk_id)
            return entry

    def put(self, chunk_id: str, entry: UnitsWithVectors) -> None:
        with self._lock:
            self._entries[chunk_id] = entry
            self._entries.move_to_end(chunk_id)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)


class EmbeddingUnitSource:
    """Embeds units at query time (one batch for all chunks not cached): for indexes without unit vectors."""

    def __init__(self, embedder: Embedder, cache: UnitVectorCache | None = None) -> None:
        self._embedder = embedder
        self._cache = cache

    def units_and_vectors(self, chunks: Sequence[ScoredChunk]) -> list[UnitsWithVectors]:
        cache = self._cache
        found = [cache.get(c.chunk.chunk_id) if cache is not None else None for c in chunks]
        missing = [i for i, entry in enumerate(found) if entry is None]
        if missing:
            units, texts = units_for_embedding([chunks[i].chunk for i in missing])
            vectors = self._embedder.embed_documents(texts)
            offset = 0
            for i, per in zip(missing, units, strict=True):
                entry = (per, vectors[offset : offset + len(per)])
                offset += len(per)
                found[i] = entry
                if cache is not None:
                    cache.put(chunks[i].chunk.chunk_id, entry)
        return [entry for entry in found if entry is not None]


def asks_for_quantity(question: str) -> bool:
    """Whether the question's answer is a number, an amount, a duration or a date."""
    return _QUANTITY_QUESTION.search(question) is not None


def _lexical_coverage(query_terms: list[str], unit_terms: list[set[str]]) -> npt.NDArray[np.float32]:
    """Share of the query's idf mass each unit covers; idf over the candidate units themselves."""
    scores = np.zeros(len(unit_terms), dtype=np.float32)
    terms = set(query_terms)
    if not terms or not unit_terms:
        return scores
    n = len(unit_terms)
    idf = {}
    for term in terms:
        df = sum(term in unit for unit in unit_terms)
        idf[term] = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
    total = sum(idf.values()) or 1.0
    for row, unit in enumerate(unit_terms):
        scores[row] = sum(weight for term, weight in idf.items() if term in unit) / total
    return scores


def select_evidence(
    question: str,
    question_vector: npt.NDArray[np.float32],
    chunks: Sequence[ScoredChunk],
    units: UnitSource,
    *,
    budget_tokens: int,
    count_tokens: Callable[[str], int],
    weights: EvidenceWeights = EvidenceWeights(),
    neighbours: int = 0,
    tokenizer: Bm25Tokenizer | None = None,
) -> EvidenceSelection:
    """Pick the units of `chunks` that best answer `question`, best first, within `budget_tokens`.

    `count_tokens` measures a unit against the budget; `neighbours` adds that many units on each side of
    every picked unit.
    """
    if budget_tokens <= 0:
        raise ValueError(f"budget_tokens must be > 0, got {budget_tokens}")
    if neighbours < 0:
        raise ValueError(f"neighbours must be >= 0, got {neighbours}")
    started = time.perf_counter()
    tokenize = tokenizer or Bm25Tokenizer()
    per_chunk = units.units_and_vectors(chunks)
    rows: list[tuple[int, int]] = []  # (chunk index, unit index)
    for ci, (chunk_units, _) in enumerate(per_chunk):
        rows.extend((ci, ui) for ui in range(len(chunk_units)))
    if not rows:
        return EvidenceSelection([], [], 0, (time.perf_counter() - started) * 1000.0)
    vectors = np.concatenate([vectors for _, vectors in per_chunk]).astype(np.float32, copy=False)
    dense = vectors @ question_vector.astype(np.float32)
    lexical = _lexical_coverage(
        tokenize(question), [set(tokenize(per_chunk[ci][0][ui].text)) for ci, ui in rows]
    )
    prior = np.asarray([chunks[ci].score for ci, _ in rows], dtype=np.float32)
    relevance = weights.dense * dense + weights.lexical * lexical + weights.chunk_prior * prior
    if weights.answer_type and asks_for_quantity(question):
        states = [_HAS_QUANTITY.search(per_chunk[ci][0][ui].text) is not None for ci, ui in rows]
        relevance += weights.answer_type * np.asarray(states, dtype=np.float32)

    taken: set[tuple[int, int]] = set()
    used = 0
    available = np.ones(len(rows), dtype=bool)
    max_similarity = np.full(len(rows), -1.0, dtype=np.float32)
    units_out: list[tuple[int, EvidenceUnit]] = []
    while available.any():
        redundancy = np.where(max_similarity > -1.0, max_similarity, 0.0)
        mmr = weights.mmr_lambda * relevance - (1.0 - weights.mmr_lambda) * redundancy
        mmr[~available] = -np.inf
        best = int(np.argmax(mmr))
        available[best] = False
        if max_similarity[best] >= DUPLICATE_COSINE:
            continue
        ci, ui = rows[best]
        chunk_units = per_chunk[ci][0]
        span = [j for j in _standalone_span(chunk_units, ui, neighbours) if (ci, j) not in taken]
        if not span:
            continue
        text = " ".join(chunk_units[j].text for j in span)
        tokens = count_tokens(text)
        if used + tokens > budget_tokens:
            continue  # a shorter unit further down may still fit
        used += tokens
        taken.update((ci, j) for j in span)
        units_out.append((ci, EvidenceUnit(text=text, chunk=chunks[ci].chunk, score=float(relevance[best]))))
        max_similarity = np.maximum(max_similarity, vectors @ vectors[best])
    order: list[int] = []
    for ci, _ in units_out:
        if ci not in order:
            order.append(ci)
    return EvidenceSelection(
        units=[unit for _, unit in units_out],
        chunks=[chunks[ci] for ci in order],
        token_count=used,
        select_ms=(time.perf_counter() - started) * 1000.0,
    )


def _standalone_span(units: Sequence[TextUnit], index: int, neighbours: int) -> list[int]:
    """The unit at `index` plus what it needs to be read alone, plus `neighbours` on each side."""
    low, high = max(0, index - neighbours), min(len(units) - 1, index + neighbours)
    text = units[index].text
    if text.endswith("?") and index + 1 < len(units):
        high = max(high, index + 1)  # a FAQ question: the answer follows
    if len(text.split()) < MIN_STANDALONE_WORDS and index > 0:
        low = min(low, index - 1)  # a fragment: what it answers comes before
    return list(range(low, high + 1))


__all__ = [
    "EmbeddingUnitSource",
    "EvidenceSelection",
    "EvidenceUnit",
    "EvidenceWeights",
    "UnitSource",
    "UnitVectorCache",
    "UnitsWithVectors",
    "select_evidence",
    "unit_embedding_text",
    "units_for_embedding",
]
