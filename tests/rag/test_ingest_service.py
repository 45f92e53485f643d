from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from services.core.errors import IndexCorrupted, InvalidRequest, RetrievalError
from services.rag.faiss_store import INDEX_FILE
from services.rag.index_store import VERSIONS_DIR, ingest_lock, list_versions, read_current
from services.rag.ingest import ingest
from services.rag.service import RetrievalService
from tests.rag.conftest import HashingEmbedder, rag_settings, write_handbook

pytestmark = pytest.mark.unit


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    return write_handbook(tmp_path / "handbook")


def test_reingest_embeds_only_changed_and_added_chunks_and_drops_removed_files(
    tmp_path: Path, corpus: Path
) -> None:
    settings = rag_settings(tmp_path / "index")
    embedder = HashingEmbedder()
    first = ingest([corpus], settings, embedder=embedder, progress=False)
    assert first.embedded == first.chunks == first.added_chunks and first.reused_embeddings == 0

    (corpus / "benefits" / "time-off.md").write_text(
        "# Time off\n\nEveryone gets 30 days of paid vacation per year.\n\n"
        "## Carry-over\n\nUp to 5 unused vacation days carry over into the next year.\n\n"
        "## Sick leave\n\nSick leave is unlimited and needs no doctor's note for the first 3 days.\n",
        encoding="utf-8",
    )
    (corpus / "people" / "onboarding.md").unlink()
    parking = corpus / "people" / "parking.md"
    parking.write_text("# Parking\n\nBikes park in the basement.\n", encoding="utf-8")
    embedder.embedded_texts = 0
    second = ingest([corpus], settings, embedder=embedder, progress=False)

    # The changed intro and the new file, and their evidence units (one sentence each); every other
    # chunk's units keep their stored vectors.
    assert second.embedded == 2 and second.embedded_units == 2
    assert embedder.embedded_texts == second.embedded + second.embedded_units
    assert second.added_chunks == 2
    assert second.removed_chunks == 3  # the old intro + onboarding's two sections
    assert second.reused_embeddings == second.chunks - 2
    assert second.version != first.version and read_current(settings.index_dir) == second.version

    service = RetrievalService(settings, embedder=embedder)
    service.warm_up()
    sources = {c.chunk.source for c in service.retrieve("onboarding buddy laptop", top_k=10).chunks}
    assert "people/onboarding.md" not in sources
    texts = [c.chunk.text for c in service.retrieve("paid vacation days per year", top_k=10).chunks]
    assert any("30 days" in t for t in texts) and not any("27 days" in t for t in texts)


def test_only_the_last_three_versions_are_kept(tmp_path: Path, corpus: Path) -> None:
    settings = rag_settings(tmp_path / "index")
    reports = [ingest([corpus], settings, embedder=HashingEmbedder(), progress=False) for _ in range(5)]
    assert list_versions(settings.index_dir) == [r.version for r in reports[-3:]]
    assert reports[-1].embedded == 0


def test_a_second_ingest_is_refused_while_one_holds_the_lock(tmp_path: Path, corpus: Path) -> None:
    settings = rag_settings(tmp_path / "index")
    with ingest_lock(settings.index_dir), pytest.raises(RetrievalError, match="another ingest"):
        ingest([corpus], settings, embedder=HashingEmbedder(), progress=False)


def test_report_as_dict_has_the_documented_keys(tmp_path: Path, corpus: Path) -> None:
    (corpus / "blob.txt").write_bytes(b"\x00\x00")
    report = ingest([corpus], rag_settings(tmp_path / "index"), embedder=HashingEmbedder(), progress=False)
    values = report.as_dict()
    assert set(values) == {
        "version", "chunks", "files", "added_chunks", "removed_chunks", "embedded",
        "reused_embeddings", "embedded_units", "skipped_files", "seconds", "stage_seconds",
    }  # fmt: skip
    assert values["skipped_files"] == ["blob.txt"] and values["files"] == 4
    assert list(values["stage_seconds"]) == [
        "load", "embedder_warm_up", "chunk", "embed_chunks", "index", "embed_units", "write",
    ]  # fmt: skip
    assert sum(values["stage_seconds"].values()) <= values["seconds"] + 0.01


