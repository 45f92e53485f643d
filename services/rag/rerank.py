"""Rerankers, chosen by RagSettings.rerank.reranker: "none", "mmr", or a CrossEncoder id or folder.

A reranker reorders the fused candidates and keeps `top_k`. It returns positions into the candidate list,
so the caller keeps each chunk's meaningful score (its cosine) whatever the reranker's own scale is.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from services.core.errors import ConfigError, NotReady
from services.core.packaged import resolve_encoder

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Candidates:
    """The fused candidates of one query: their texts and embeddings, and the query's."""

    query: str
    query_vector: npt.NDArray[np.float32]
    texts: Sequence[str]
    vectors: npt.NDArray[np.float32]


class Reranker(Protocol):
    @property
    def name(self) -> str: ...

    def warm_up(self) -> None: ...

    def rerank(self, candidates: Candidates, top_k: int) -> list[int]:
        """Positions into `candidates.texts` (and the rows of `.vectors`), best first, at most `top_k`."""
        ...


class NoReranker:
    name = "none"

    def warm_up(self) -> None:
        return None

    def rerank(self, candidates: Candidates, top_k: int) -> list[int]:
        return list(range(min(top_k, len(candidates.texts))))


class MmrReranker:
    """Maximal marginal relevance (Carbonell & Goldstein, 1998) over the chunk embeddings.

    Picks, one at a time, the candidate maximising `lambda * cos(query, c) - (1 - lambda) * max cos(c, s)`
    over those already selected: near-duplicate chunks (overlapping windows, copied paragraphs) stop
    crowding out other relevant sections.
    """

    name = "mmr"

    def __init__(self, lambda_: float = 0.7) -> None:
        if not 0.0 <= lambda_ <= 1.0:
            raise ValueError(f"lambda_ must be in [0, 1], got {lambda_}")
        self._lambda = lambda_

    def warm_up(self) -> None:
        return None

    def rerank(self, candidates: Candidates, top_k: int) -> list[int]:
        count = min(top_k, len(candidates.texts))
        if count == 0:
            return []
        vectors = candidates.vectors
        relevance = vectors @ candidates.query_vector
        similarity = vectors @ vectors.T
        selected: list[int] = []
        remaining = list(range(len(candidates.texts)))
        while len(selected) < count:
            if selected:
                redundancy = similarity[np.ix_(remaining, selected)].max(axis=1)
            else:
                redundancy = np.zeros(len(remaining), dtype=np.float32)
            marginal = self._lambda * relevance[remaining] - (1.0 - self._lambda) * redundancy
            best = remaining[int(np.argmax(marginal))]
            selected.append(best)
            remaining.remove(best)
        return selected


class CrossEncoderReranker:
    """A sentence-transformers CrossEncoder (a folder or a hub id) scoring (query, chunk) pairs."""

    def __init__(self, model: str, *, batch_size: int = 32) -> None:
        if not model:
            raise ValueError("model must be a CrossEncoder folder or hub id, got an empty string")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        self._model_name = model
        self._batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._model_name

    def warm_up(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            from sentence_transformers import CrossEncoder

            path = resolve_encoder(self._model_name)
            try:
                self._model = CrossEncoder(path, device="cpu", num_labels=1)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot load CrossEncoder {self._model_name!r}: {exc}") from exc
            logger.info("cross-encoder reranker %s loaded", self._model_name)

    def rerank(self, candidates: Candidates, top_k: int) -> list[int]:
        if self._model is None:
            raise NotReady(f"reranker {self._model_name!r} is not loaded: call warm_up() first")
        if not candidates.texts:
            return []
        pairs = [(candidates.query, text) for text in candidates.texts]
        scores = self._model.predict(pairs, batch_size=self._batch_size, show_progress_bar=False)
        order = np.argsort(-np.asarray(scores, dtype=np.float64).reshape(-1), kind="stable")
        return [int(position) for position in order[:top_k]]


def build_reranker(name: str) -> Reranker:
    """ "none", "mmr", or anything else as a CrossEncoder id or folder."""
    if name in ("", "none"):
        return NoReranker()
    if name == "mmr":
        return MmrReranker()
    return CrossEncoderReranker(name)
