"""The vector store seam. FAISS is the default; a Qdrant store can implement the same five methods.

Vectors are addressed by their row: the position of the chunk in the index version's chunk list, so the
store never needs to know chunk ids and rows map straight back to chunks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt


class VectorStore(Protocol):
    @property
    def kind(self) -> str:
        """A short name for the manifest: "flat", "hnsw", "qdrant"."""
        ...

    def count(self) -> int: ...

    def add(self, vectors: npt.NDArray[np.float32]) -> None:
        """Append L2-normalised vectors; they take rows count() .. count() + len(vectors) - 1."""
        ...

    def search(self, query: npt.NDArray[np.float32], k: int) -> list[tuple[int, float]]:
        """Up to `k` (row, inner product) pairs, best first; for unit vectors that is the cosine."""
        ...

    def save(self, directory: Path) -> list[Path]:
        """Write the store into `directory`; return the files written (for the manifest and fsync)."""
        ...