def test_warm_up_without_an_index_raises_retrieval_error(tmp_path: Path) -> None:
    service = RetrievalService(rag_settings(tmp_path / "empty"), embedder=HashingEmbedder())
    with pytest.raises(RetrievalError, match="no index") as caught:
        service.warm_up()
    assert not isinstance(caught.value, IndexCorrupted)


def test_empty_query_is_an_invalid_request(tmp_path: Path, corpus: Path) -> None:
    settings = rag_settings(tmp_path / "index")
    ingest([corpus], settings, embedder=HashingEmbedder(), progress=False)
    service = RetrievalService(settings, embedder=HashingEmbedder())
    service.warm_up()
    with pytest.raises(InvalidRequest):
        service.retrieve("  ")


def truncate_faiss_file(index_dir: Path, version: str) -> None:
    path = index_dir / VERSIONS_DIR / version / INDEX_FILE
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_corrupted_new_version_is_refused_and_the_old_one_keeps_serving(tmp_path: Path, corpus: Path) -> None:
    settings = rag_settings(tmp_path / "index")
    embedder = HashingEmbedder()
    old = ingest([corpus], settings, embedder=embedder, progress=False).version
    service = RetrievalService(settings, embedder=embedder)
    service.warm_up()

    (corpus / "expenses" / "travel.md").unlink()
    new = ingest([corpus], settings, embedder=embedder, progress=False).version
    truncate_faiss_file(settings.index_dir, new)

    assert service.reload_if_changed() is False
    assert service.index_info.version == old
    assert service.retrieve("receipts per diem").index_version == old
    assert service.reload_if_changed() is False  # refused once, not retried every tick

    fresh = RetrievalService(settings, embedder=embedder)
    with pytest.raises(IndexCorrupted):
        fresh.warm_up()


def test_missing_manifest_or_garbage_current_is_corruption(tmp_path: Path, corpus: Path) -> None:
    settings = rag_settings(tmp_path / "index")
    ingest([corpus], settings, embedder=HashingEmbedder(), progress=False)
    (settings.index_dir / "CURRENT").write_text("no-such-version\n", encoding="utf-8")
    with pytest.raises(IndexCorrupted, match="does not exist"):
        RetrievalService(settings, embedder=HashingEmbedder()).warm_up()


def test_index_built_with_another_embedder_is_refused(tmp_path: Path, corpus: Path) -> None:
    settings = rag_settings(tmp_path / "index")
    ingest([corpus], settings, embedder=HashingEmbedder(model_id="model-a"), progress=False)
    with pytest.raises(IndexCorrupted, match="re-ingest"):
        RetrievalService(settings, embedder=HashingEmbedder(model_id="model-b")).warm_up()


def test_versions_swap_atomically_while_queries_run(tmp_path: Path, corpus: Path) -> None:
    settings = rag_settings(tmp_path / "index")
    embedder = HashingEmbedder()
    first = ingest([corpus], settings, embedder=embedder, progress=False).version
    service = RetrievalService(settings, embedder=embedder)
    service.warm_up()

    errors: list[BaseException] = []
    seen_versions: set[str] = set()
    stop = threading.Event()

    def query_forever() -> None:
        while not stop.is_set():
            try:
                outcome = service.retrieve("vacation receipts passwords onboarding", top_k=5)
                assert outcome.chunks, "a query returned nothing"
                seen_versions.add(outcome.index_version)
            except BaseException as exc:  # noqa: BLE001 - any failure in a query thread fails the test
                errors.append(exc)
                return

    threads = [threading.Thread(target=query_forever) for _ in range(4)]
    for thread in threads:
        thread.start()
    versions = [first]
    try:
        for round_number in range(4):
            (corpus / f"news-{round_number}.md").write_text(
                f"# News {round_number}\n\nThe cafeteria menu number {round_number} changed.\n",
                encoding="utf-8",
            )
            versions.append(ingest([corpus], settings, embedder=embedder, progress=False).version)
            assert service.reload_if_changed() is True
            assert service.index_info.version == versions[-1]
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert errors == []
    assert service.index_info.chunks == 10 + 4
    assert seen_versions <= set(versions) and len(seen_versions) >= 2
    assert service.reload_if_changed() is False


