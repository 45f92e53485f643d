"""BM25: our scoring over the postings of the query's terms equals bm25s' own retrieve()."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.core.errors import IndexCorrupted
from services.rag.sparse import Bm25Index

pytestmark = pytest.mark.unit


def zipf_corpus(count: int, seed: int = 3) -> list[str]:
    rng = np.random.default_rng(seed)
    ranks = np.minimum(rng.zipf(1.4, (count, 20)), 3000)
    return [" ".join(f"term{r}" for r in row) for row in ranks]


def reference_search(index: Bm25Index, query: str, k: int) -> dict[int, float]:
    """bm25s' retrieve(), the implementation ours replaced, as {row: score} of positive scores."""
    retriever = index._retriever
    tokens = [t for t in index._tokenizer(query) if t in retriever.vocab_dict]
    rows, scores = retriever.retrieve([tokens], k=k, show_progress=False, n_threads=1, return_as="tuple")
    return {int(r): float(s) for r, s in zip(rows[0], scores[0], strict=True) if s > 0}


@pytest.mark.parametrize(
    "query",
    [
        "term1 term2",  # common terms: postings outnumber documents / 8, dense accumulation
        "term900 term1500 term2999",  # rare terms: per-document sums over few postings
        "term3 term3 term47",  # a repeated term counts twice, as in bm25s
        "term1 term2900",
    ],
)
def test_scores_and_ranking_equal_bm25s(query: str) -> None:
    index = Bm25Index.build(zipf_corpus(3000))
    ours = index.search(query, 30)
    reference = reference_search(index, query, 3000)
    assert ours, "the query matches documents"
    assert [s for _, s in ours] == sorted((s for _, s in ours), reverse=True)
    for row, score in ours:
        assert reference[row] == pytest.approx(score, rel=1e-5)
    assert len(ours) == min(30, len(reference))
    # The k-th best score bounds everything left out.
    assert max((s for r, s in reference.items() if r not in dict(ours)), default=0.0) <= ours[-1][1] + 1e-5


def test_ties_at_the_cut_are_settled_by_row() -> None:
    index = Bm25Index.build(["alpha beta", "gamma", "alpha beta", "alpha beta", "delta"])
    assert [row for row, _ in index.search("alpha", 2)] == [0, 2]


def test_unknown_or_stopword_only_queries_find_nothing() -> None:
    index = Bm25Index.build(["the vacation policy", "travel receipts"])
    assert index.search("zebra", 5) == []
    assert index.search("the of and", 5) == []
    with pytest.raises(ValueError, match="k must be > 0"):
        index.search("vacation", 0)


def test_stemming_matches_word_forms() -> None:
    index = Bm25Index.build(["Receipts are reimbursed within 30 days", "The office has plants"])
    assert index.search("reimbursement receipt", 5)[0][0] == 0


def test_saved_index_searches_the_same(tmp_path: Path) -> None:
    index = Bm25Index.build(zipf_corpus(500))
    index.save(tmp_path)
    loaded = Bm25Index.load(tmp_path, expected_count=500)
    assert loaded.search("term5 term70", 10) == index.search("term5 term70", 10)
    with pytest.raises(IndexCorrupted, match="holds 500 documents, manifest says 501"):
        Bm25Index.load(tmp_path, expected_count=501)
