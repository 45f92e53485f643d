"""The semantic index's search: cached queries of one context, nearest first, that may answer a new one."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt

from services.cache.entry import IndexedQuery
from services.cache.guard import QueryMarkers, markers, mismatch


def vector_tuple(vector: npt.NDArray[np.float32]) -> tuple[float, ...]:
    """An embedding as stored: rounded to 6 decimals (cosines move by < 1e-5), so JSON stays short."""
    return tuple(round(float(x), 6) for x in vector)


def matches(
    query: str,
    vector: npt.NDArray[np.float32],
    candidates: Sequence[IndexedQuery],
    threshold: float,
) -> Iterator[tuple[IndexedQuery, float]]:
    """Candidates with cosine >= threshold and the same numbers, negations, entities and quantities as
    `query`, most similar first. Vectors are L2-normalised (services.core.protocols.Embedder)."""
    if not candidates:
        return
    matrix = np.asarray([c.vector for c in candidates], dtype=np.float32)
    if matrix.shape[1] != vector.shape[0]:
        return  # indexed with another embedder: nothing comparable
    similarities = matrix @ vector.astype(np.float32)
    query_markers: QueryMarkers | None = None
    for i in np.argsort(-similarities, kind="stable"):
        similarity = float(similarities[i])
        if similarity < threshold:
            return
        query_markers = query_markers or markers(query)
        if mismatch(query_markers, markers(candidates[i].query)) is None:
            yield candidates[i], similarity
