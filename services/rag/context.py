"""Pick the chunks that go into the prompt: best first, no duplicates, within a token budget.

The position of a chunk in the selection is its citation number: the first is [1], the second [2], ...
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence

from services.core.types import ContextSelection, ScoredChunk

_WORD = re.compile(r"\w+")
# Word-trigram Jaccard similarity above which two chunks say the same thing (overlapping windows, copied
# paragraphs across pages); sending both only spends context budget.
NEAR_DUPLICATE_JACCARD = 0.85


def _shingles(text: str) -> frozenset[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    if len(words) < 3:
        return frozenset({tuple(words)})
    return frozenset(tuple(words[i : i + 3]) for i in range(len(words) - 2))


def _jaccard(a: frozenset[tuple[str, ...]], b: frozenset[tuple[str, ...]]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def select_context_within_budget(
    chunks: Sequence[ScoredChunk],
    budget_tokens: int,
    *,
    count_tokens: Callable[[str], int] | None = None,
    near_duplicate_jaccard: float = NEAR_DUPLICATE_JACCARD,
) -> ContextSelection:
    """Keep chunks in the given (ranked) order, skip duplicates, stop before the budget is exceeded.

    Duplicates are the same chunk id or text whose word-trigram Jaccard similarity with an already kept
    chunk is >= `near_duplicate_jaccard`. Tokens are counted with `count_tokens` (pass the generator's
    tokenizer for exact prompt sizes) or, by default, the chunk's `token_count` from ingestion. Selection
    stops at the first chunk that does not fit, so citations keep the ranking's order.
    """
    if budget_tokens <= 0:
        raise ValueError(f"budget_tokens must be > 0, got {budget_tokens}")
    if not 0.0 < near_duplicate_jaccard <= 1.0:
        raise ValueError(f"near_duplicate_jaccard must be in (0, 1], got {near_duplicate_jaccard}")
    started = time.perf_counter()
    kept: list[ScoredChunk] = []
    kept_ids: set[str] = set()
    kept_shingles: list[frozenset[tuple[str, ...]]] = []
    used = 0
    for scored in chunks:
        chunk = scored.chunk
        if chunk.chunk_id in kept_ids:
            continue
        shingles = _shingles(chunk.text)
        if any(_jaccard(shingles, other) >= near_duplicate_jaccard for other in kept_shingles):
            continue
        tokens = count_tokens(chunk.text) if count_tokens is not None else chunk.token_count
        if used + tokens > budget_tokens:
            break
        kept.append(scored)
        kept_ids.add(chunk.chunk_id)
        kept_shingles.append(shingles)
        used += tokens
    return ContextSelection(chunks=kept, token_count=used, select_ms=(time.perf_counter() - started) * 1000.0)


def render_numbered_context(selection: ContextSelection | Sequence[ScoredChunk]) -> str:
    """The selected chunks as "[n] source > headings\\ntext" blocks, numbered from 1 for citations."""
    chunks = selection.chunks if isinstance(selection, ContextSelection) else selection
    blocks = []
    for number, scored in enumerate(chunks, start=1):
        chunk = scored.chunk
        where = " > ".join((chunk.source, *chunk.heading_path[1:])) if chunk.heading_path else chunk.source
        blocks.append(f"[{number}] {where}\n{chunk.text}")
    return "\n\n".join(blocks)
