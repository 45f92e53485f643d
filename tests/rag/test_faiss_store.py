"""The FAISS store: flat below the threshold, HNSW, IVF or IVF-SQ8 above it, checked against exact search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from services.core.errors import IndexCorrupted
from services.core.settings import FaissSettings, RagSettings
from services.rag.faiss_store import FaissVectorStore, ivf_list_count
from services.rag.store import create_vector_store, load_vector_store

pytestmark = pytest.mark.unit

DIMENSIONS = 32


def clustered_unit_vectors(count: int, seed: int = 0) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, DIMENSIONS)).astype(np.float32)
    vectors = centres[rng.integers(0, 40, count)] + 0.3 * rng.standard_normal((count, DIMENSIONS)).astype(
        np.float32
    )
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def recall_at_10(store: FaissVectorStore, vectors: npt.NDArray[np.float32], queries: int = 40) -> float:
    hits = 0
    for row in range(queries):
        query = vectors[row * 7]
        exact = set(np.argsort(-(vectors @ query))[:10].tolist())
        hits += len(exact & {r for r, _ in store.search(query, 10)})
    return hits / (10 * queries)


def test_small_corpora_get_exact_search() -> None:
    store = FaissVectorStore.create(DIMENSIONS, expected_count=100, exact_search_max=100)
    vectors = clustered_unit_vectors(100)
    store.add(vectors)
    assert store.kind == "flat"
    assert recall_at_10(store, vectors, queries=10) == 1.0
    row, score = store.search(vectors[3], 1)[0]
    assert row == 3 and score == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(("ann", "min_recall"), [("hnsw", 0.95), ("ivf", 0.9), ("ivf_sq8", 0.85)])
def test_ann_indexes_above_the_threshold_find_the_exact_neighbours(ann: str, min_recall: float) -> None:
    vectors = clustered_unit_vectors(4000)
    store = FaissVectorStore.create(
        DIMENSIONS,
        expected_count=len(vectors),
        exact_search_max=1000,
        ann=ann,
        ivf_nprobe=8,  # type: ignore[arg-type]
    )
    store.add(vectors)
    assert store.kind == ann
    assert store.count() == len(vectors)
    assert recall_at_10(store, vectors) >= min_recall


@pytest.mark.parametrize("ann", ["hnsw", "ivf", "ivf_sq8"])
def test_saved_index_loads_with_its_kind_and_search_breadth(ann: str, tmp_path: Path) -> None:
    vectors = clustered_unit_vectors(2000, seed=1)
    settings = RagSettings(
        faiss=FaissSettings(exact_search_max_chunks=500, ann_index=ann, ivf_nprobe=5, hnsw_ef_search=40)  # type: ignore[arg-type]
    )
    store = create_vector_store(settings, DIMENSIONS, expected_count=len(vectors))
    store.add(vectors)
    store.save(tmp_path)
    loaded = load_vector_store(tmp_path, {"index_kind": ann}, expected_count=len(vectors))
    assert loaded.kind == ann
    assert [r for r, _ in loaded.search(vectors[11], 5)] == [r for r, _ in store.search(vectors[11], 5)]
    import faiss

    raw = faiss.read_index(str(tmp_path / "vectors.faiss"))
    if ann == "hnsw":
        assert raw.hnsw.efSearch == 40
    else:
        assert faiss.extract_index_ivf(raw).nprobe == 5


def test_ivf_list_count_follows_the_square_root_rule() -> None:
    assert ivf_list_count(1) == 1
    assert ivf_list_count(4000) == 100  # one list per 40 vectors: k-means needs them
    assert ivf_list_count(1_000_000) == 2000
    assert ivf_list_count(10**12) == 65_536


def test_ivf_needs_at_least_one_vector_per_list() -> None:
    store = FaissVectorStore.create(DIMENSIONS, expected_count=10_000, exact_search_max=10, ann="ivf")
    with pytest.raises(ValueError, match="needs >= 200 vectors"):
        store.add(clustered_unit_vectors(50))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ann": "lsh"}, "ann must be"),
        ({"ivf_nprobe": 0}, "ivf_nprobe"),
        ({"hnsw_ef_search": 0}, "ef_search"),
    ],
)
def test_bad_parameters_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FaissVectorStore.create(DIMENSIONS, expected_count=10_000, exact_search_max=10, **kwargs)  # type: ignore[arg-type]


def test_a_corrupted_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "vectors.faiss").write_bytes(b"not a faiss index")
    with pytest.raises(IndexCorrupted, match="cannot read FAISS index"):
        FaissVectorStore.load(tmp_path)


def test_a_count_mismatch_is_refused(tmp_path: Path) -> None:
    store = FaissVectorStore.create(DIMENSIONS, expected_count=10, exact_search_max=100)
    store.add(clustered_unit_vectors(10))
    store.save(tmp_path)
    with pytest.raises(IndexCorrupted, match="holds 10 vectors, manifest says 11"):
        FaissVectorStore.load(tmp_path, expected_count=11)
