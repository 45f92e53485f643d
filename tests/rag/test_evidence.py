"""Evidence selection with a fake unit source: relevance, MMR, budget, neighbours, citations, answer type."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from services.core.types import Chunk, ScoredChunk
from services.rag.chunking import whitespace_token_spans
from services.rag.evidence import (
    EmbeddingUnitSource,
    EvidenceWeights,
    UnitsWithVectors,
    UnitVectorCache,
    asks_for_quantity,
    select_evidence,
)
from services.rag.sentences import split_units

pytestmark = pytest.mark.unit

DIM = 8


def _axis(i: int, j: int | None = None) -> np.ndarray:
    vector = np.zeros(DIM, dtype=np.float32)
    vector[i] = 1.0
    if j is not None:
        vector[j] = 1.0
    return vector / np.linalg.norm(vector)


class AxisUnits:
    """Each chunk's units get the vectors listed for that chunk id."""

    def __init__(self, vectors: dict[str, list[np.ndarray]]) -> None:
        self.vectors = vectors

    def units_and_vectors(self, chunks: Sequence[ScoredChunk]) -> list[UnitsWithVectors]:
        out = []
        for scored in chunks:
            units = split_units(scored.chunk.text)
            out.append((units, np.stack(self.vectors[scored.chunk.chunk_id][: len(units)])))
        return out


def _chunk(chunk_id: str, text: str, score: float = 0.5) -> ScoredChunk:
    return ScoredChunk(Chunk(chunk_id=chunk_id, source=f"{chunk_id}.md", text=text), score)


def _words(text: str) -> int:
    return len(text.split())


def test_the_most_relevant_unit_comes_first_and_its_chunk_is_cited_first() -> None:
    a = _chunk("a", "Lunch is served at noon in the canteen. Parking is in the basement garage.")
    b = _chunk("b", "The vacation allowance is 25 days per year.")
    units = AxisUnits({"a": [_axis(1), _axis(2)], "b": [_axis(0)]})
    selection = select_evidence(
        "vacation allowance", _axis(0), [a, b], units, budget_tokens=100, count_tokens=_words
    )
    assert selection.units[0].text == "The vacation allowance is 25 days per year."
    assert [c.chunk.chunk_id for c in selection.chunks] == ["b", "a"]
    assert selection.units_of(b.chunk)[0].chunk is b.chunk


def test_the_budget_is_never_exceeded_and_a_shorter_unit_still_fits() -> None:
    long_unit = "Many" + " words" * 30
    chunk = _chunk("a", f"Vacation is long in this place. {long_unit}. A short vacation note follows here.")
    units = AxisUnits({"a": [_axis(0), _axis(0, 1), _axis(0, 2)]})
    selection = select_evidence("vacation", _axis(0), [chunk], units, budget_tokens=14, count_tokens=_words)
    assert selection.token_count <= 14
    assert [u.text for u in selection.units] == [
        "Vacation is long in this place.",
        "A short vacation note follows here.",
    ]


def test_mmr_drops_a_repeat_of_a_picked_unit() -> None:
    chunk = _chunk(
        "a",
        "The vacation allowance is 25 days. The vacation allowance is twenty five days. "
        "Sick leave is counted separately from it.",
    )
    units = AxisUnits({"a": [_axis(0), _axis(0), _axis(0, 3)]})
    selection = select_evidence("vacation", _axis(0), [chunk], units, budget_tokens=100, count_tokens=_words)
    assert [u.text for u in selection.units] == [
        "The vacation allowance is 25 days.",
        "Sick leave is counted separately from it.",
    ]


def test_a_faq_question_brings_its_answer_and_a_fragment_brings_what_precedes_it() -> None:
    chunk = _chunk(
        "a", "Can I buy extra days? Not at the moment. Unrelated sentence about the office plants."
    )
    units = AxisUnits({"a": [_axis(0), _axis(1), _axis(2)]})
    first = select_evidence("buy days", _axis(0), [chunk], units, budget_tokens=50, count_tokens=_words)
    assert first.units[0].text == "Can I buy extra days? Not at the moment."
    second = select_evidence("moment", _axis(1), [chunk], units, budget_tokens=50, count_tokens=_words)
    assert second.units[0].text == "Can I buy extra days? Not at the moment."


def test_a_quantity_question_prefers_the_unit_that_states_one() -> None:
    chunk = _chunk("a", "Managers approve vacation requests in Harbor. Requests need 3 weeks of notice.")
    units = AxisUnits({"a": [_axis(0), _axis(0, 1)]})  # the first is closer to the question
    question = "how long in advance do vacation requests need approving"
    assert asks_for_quantity(question)
    plain = EvidenceWeights(answer_type=0.0)
    typed = EvidenceWeights(answer_type=0.5)
    top = [
        select_evidence(question, _axis(0), [chunk], units, budget_tokens=50, count_tokens=_words, weights=w)
        .units[0]
        .text
        for w in (plain, typed)
    ]
    assert top == ["Managers approve vacation requests in Harbor.", "Requests need 3 weeks of notice."]


def test_bad_arguments_are_named() -> None:
    units = AxisUnits({})
    with pytest.raises(ValueError, match="budget_tokens"):
        select_evidence("q", _axis(0), [], units, budget_tokens=0, count_tokens=_words)
    with pytest.raises(ValueError, match="mmr_lambda"):
        EvidenceWeights(mmr_lambda=0.0)


class CountingEmbedder:
    dimensions = DIM
    model_id = "counting"
    max_seq_length = 512

    def __init__(self) -> None:
        self.calls = 0

    def warm_up(self) -> None:
        pass

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return whitespace_token_spans(text)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        return np.stack([_axis(len(t) % DIM) for t in texts])

    def embed_query(self, text: str) -> np.ndarray:
        return _axis(0)


def test_query_time_unit_vectors_are_cached_by_chunk_id() -> None:
    embedder = CountingEmbedder()
    source = EmbeddingUnitSource(embedder, UnitVectorCache(max_chunks=1))
    a, b = _chunk("a", "One sentence here. Another one."), _chunk("b", "Third sentence.")
    first = source.units_and_vectors([a])
    assert len(first[0][0]) == 2 == first[0][1].shape[0] and embedder.calls == 1
    source.units_and_vectors([a])
    assert embedder.calls == 1  # cached
    source.units_and_vectors([b])  # evicts a (max 1 chunk)
    source.units_and_vectors([a])
    assert embedder.calls == 3
