"""Ingestion's embedding pass: length-sorted batches that come back in input order, progress on a terminal
and in the log, and the setting that picks the ingestion engine."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from services.core.cpus import available_cpu_count
from services.core.settings import load_settings
from services.rag import ingest as ingest_module
from services.rag import progress as progress_module
from services.rag.embedder import SentenceTransformerEmbedder, build_ingest_embedder
from services.rag.ingest import embed_texts
from services.rag.onnx_embedder import OnnxEmbedder
from services.rag.progress import EmbeddingProgress, progress_bars_or_log_lines
from tests.rag.conftest import HashingEmbedder, rag_settings

pytestmark = pytest.mark.unit

# Lengths deliberately out of order, with ties, so that sorted order differs from input order.
TEXTS = [f"text {i} " + "word " * ((i * 7) % 11) for i in range(23)]


class RecordingEmbedder(HashingEmbedder):
    """Remembers the texts of each embed_documents call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[str]] = []

    def embed_documents(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.calls.append(list(texts))
        return super().embed_documents(texts)


def test_vectors_come_back_in_input_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest_module, "EMBED_BATCH", 4)  # several windows over the sorted texts
    embedder = RecordingEmbedder()
    vectors = embed_texts(embedder, TEXTS, progress=False, what="chunks")
    expected = np.stack([embedder.embed_query(text) for text in TEXTS])
    np.testing.assert_array_equal(vectors, expected)


def test_texts_go_to_the_embedder_longest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest_module, "EMBED_BATCH", 4)
    embedder = RecordingEmbedder()
    embed_texts(embedder, TEXTS, progress=False, what="chunks")
    sent = [text for call in embedder.calls for text in call]
    assert sorted(sent) == sorted(TEXTS)
    assert [len(t) for t in sent] == sorted((len(t) for t in TEXTS), reverse=True)
    assert all(len(call) <= 4 for call in embedder.calls)


def test_no_texts_give_no_rows() -> None:
    assert embed_texts(HashingEmbedder(dimensions=8), [], progress=False, what="units").shape == (0, 8)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_off_a_terminal_progress_is_logged_with_rate_and_time_left(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    caplog.set_level(logging.INFO, logger="services.rag.progress")
    with EmbeddingProgress(1000, "units", bar=False, log_every_s=30, clock=clock) as progress:
        clock.now = 10
        progress.update(100)  # before the interval: no line
        clock.now = 40
        progress.update(300)  # 400 done in 40 s: 10 units/s, 600 left
        clock.now = 100
        progress.update(600)
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "embedding units: 400/1000 (40%), 10.0 units/s, about 60 s left",
        "embedded 1000 units in 1.7 min (10.0 units/s)",
    ]


def test_a_failed_pass_logs_no_completion_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="services.rag.progress")
    with pytest.raises(RuntimeError), EmbeddingProgress(10, "chunks", bar=False, clock=FakeClock()):
        raise RuntimeError("embedder failed")
    assert caplog.records == []


def test_on_a_terminal_the_bar_shows_rate_and_time_left(capsys: pytest.CaptureFixture[str]) -> None:
    clock = FakeClock()
    with EmbeddingProgress(50, "chunks", bar=True, clock=clock) as progress:
        progress.update(50)
    drawn = capsys.readouterr().err
    assert "embedding chunks" in drawn and "50/50" in drawn and "chunks/s" in drawn and "<" in drawn


def test_a_command_off_a_terminal_gets_the_log_lines_on_stderr(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(progress_module.logger, "handlers", [])
    monkeypatch.setattr(progress_module.logger, "level", logging.NOTSET)
    assert progress_bars_or_log_lines() is False  # pytest's captured stderr is not a terminal
    assert progress_bars_or_log_lines() is False  # and a second call adds no second handler
    assert len(progress_module.logger.handlers) == 1
    with EmbeddingProgress(3, "chunks", bar=False) as progress:
        progress.update(3)
    assert capsys.readouterr().err.count("embedded 3 chunks in 0 s") == 1


def test_ingestion_engine_is_onnx_on_every_usable_core_by_default(tmp_path: Path) -> None:
    embedder = build_ingest_embedder(rag_settings(tmp_path / "index"))
    assert isinstance(embedder, OnnxEmbedder)
    assert embedder._threads == available_cpu_count()
    torch_engine = build_ingest_embedder(rag_settings(tmp_path / "index", ingest_embedder_engine="torch"))
    assert isinstance(torch_engine, SentenceTransformerEmbedder)


def test_ingestion_engine_is_read_from_yaml_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("rag:\n  ingest_embedder_engine: torch\n", encoding="utf-8")
    assert load_settings(config).rag.ingest_embedder_engine == "torch"
    monkeypatch.setenv("HYBRID_RAG__INGEST_EMBEDDER_ENGINE", "torch")
    assert load_settings().rag.ingest_embedder_engine == "torch"
    monkeypatch.setenv("HYBRID_RAG__INGEST_EMBEDDER_ENGINE", "tensorflow")
    with pytest.raises(Exception, match="ingest_embedder_engine"):
        load_settings()