@pytest.mark.integration
def test_real_embedder_finds_the_fact_and_flags_unrelated_queries(
    tmp_path: Path, corpus: Path, minilm
) -> None:
    settings = rag_settings(
        tmp_path / "index", chunking={"tokens": 256, "overlap": 32}, relevance={"min_dense_score": 0.25}
    )
    report = ingest([corpus], settings, embedder=minilm, progress=False)
    assert report.chunks == 10
    service = RetrievalService(settings, embedder=minilm)
    service.warm_up()
    outcome = service.retrieve("How long do I have to hand in travel receipts?", top_k=3)
    assert outcome.chunks[0].chunk.heading_path == ("Travel expenses", "Receipts")
    assert outcome.relevant and outcome.max_dense_score == pytest.approx(outcome.chunks[0].score, abs=0.2)
    assert set(outcome.timings_ms) == {"embed", "search", "rerank"}
    unrelated = service.retrieve("What is the boiling point of liquid nitrogen in kelvin?")
    assert not unrelated.relevant
    selection = service.select_context(outcome.chunks, budget_tokens=40)
    assert 0 < selection.token_count <= 40


def test_evidence_comes_from_stored_unit_vectors_and_damaged_offsets_are_refused(
    tmp_path: Path, corpus: Path
) -> None:
    import json

    import numpy as np

    from services.rag.index_store import UNIT_OFFSETS_FILE, load_current

    settings = rag_settings(tmp_path / "index")
    embedder = HashingEmbedder()
    report = ingest([corpus], settings, embedder=embedder, progress=False)
    snapshot = load_current(settings.index_dir)
    assert snapshot.units is not None and snapshot.units.vectors.shape[0] == report.embedded_units
    manifest = json.loads((snapshot.directory / "manifest.json").read_text())
    assert manifest["units"]["count"] == report.embedded_units

    service = RetrievalService(settings, embedder=embedder)
    service.warm_up()
    embedder.embedded_texts = 0
    outcome = service.retrieve("paid vacation days per year")
    selection = service.select_evidence("paid vacation days per year", outcome)
    assert selection.units and selection.token_count <= settings.evidence.budget_tokens
    assert embedder.embedded_texts == 0  # the stored vectors served; nothing embedded per query
    assert {c.chunk.chunk_id for c in selection.chunks} <= {c.chunk.chunk_id for c in outcome.chunks}

    offsets = snapshot.directory / UNIT_OFFSETS_FILE
    np.save(offsets, np.zeros(3, dtype=np.int64))  # a wrong length, same header size
    manifest["file_sizes"][UNIT_OFFSETS_FILE] = offsets.stat().st_size
    (snapshot.directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexCorrupted, match="unit vectors"):
        RetrievalService(settings, embedder=HashingEmbedder()).warm_up()


def test_units_of_another_splitter_version_are_embedded_at_query_time(tmp_path: Path, corpus: Path) -> None:
    import dataclasses

    from services.rag.index_store import load_current
    from services.rag.service import IndexedUnitSource

    settings = rag_settings(tmp_path / "index")
    embedder = HashingEmbedder()
    ingest([corpus], settings, embedder=embedder, progress=False)
    service = RetrievalService(settings, embedder=embedder)
    service.warm_up()
    outcome = service.retrieve("paid vacation days per year")
    snapshot = load_current(settings.index_dir)
    assert snapshot.units is not None
    stale = dataclasses.replace(snapshot, units=dataclasses.replace(snapshot.units, splitter="0"))
    embedder.embedded_texts = 0
    from services.rag.evidence import EmbeddingUnitSource

    fresh = IndexedUnitSource(snapshot, EmbeddingUnitSource(embedder)).units_and_vectors(outcome.chunks)
    assert embedder.embedded_texts == 0
    recomputed = IndexedUnitSource(stale, EmbeddingUnitSource(embedder)).units_and_vectors(outcome.chunks)
    assert embedder.embedded_texts == sum(len(units) for units, _ in recomputed) > 0
    for (units_a, vectors_a), (units_b, vectors_b) in zip(fresh, recomputed, strict=True):
        assert units_a == units_b
        assert np.allclose(vectors_a, vectors_b, atol=1e-2)  # float16 storage
