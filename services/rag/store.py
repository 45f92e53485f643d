"""The vector store seam. FAISS is the default; Qdrant (services/rag/qdrant_store.py) is the scale-out option.

Vectors are addressed by their row: the position of the chunk in the index version's chunk list, so the
store never needs to know chunk ids and rows map straight back to chunks.

`create_vector_store` and `load_vector_store` are the only places that pick a concrete store: ingestion and
evaluation create through the first (from RagSettings.vector_store), the index loader reads through the
second (from the manifest's index_kind, so a version is read with the store that wrote it).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from services.core.settings import RagSettings
from services.rag.faiss_store import FaissVectorStore

QDRANT_KIND = "qdrant"


class VectorStore(Protocol):
    @property
    def kind(self) -> str:
        """A short name for the manifest: "flat", "hnsw", "ivf", "ivf_sq8", "qdrant"."""
        ...

    @property
    def dimensions(self) -> int: ...

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


def create_vector_store(settings: RagSettings, dimensions: int, *, expected_count: int) -> VectorStore:
    """An empty store of the kind settings.vector_store names."""
    if settings.vector_store == QDRANT_KIND:
        # Imported here: qdrant-client is only needed by deployments that choose it.
        from services.rag.qdrant_store import QdrantVectorStore

        return QdrantVectorStore.create(
            dimensions,
            url=settings.qdrant.url,
            shard_number=settings.qdrant.shards,
            replication_factor=settings.qdrant.replication_factor,
        )
    return FaissVectorStore.create(
        dimensions,
        expected_count=expected_count,
        exact_search_max=settings.faiss.exact_search_max_chunks,
        ann=settings.faiss.ann_index,
        hnsw_ef_search=settings.faiss.hnsw_ef_search,
        ivf_nprobe=settings.faiss.ivf_nprobe,
    )


def load_vector_store(
    directory: Path, manifest: Mapping[str, Any], *, expected_count: int | None = None
) -> VectorStore:
    """The store saved in an index version folder, of the kind its manifest records."""
    if manifest.get("index_kind") == QDRANT_KIND:
        from services.rag.qdrant_store import QdrantVectorStore

        return QdrantVectorStore.load(directory, expected_count=expected_count)
    return FaissVectorStore.load(directory, expected_count=expected_count)


def release_vector_store(directory: Path, manifest: Mapping[str, Any]) -> None:
    """Free what a pruned version holds outside its folder (a remote Qdrant collection); else nothing."""
    if manifest.get("index_kind") == QDRANT_KIND:
        from services.rag.qdrant_store import drop_saved_collection

        drop_saved_collection(directory)
