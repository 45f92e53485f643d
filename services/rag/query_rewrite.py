"""Query rewriting by pseudo-relevance feedback (RM3-style) from the top chunks' heading and path terms.

A question worded unlike its page ("how many reviewers before I merge") often still ranks a chunk of the
right topic near the top; the headings and file paths of those chunks name the topic in the page's own
words ("pull requests", "code review"). Those terms, weighted by how many top chunks share them and how
high they rank, are added to the query for a second sparse search. Only headings and paths are used, not
chunk bodies: they are short, topical, and cost microseconds to read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from services.core.types import Chunk
from services.rag.chunking import HEADING_SEPARATOR
from services.rag.path_field import path_words
from services.rag.sparse import STOPWORDS_EN, Bm25Tokenizer

_WORD = re.compile(r"(?u)\b[^\W\d_]{3,}\b")


def feedback_text(chunk: Chunk) -> str:
    """The topical words of a chunk: its heading chain (or title) and its file path."""
    heading = HEADING_SEPARATOR.join(chunk.heading_path) if chunk.heading_path else chunk.title
    return f"{heading} {path_words(chunk.source)}"


def expansion_terms(
    query: str, feedback: Sequence[Chunk], *, terms: int, tokenizer: Bm25Tokenizer
) -> list[str]:
    """Up to `terms` words from the feedback chunks, best first, none already in the query.

    A word's weight sums, over the feedback chunks holding it, its share of that chunk's words times
    1 / rank (RM3's relevance model with rank in place of the query likelihood, which fusion does not give).
    """
    if terms <= 0:
        raise ValueError(f"terms must be > 0, got {terms}")
    in_query = set(tokenizer(query))
    # Keyed by stem, so "request" and "requests" count as one term; the first spelling seen is added.
    weights: dict[str, float] = {}
    spelling: dict[str, str] = {}
    for rank, chunk in enumerate(feedback, start=1):
        words = [w for w in _WORD.findall(feedback_text(chunk).lower()) if w not in STOPWORDS_EN]
        stems = [stem for word in words for stem in tokenizer(word)[:1]]
        for word, stem in zip(words, stems, strict=True):
            spelling.setdefault(stem, word)
        for stem in dict.fromkeys(stems):
            if stem not in in_query:
                weights[stem] = weights.get(stem, 0.0) + stems.count(stem) / len(stems) / rank
    # Equal weights keep first-seen order (higher-ranked chunk first), so a rewrite repeats run to run.
    return [spelling[stem] for stem in sorted(weights, key=lambda stem: -weights[stem])[:terms]]


def expand_query(query: str, terms: Sequence[str]) -> str:
    return f"{query} {' '.join(terms)}" if terms else query
