"""OnnxEmbedder: same vectors as the torch embedder, export cached once, damaged exports moved aside and
exported again, and the RetrievalService serving a torch-built index with ONNX query vectors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from services.core.artifact_cache import verify_manifest
from services.core.errors import ConfigError, NotReady
from services.rag import onnx_embedder
from services.rag.chunking import embedding_text
from services.rag.embedder import SentenceTransformerEmbedder, build_query_embedder, embedder_cache_dir
from services.rag.index_store import VERSIONS_DIR, read_chunks, read_current, read_embeddings
from services.rag.ingest import ingest
from services.rag.onnx_embedder import MANIFEST_FILE, ONNX_FILE, TOKENIZER_FILE, OnnxEmbedder
from services.rag.service import RetrievalService
from tests.rag.conftest import REPO_ROOT, rag_settings, write_handbook

QUERIES = [
    "how many vacation days do I get",
    "What's the per-diem abroad? (in euros)",
    "Passwörter: wo liegen sie?",
    "x",
]
DOCUMENTS = [
    "# Travel expenses\n\nBook flights through the Wayfare portal. Submit receipts within 30 days.",
    "Service account keys rotate every 90 days; human passwords live in Lockbox, the password manager.",
    "Your laptop ships 7 business days before your start date, together with a welcome kit.",
]
# Far beyond 256 tokens, so both embedders truncate it: vectors agree only if they truncate alike.
LONG_TEXT = " ".join(f"Paragraph {i}: onboarding buddies help new joiners settle in." for i in range(120))


@pytest.fixture(scope="session")
def onnx_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose `embedder-cache` holds the one export of this test session (index dirs go beside it)."""
    return tmp_path_factory.mktemp("onnx-rag")


@pytest.fixture(scope="session")
def onnx_minilm(onnx_base: Path) -> OnnxEmbedder:
    embedder = OnnxEmbedder(cache_dir=onnx_base / "embedder-cache", threads=1)
    embedder.warm_up()
    assert embedder.exported, "the first warm_up into an empty cache must export"
    return embedder


