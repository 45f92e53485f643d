"""BM25 keyword search with bm25s, persisted next to the vectors.

Choices, and why:
- Lucene's BM25 variant (k1=1.2, b=0.75): the scoring Elasticsearch uses, which the BEIR BM25 baselines
  report; it keeps IDF non-negative, so a very common term cannot subtract from a score.
- Tokens: lowercase runs of 2+ word characters (bm25s' default pattern), so "PTO", "pto" and "PTO." match.
- English stopwords (Lucene's 33-word list, shipped with bm25s) are dropped: they carry no topic and only
  add long posting lists; the list is short so words like "not" or "before" that matter in policy
  questions are kept.
- Snowball English stemming (PyStemmer) when installed: "reimbursed" finds "reimbursement" and "policies"
  finds "policy". Without PyStemmer, tokens are used unstemmed (logged once); the manifest records which.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import numpy.typing as npt

from services.core.errors import IndexCorrupted

logger = logging.getLogger(__name__)

SPARSE_DIR = "bm25"
_SETTINGS_FILE = "tokenizer.json"
_TOKEN = re.compile(r"(?u)\b\w\w+\b")
STOPWORDS_EN = frozenset(bm25s.stopwords.STOPWORDS_EN)
DEFAULT_K1 = 1.2
DEFAULT_B = 0.75


@lru_cache(maxsize=4)
def _stemmer(language: str) -> Any:
    try:
        import Stemmer
    except ImportError:
        logger.warning("PyStemmer is not installed: BM25 runs without stemming")
        return None
    return Stemmer.Stemmer(language)


class Bm25Tokenizer:
    def __init__(self, *, stem: bool = True, stopwords: bool = True) -> None:
        self._stemmer = _stemmer("english") if stem else None
        self._stopwords = STOPWORDS_EN if stopwords else frozenset()

    @property
    def stemmed(self) -> bool:
        return self._stemmer is not None

    @property
    def settings(self) -> dict[str, Any]:
        return {"stem": self.stemmed, "stopwords": bool(self._stopwords), "pattern": _TOKEN.pattern}

    def __call__(self, text: str) -> list[str]:
        words = [word for word in _TOKEN.findall(text.lower()) if word not in self._stopwords]
        if self._stemmer is not None:
            words = list(self._stemmer.stemWords(words))
        return words


class Bm25Index:
    def __init__(self, retriever: Any, tokenizer: Bm25Tokenizer, count: int) -> None:
        self._retriever = retriever
        self._tokenizer = tokenizer
        self._count = count

    @classmethod
    def build(
        cls,
        texts: Sequence[str],
        *,
        k1: float = DEFAULT_K1,
        b: float = DEFAULT_B,
        stem: bool = True,
        stopwords: bool = True,
    ) -> Bm25Index:
        tokenizer = Bm25Tokenizer(stem=stem, stopwords=stopwords)
        retriever = bm25s.BM25(method="lucene", k1=k1, b=b)
        # An empty token list would give a document bm25s cannot index; a placeholder keeps rows aligned.
        corpus = [tokenizer(text) or ["\x00empty"] for text in texts]
        retriever.index(corpus, show_progress=False)
        return cls(retriever, tokenizer, len(texts))

    @classmethod
    def load(cls, directory: Path, *, expected_count: int | None = None) -> Bm25Index:
        path = directory / SPARSE_DIR
        try:
            settings = json.loads((path / _SETTINGS_FILE).read_text(encoding="utf-8"))
            retriever = bm25s.BM25.load(str(path), mmap=False)
            count = int(settings["count"])
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise IndexCorrupted(f"cannot read BM25 index {path}: {exc}") from exc
        if expected_count is not None and count != expected_count:
            raise IndexCorrupted(f"BM25 index {path} holds {count} documents, manifest says {expected_count}")
        tokenizer = Bm25Tokenizer(stem=bool(settings["stem"]), stopwords=bool(settings["stopwords"]))
        return cls(retriever, tokenizer, count)

    def count(self) -> int:
        return self._count

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        """Up to `k` (row, BM25 score) pairs with a positive score, best first (ties: lower row first).

        Scores come from bm25s' precomputed per-(term, document) BM25 matrix, summed here over the
        documents that hold a query term only: bm25s' own retrieve() allocates and selects over a score
        for every document, which costs milliseconds per query at a million chunks even when the query's
        terms are rare. The scores are bm25s' (a query term that repeats counts once per repeat).
        """
        if k <= 0:
            raise ValueError(f"k must be > 0, got {k}")
        vocabulary = self._retriever.vocab_dict
        term_ids = [vocabulary[token] for token in self._tokenizer(query) if token in vocabulary]
        if not term_ids or self._count == 0:
            return []
        matrix = self._retriever.scores
        starts, ends = matrix["indptr"][term_ids], matrix["indptr"][np.asarray(term_ids) + 1]
        postings = int((ends - starts).sum())
        if postings == 0:
            return []
        indices, data = matrix["indices"], matrix["data"]
        if postings * 8 < self._count:
            # Few postings: sum per distinct document (sorting P postings beats touching N documents).
            rows = np.concatenate([indices[a:b] for a, b in zip(starts, ends, strict=True)])
            weights = np.concatenate([data[a:b] for a, b in zip(starts, ends, strict=True)])
            documents, slot = np.unique(rows, return_inverse=True)
            return _top_positive(documents, np.bincount(slot, weights=weights), k)
        totals = np.zeros(self._count, dtype=np.float32)
        for a, b in zip(starts, ends, strict=True):
            # A term's postings name each document once, so a fancy-indexed add is exact.
            totals[indices[a:b]] += data[a:b]
        return _top_positive(np.arange(self._count), totals, k)

    def save(self, directory: Path) -> list[Path]:
        path = directory / SPARSE_DIR
        path.mkdir(parents=True, exist_ok=True)
        self._retriever.save(str(path))
        settings = {**self._tokenizer.settings, "count": self._count}
        (path / _SETTINGS_FILE).write_text(json.dumps(settings), encoding="utf-8")
        return sorted(p for p in path.iterdir() if p.is_file())


def _top_positive(rows: npt.NDArray[Any], scores: npt.NDArray[Any], k: int) -> list[tuple[int, float]]:
    """The k best positive (row, score) pairs, best first; equal scores in row order, so runs repeat."""
    if len(scores) > k:
        # Everything scoring at least the k-th best, so ties at the cut are settled by row, not by chance.
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        keep = np.flatnonzero(scores >= max(kth, np.finfo(np.float32).tiny))
    else:
        keep = np.flatnonzero(scores > 0)
    rows, scores = rows[keep], scores[keep]
    order = np.lexsort((rows, -scores))[:k]
    return [(int(rows[i]), float(scores[i])) for i in order]
