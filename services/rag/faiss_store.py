"""FAISS vector store: exact inner-product search for small corpora, an ANN index above a size threshold.

Exact (IndexFlatIP) search reads every vector per query: perfect recall, at a cost that grows linearly
with the corpus (memory bandwidth bound). Above `exact_search_max` the store builds one of:

- `hnsw` (IndexHNSWFlat): no training and the best recall on real embeddings; the slowest build, and the
  graph adds memory on top of the vectors.
- `ivf` (IVF-Flat): k-means into ~2 sqrt(n) lists, `nprobe` of them scanned per query; a fast build and
  the memory of flat vectors. Recall is set by `nprobe`.
- `ivf_sq8`: the same with 8-bit scalar-quantized codes: a quarter of the memory for a small recall loss,
  the choice at millions of chunks.

benchmarks/results/retrieval.md measures each (latency, recall, build time, memory) side by side.
Search breadth (HNSW efSearch, IVF nprobe) is stored in the index file, so a version is read back with
the parameters it was built with.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np
import numpy.typing as npt

from services.core.errors import IndexCorrupted

logger = logging.getLogger(__name__)

AnnKind = Literal["hnsw", "ivf", "ivf_sq8"]
INDEX_FILE = "vectors.faiss"
# HNSW parameters: M=32 links per node and efSearch=64 give ~0.98+ recall@10 on MiniLM-sized vectors;
# efConstruction=80 keeps the build affordable on a few cores.
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 64
IVF_NPROBE = 16
# k-means wants >= 39 training points per list (FAISS warns below); more only slows the build, which is
# k-means' O(points x lists x dimensions) per iteration.
IVF_TRAIN_POINTS_PER_LIST = 40


def ivf_list_count(expected_count: int) -> int:
    """~2 sqrt(n) lists, at most one per 40 vectors and 65,536 in all.

    FAISS's guideline is 4-16 sqrt(n); half of its low end keeps k-means at 1M vectors to seconds on two
    cores, and `nprobe` buys the recall back (a list is scanned in microseconds).
    """
    count = max(expected_count, 1)
    return max(1, min(65_536, int(2 * math.sqrt(count)), count // IVF_TRAIN_POINTS_PER_LIST))


class FaissVectorStore:
    def __init__(self, index: Any) -> None:
        self._index = index

    @classmethod
    def create(
        cls,
        dimensions: int,
        *,
        expected_count: int,
        exact_search_max: int,
        ann: AnnKind = "hnsw",
        hnsw_m: int = HNSW_M,
        hnsw_ef_construction: int = HNSW_EF_CONSTRUCTION,
        hnsw_ef_search: int = HNSW_EF_SEARCH,
        ivf_nprobe: int = IVF_NPROBE,
    ) -> FaissVectorStore:
        """An empty store: flat when `expected_count <= exact_search_max`, else the `ann` index."""
        if dimensions <= 0:
            raise ValueError(f"dimensions must be > 0, got {dimensions}")
        if hnsw_m < 2 or hnsw_ef_construction < 1 or hnsw_ef_search < 1:
            raise ValueError(
                f"bad HNSW m={hnsw_m}, ef_construction={hnsw_ef_construction} or ef_search={hnsw_ef_search}"
            )
        if ivf_nprobe < 1:
            raise ValueError(f"ivf_nprobe must be >= 1, got {ivf_nprobe}")
        if expected_count <= exact_search_max:
            return cls(faiss.IndexFlatIP(dimensions))
        if ann == "hnsw":
            index = faiss.IndexHNSWFlat(dimensions, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = hnsw_ef_construction
            index.hnsw.efSearch = hnsw_ef_search
            return cls(index)
        if ann not in ("ivf", "ivf_sq8"):
            raise ValueError(f"ann must be 'hnsw', 'ivf' or 'ivf_sq8', got {ann!r}")
        lists = ivf_list_count(expected_count)
        codes = "Flat" if ann == "ivf" else "SQ8"
        ivf_index = faiss.index_factory(dimensions, f"IVF{lists},{codes}", faiss.METRIC_INNER_PRODUCT)
        faiss.extract_index_ivf(ivf_index).nprobe = min(ivf_nprobe, lists)
        return cls(ivf_index)

    @classmethod
    def load(cls, directory: Path, *, expected_count: int | None = None) -> FaissVectorStore:
        path = directory / INDEX_FILE
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise IndexCorrupted(f"cannot read FAISS index {path}: {exc}") from exc
        if expected_count is not None and index.ntotal != expected_count:
            raise IndexCorrupted(
                f"FAISS index {path} holds {index.ntotal} vectors, manifest says {expected_count}"
            )
        return cls(index)

    @property
    def kind(self) -> str:
        if isinstance(self._index, faiss.IndexHNSWFlat):
            return "hnsw"
        ivf = faiss.try_extract_index_ivf(self._index)
        if ivf is not None:
            return (
                "ivf_sq8" if isinstance(faiss.downcast_index(ivf), faiss.IndexIVFScalarQuantizer) else "ivf"
            )
        return "flat"

    @property
    def dimensions(self) -> int:
        return int(self._index.d)

    def count(self) -> int:
        return int(self._index.ntotal)

    def add(self, vectors: npt.NDArray[np.float32]) -> None:
        if vectors.ndim != 2 or vectors.shape[1] != self.dimensions:
            raise ValueError(f"vectors must have shape (n, {self.dimensions}), got {vectors.shape}")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if not self._index.is_trained:
            self._train(vectors)
        self._index.add(vectors)

    def search(self, query: npt.NDArray[np.float32], k: int) -> list[tuple[int, float]]:
        if k <= 0:
            raise ValueError(f"k must be > 0, got {k}")
        k = min(k, self.count())
        if k == 0:
            return []
        scores, rows = self._index.search(np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1), k)
        return [(int(row), float(score)) for row, score in zip(rows[0], scores[0], strict=True) if row >= 0]

    def _train(self, vectors: npt.NDArray[np.float32]) -> None:
        """IVF k-means on (a seeded sample of) the first vectors added: the whole corpus at ingest."""
        ivf = faiss.extract_index_ivf(self._index)
        wanted = ivf.nlist * IVF_TRAIN_POINTS_PER_LIST
        if len(vectors) < ivf.nlist:
            raise ValueError(f"IVF with {ivf.nlist} lists needs >= {ivf.nlist} vectors, got {len(vectors)}")
        sample = vectors
        if len(vectors) > wanted:
            rows = np.random.default_rng(0).choice(len(vectors), wanted, replace=False)
            sample = vectors[np.sort(rows)]
        self._index.train(sample)
        logger.info("trained IVF (%d lists) on %d vectors", ivf.nlist, len(sample))

    def save(self, directory: Path) -> list[Path]:
        path = directory / INDEX_FILE
        faiss.write_index(self._index, str(path))
        return [path]