# -- unit: construction ----------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threads": 0}, "threads must be >= 1, got 0"),
        ({"max_seq_length": 4}, "max_seq_length must be >= 8, got 4"),
        ({"batch_size": 0}, "batch_size must be > 0, got 0"),
        ({"model": ""}, "empty string"),
    ],
)
def test_constructor_names_the_bad_value(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        OnnxEmbedder(cache_dir=tmp_path, **kwargs)  # type: ignore[arg-type]


@pytest.mark.unit
def test_not_ready_before_warm_up(tmp_path: Path) -> None:
    embedder = OnnxEmbedder(cache_dir=tmp_path)
    with pytest.raises(NotReady):
        embedder.embed_query("hello")
    assert not any(tmp_path.iterdir()), "construction must not export"


@pytest.mark.unit
def test_settings_pick_the_query_engine(tmp_path: Path) -> None:
    default = build_query_embedder(rag_settings(tmp_path / "index"))
    torch_engine = build_query_embedder(rag_settings(tmp_path / "index", embedder_engine="torch"))
    assert isinstance(default, OnnxEmbedder)
    assert isinstance(torch_engine, SentenceTransformerEmbedder)
    assert embedder_cache_dir(rag_settings(tmp_path / "index")) == tmp_path / "embedder-cache"


@pytest.mark.unit
def test_a_failed_export_leaves_nothing_and_a_finished_one_carries_both_manifests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "embedder-cache"

    def crashing_export(model_dir: Path, target: Path) -> dict[str, object]:
        (target / ONNX_FILE).write_bytes(b"half a graph")
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(onnx_embedder, "_export", crashing_export)
    with pytest.raises(RuntimeError, match="exporter crashed"):
        onnx_embedder._export_atomically(tmp_path / "model", cache / "minilm-0123", "f" * 64)
    assert list(cache.iterdir()) == []

    def export(model_dir: Path, target: Path) -> dict[str, object]:
        (target / ONNX_FILE).write_bytes(b"graph")
        return {"dimensions": 4}

    monkeypatch.setattr(onnx_embedder, "_export", export)
    onnx_embedder._export_atomically(tmp_path / "model", cache / "minilm-0123", "f" * 64)
    assert [p.name for p in cache.iterdir()] == ["minilm-0123"]
    manifest = json.loads((cache / "minilm-0123" / MANIFEST_FILE).read_text(encoding="utf-8"))
    assert manifest == {"dimensions": 4, "fingerprint": "f" * 64, "model_dir": "model"}
    assert verify_manifest(cache / "minilm-0123")["files"] == {
        ONNX_FILE: 5,
        MANIFEST_FILE: len(json.dumps(manifest, indent=2)),
    }


# -- integration: the real model -------------------------------------------------------------------


@pytest.mark.integration
def test_vectors_match_the_torch_embedder(
    onnx_minilm: OnnxEmbedder, minilm: SentenceTransformerEmbedder
) -> None:
    assert onnx_minilm.model_id == minilm.model_id
    assert onnx_minilm.dimensions == minilm.dimensions == 384
    assert onnx_minilm.max_seq_length == minilm.max_seq_length == 256
    assert onnx_minilm.count_tokens(LONG_TEXT) > 2 * onnx_minilm.max_seq_length

    texts = QUERIES + DOCUMENTS + [LONG_TEXT]
    onnx_vectors = onnx_minilm.embed_documents(texts)
    torch_vectors = minilm.embed_documents(texts)
    assert onnx_vectors.shape == torch_vectors.shape == (len(texts), 384)
    assert onnx_vectors.dtype == np.float32
    cosines = np.sum(onnx_vectors * torch_vectors, axis=1)
    assert cosines.min() >= 0.9999, dict(zip(texts, cosines.tolist(), strict=True))
    np.testing.assert_allclose(np.linalg.norm(onnx_vectors, axis=1), 1.0, atol=1e-5)
    # A query alone (no padding) gives the vector it gets inside a padded, length-sorted batch.
    np.testing.assert_allclose(onnx_minilm.embed_query(QUERIES[1]), onnx_vectors[1], atol=1e-5)
    # Different texts really give different vectors (the comparison above is not trivially true).
    assert float(onnx_vectors[0] @ onnx_vectors[len(QUERIES)]) < 0.9


@pytest.mark.integration
def test_tokens_match_the_torch_embedder(
    onnx_minilm: OnnxEmbedder, minilm: SentenceTransformerEmbedder
) -> None:
    for text in [*QUERIES, *DOCUMENTS, LONG_TEXT]:
        assert onnx_minilm.count_tokens(text) == minilm.count_tokens(text)
        assert onnx_minilm.token_spans(text) == minilm.token_spans(text)
    assert onnx_minilm.embed_documents([]).shape == (0, 384)


@pytest.mark.integration
def test_second_construction_reuses_the_export(onnx_minilm: OnnxEmbedder, onnx_base: Path) -> None:
    export_dir = onnx_minilm.export_dir
    modified = (export_dir / ONNX_FILE).stat().st_mtime_ns
    again = OnnxEmbedder(cache_dir=onnx_base / "embedder-cache", threads=2)
    again.warm_up()
    assert not again.exported
    assert again.export_dir == export_dir
    assert (export_dir / ONNX_FILE).stat().st_mtime_ns == modified
    # Only the export itself: no staging folder left behind.
    assert [p.name for p in (onnx_base / "embedder-cache").iterdir()] == [export_dir.name]
    np.testing.assert_allclose(again.embed_query("vacation"), onnx_minilm.embed_query("vacation"), atol=1e-5)


def _copy_of_export(onnx_minilm: OnnxEmbedder, cache_dir: Path) -> Path:
    copy = cache_dir / onnx_minilm.export_dir.name
    cache_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(onnx_minilm.export_dir, copy)
    return copy


@pytest.mark.integration
@pytest.mark.parametrize("damage", ["truncate_onnx", "flip_onnx_byte", "delete_tokenizer", "garble_manifest"])
def test_damaged_export_is_moved_aside_and_exported_again(
    onnx_minilm: OnnxEmbedder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    damage: str,
) -> None:
    export = _copy_of_export(onnx_minilm, tmp_path)
    if damage == "truncate_onnx":
        with (export / ONNX_FILE).open("r+b") as handle:
            handle.truncate(1000)
    elif damage == "flip_onnx_byte":  # same size, other bytes: only the digest can tell
        with (export / ONNX_FILE).open("r+b") as handle:
            handle.seek(5_000_000)
            byte = handle.read(1)
            handle.seek(5_000_000)
            handle.write(bytes([byte[0] ^ 0xFF]))
    elif damage == "delete_tokenizer":
        (export / TOKENIZER_FILE).unlink()
    else:
        (export / MANIFEST_FILE).write_text("{not json", encoding="utf-8")

    good = onnx_minilm.export_dir

    def export_from_the_good_copy(model_dir: Path, target: Path) -> dict[str, object]:
        # The real export is covered by onnx_minilm; this test is about what happens around it.
        for name in (ONNX_FILE, TOKENIZER_FILE):
            shutil.copy2(good / name, target / name)
        manifest = json.loads((good / MANIFEST_FILE).read_text(encoding="utf-8"))
        return {k: v for k, v in manifest.items() if k not in {"fingerprint", "model_dir"}}

    monkeypatch.setattr(onnx_embedder, "_export", export_from_the_good_copy)
    embedder = OnnxEmbedder(cache_dir=tmp_path)
    with caplog.at_level("WARNING"):
        embedder.warm_up()
    assert embedder.exported and embedder.export_dir == export
    aside = [p for p in tmp_path.iterdir() if p.name.startswith(f"{export.name}.damaged-")]
    assert len(aside) == 1, "the damaged copy is kept for inspection, not deleted"
    assert str(aside[0]) in caplog.text and str(export) in caplog.text
    assert embedder.embed_query("vacation days").shape == (384,)


@pytest.mark.integration
def test_read_only_cache_falls_back_to_the_temp_folder(
    onnx_minilm: OnnxEmbedder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Tests run as root here, so chmod cannot make a folder read-only: the export raises instead.
    def refuse(model_dir: Path, export_dir: Path, fingerprint: str) -> None:
        raise PermissionError(13, "Permission denied", str(export_dir))

    monkeypatch.setattr(onnx_embedder, "_export_atomically", refuse)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    fallback = _copy_of_export(onnx_minilm, tmp_path / "tmp" / "hybridllm-embedder-cache")
    embedder = OnnxEmbedder(cache_dir=tmp_path / "read-only")
    embedder.warm_up()
    assert embedder.export_dir == fallback and not embedder.exported
    assert "is not writable" in caplog.text
    np.testing.assert_allclose(embedder.embed_query("laptop"), onnx_minilm.embed_query("laptop"), atol=1e-5)


@pytest.mark.integration
def test_max_seq_length_beyond_the_model_is_refused(onnx_minilm: OnnxEmbedder, onnx_base: Path) -> None:
    embedder = OnnxEmbedder(cache_dir=onnx_base / "embedder-cache", max_seq_length=1024)
    with pytest.raises(ConfigError, match="exceeds the model's 512 positions"):
        embedder.warm_up()


@pytest.mark.integration
def test_query_path_imports_no_torch(onnx_minilm: OnnxEmbedder) -> None:
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from services.rag.onnx_embedder import OnnxEmbedder\n"
        f"embedder = OnnxEmbedder(cache_dir=Path({str(onnx_minilm.export_dir.parent)!r}))\n"
        "embedder.warm_up()\n"
        "assert embedder.embed_query('vacation days').shape == (384,)\n"
        "print(sorted(m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.integration
def test_retrieval_service_serves_a_torch_built_index_with_onnx_queries(
    onnx_minilm: OnnxEmbedder, minilm: SentenceTransformerEmbedder, onnx_base: Path
) -> None:
    corpus = write_handbook(onnx_base / "handbook")
    settings = rag_settings(onnx_base / "index")
    ingest([corpus], settings, embedder=minilm, progress=False)

    # No embedder passed: the service builds its default, the ONNX one, with the cache beside the index.
    onnx_service = RetrievalService(settings)
    onnx_service.warm_up()  # would raise IndexCorrupted(embedder_mismatch) if the model ids differed
    torch_service = RetrievalService(settings, embedder=minilm)
    torch_service.warm_up()
    assert [p.name for p in (onnx_base / "embedder-cache").iterdir()] == [onnx_minilm.export_dir.name]

    for query in ("how much is the meal allowance abroad", "who rotates service account keys", "laptop"):
        by_onnx = onnx_service.retrieve(query)
        by_torch = torch_service.retrieve(query)
        assert [c.chunk.chunk_id for c in by_onnx.chunks] == [c.chunk.chunk_id for c in by_torch.chunks]
        np.testing.assert_allclose(
            [c.score for c in by_onnx.chunks], [c.score for c in by_torch.chunks], atol=1e-4
        )
        assert by_onnx.timings_ms["embed"] > 0
    best = onnx_service.retrieve("how much is the daily meal allowance abroad").chunks[0]
    assert "55 euros" in best.chunk.text


@pytest.mark.integration
def test_default_ingestion_vectors_are_the_query_embedders(
    onnx_minilm: OnnxEmbedder, onnx_base: Path
) -> None:
    """Ingest with no embedder given (the ingestion default) and the stored vectors are what the query
    embedder gives for the same texts, so the service accepts the index and search finds its chunks."""
    corpus = write_handbook(onnx_base / "handbook-default-ingest")
    settings = rag_settings(onnx_base / "index-default-ingest")
    report = ingest([corpus], settings, progress=False)
    assert set(report.stage_seconds) >= {"load", "chunk", "embed_chunks", "embed_units", "write"}
    assert [p.name for p in (onnx_base / "embedder-cache").iterdir()] == [onnx_minilm.export_dir.name]

    version = settings.index_dir / VERSIONS_DIR / str(read_current(settings.index_dir))
    chunks, stored = read_chunks(version), read_embeddings(version)
    by_query_embedder = np.stack([onnx_minilm.embed_query(embedding_text(chunk)) for chunk in chunks])
    assert float(np.min(np.sum(stored * by_query_embedder, axis=1))) >= 0.9999

    service = RetrievalService(settings)  # the default query embedder: refuses an index of another model
    service.warm_up()
    best = service.retrieve("how much is the daily meal allowance abroad").chunks[0]
    assert "55 euros" in best.chunk.text
