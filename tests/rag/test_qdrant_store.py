"""The Qdrant vector store: the same answers as FAISS, behind the same ingest/serve path.

Unit tests run qdrant-client's embedded mode (real Qdrant code, in process). The SciFact test compares
retrieval quality with FAISS on the full data set. A cluster test runs when HYBRID_TEST_QDRANT_URL names a
Qdrant server (e.g. `docker run -p 6333:6333 qdrant/qdrant`), and skips otherwise.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

pytest.importorskip("qdrant_client", reason="qdrant-client is not installed (pip install qdrant-client)")

from services.core.errors import IndexCorrupted  # noqa: E402
from services.core.settings import RagSettings  # noqa: E402
from services.rag.evaluation import evaluate_beir  # noqa: E402
from services.rag.faiss_store import FaissVectorStore  # noqa: E402
from services.rag.index_store import VERSIONS_DIR, list_versions, load_current, read_current  # noqa: E402
from services.rag.ingest import ingest  # noqa: E402
from services.rag.qdrant_store import POINTER_FILE, QdrantVectorStore  # noqa: E402
from services.rag.service import RetrievalService  # noqa: E402
from services.rag.store import create_vector_store  # noqa: E402
from tests.rag.conftest import REPO_ROOT, SHARED_DATASETS, HashingEmbedder, rag_settings, write_handbook  # noqa: E402

SCIFACT = SHARED_DATASETS / "beir_scifact"


def unit_vectors(count: int, dimensions: int, seed: int) -> npt.NDArray[np.float32]:
    vectors = np.random.default_rng(seed).standard_normal((count, dimensions)).astype(np.float32)
    normalised: npt.NDArray[np.float32] = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return normalised


@pytest.mark.unit
def test_search_returns_the_same_rows_and_scores_as_faiss_flat() -> None:
    vectors = unit_vectors(500, 32, seed=1)
    qdrant = QdrantVectorStore.create(32)
    faiss_store = FaissVectorStore.create(32, expected_count=500, exact_search_max=1000)
    for store in (qdrant, faiss_store):
        store.add(vectors[:300])
        store.add(vectors[300:])  # rows continue after the first batch
    assert qdrant.count() == 500 and qdrant.kind == "qdrant" and qdrant.dimensions == 32
    for query in unit_vectors(20, 32, seed=2):
        expected = faiss_store.search(query, 10)
        found = qdrant.search(query, 10)
        assert [row for row, _ in found] == [row for row, _ in expected]
        np.testing.assert_allclose([s for _, s in found], [s for _, s in expected], atol=1e-5)
    assert qdrant.search(vectors[7], 1)[0][0] == 7
    assert len(qdrant.search(vectors[0], 10_000)) == 500


@pytest.mark.unit
def test_constructor_and_inputs_are_validated() -> None:
    with pytest.raises(ValueError, match="dimensions must be > 0, got 0"):
        QdrantVectorStore.create(0)
    with pytest.raises(ValueError, match="shard_number must be >= 1, got 0"):
        QdrantVectorStore.create(8, shard_number=0)
    with pytest.raises(ValueError, match="replication_factor must be >= 1, got 0"):
        QdrantVectorStore.create(8, replication_factor=0)
    store = QdrantVectorStore.create(8)
    with pytest.raises(ValueError, match=r"shape \(n, 8\)"):
        store.add(np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="k must be > 0"):
        store.search(np.zeros(8, dtype=np.float32), 0)
    assert store.search(np.ones(8, dtype=np.float32), 5) == []


@pytest.mark.unit
def test_saved_store_loads_back_and_a_wrong_count_is_refused(tmp_path: Path) -> None:
    vectors = unit_vectors(50, 16, seed=3)
    store = QdrantVectorStore.create(16)
    store.add(vectors)
    written = store.save(tmp_path)
    assert written == [tmp_path / POINTER_FILE]

    loaded = QdrantVectorStore.load(tmp_path, expected_count=50)
    assert loaded.count() == 50 and loaded.collection == store.collection
    assert loaded.search(vectors[11], 3) == store.search(vectors[11], 3)
    # The embedded database is copied into memory and closed: a second reader (another worker) can open it.
    assert QdrantVectorStore.load(tmp_path).count() == 50

    with pytest.raises(IndexCorrupted, match="holds 50 vectors, the manifest says 49"):
        QdrantVectorStore.load(tmp_path, expected_count=49)
    pointer = json.loads((tmp_path / POINTER_FILE).read_text())
    (tmp_path / POINTER_FILE).write_text(json.dumps({**pointer, "collection": "missing"}))
    with pytest.raises(IndexCorrupted, match="no collection 'missing'"):
        QdrantVectorStore.load(tmp_path)
    (tmp_path / POINTER_FILE).write_text("{")
    with pytest.raises(IndexCorrupted, match="unreadable"):
        QdrantVectorStore.load(tmp_path)


@pytest.mark.unit
def test_settings_choose_the_store() -> None:
    assert create_vector_store(RagSettings(vector_store="qdrant"), 8, expected_count=10).kind == "qdrant"
    assert create_vector_store(RagSettings(), 8, expected_count=10).kind == "flat"


@pytest.mark.unit
def test_ingest_and_serve_with_qdrant_match_faiss(tmp_path: Path) -> None:
    corpus = write_handbook(tmp_path / "handbook")
    embedder = HashingEmbedder()
    services = {}
    for kind in ("faiss", "qdrant"):
        settings = rag_settings(tmp_path / f"index-{kind}", vector_store=kind)
        ingest([corpus], settings, embedder=embedder, progress=False)
        services[kind] = RetrievalService(settings, embedder=embedder)
        services[kind].warm_up()
    snapshot = load_current(tmp_path / "index-qdrant")
    assert snapshot.manifest["index_kind"] == "qdrant" and isinstance(snapshot.vectors, QdrantVectorStore)
    for query in ("how many vacation days", "where do passwords live", "meal allowance abroad"):
        by_kind = {
            kind: [(c.chunk.chunk_id, round(c.score, 5)) for c in service.retrieve(query, top_k=4).chunks]
            for kind, service in services.items()
        }
        assert by_kind["qdrant"] == by_kind["faiss"], query

    # Re-ingest after an edit: a new version with its own collection is swapped in and served.
    settings = rag_settings(tmp_path / "index-qdrant", vector_store="qdrant")
    (corpus / "expenses" / "travel.md").write_text("# Travel\n\nThe daily meal allowance is 70 euros.\n")
    ingest([corpus], settings, embedder=embedder, progress=False)
    assert services["qdrant"].reload_if_changed()
    texts = [c.chunk.text for c in services["qdrant"].retrieve("daily meal allowance", top_k=2).chunks]
    assert any("70 euros" in text for text in texts)
    for _ in range(3):
        ingest([corpus], settings, embedder=embedder, progress=False)
    assert len(list_versions(settings.index_dir)) == 3
    current = settings.index_dir / VERSIONS_DIR / str(read_current(settings.index_dir))
    assert (current / POINTER_FILE).is_file() and not (current / "vectors.faiss").exists()


@pytest.mark.integration
def test_cluster_collection_per_version_and_dropped_when_pruned(tmp_path: Path) -> None:
    url = os.environ.get("HYBRID_TEST_QDRANT_URL")
    if not url:
        pytest.skip("set HYBRID_TEST_QDRANT_URL to a Qdrant server (e.g. http://127.0.0.1:6333) to run this")
    from qdrant_client import QdrantClient

    corpus = write_handbook(tmp_path / "handbook")
    settings = rag_settings(tmp_path / "index", vector_store="qdrant", qdrant={"url": url})
    embedder = HashingEmbedder()
    collections = []
    for _ in range(4):
        ingest([corpus], settings, embedder=embedder, progress=False)
        collections.append(load_current(settings.index_dir).vectors.collection)  # type: ignore[attr-defined]
    service = RetrievalService(settings, embedder=embedder)
    service.warm_up()
    assert "Lockbox" in service.retrieve("password manager", top_k=1).chunks[0].chunk.text
    client = QdrantClient(url=url)
    existing = {c.name for c in client.get_collections().collections}
    assert collections[0] not in existing and set(collections[1:]) <= existing
    for name in collections[1:]:
        client.delete_collection(name)


@pytest.mark.integration
@pytest.mark.slow
def test_scifact_dense_ndcg_with_qdrant_matches_faiss(minilm) -> None:
    """All 300 SciFact test queries over 5,183 abstracts: dense nDCG@10 within 0.5 point of FAISS.

    Reuses the embedding cache the FAISS SciFact test fills (var/cache/beir), else embedding takes minutes.
    """
    if not (SCIFACT / "corpus.jsonl").is_file():
        pytest.skip(f"SciFact not found at {SCIFACT} (../shared/datasets/beir_scifact)")
    cache = REPO_ROOT / "var" / "cache" / "beir"
    results = {
        kind: evaluate_beir(
            SCIFACT, settings=RagSettings(vector_store=kind), mode="dense", embedder=minilm, cache_dir=cache
        )
        for kind in ("faiss", "qdrant")
    }
    assert results["qdrant"]["queries"] == 300 and results["qdrant"]["corpus_docs"] == 5183
    assert abs(results["qdrant"]["ndcg@10"] - results["faiss"]["ndcg@10"]) <= 0.5, results
    assert abs(results["qdrant"]["recall@10"] - results["faiss"]["recall@10"]) <= 0.5, results
