"""The ingestion bench, small: texts drawn from an index, interleaved rounds that keep text order, the
retrieval check and the report."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from benchmarks.components.ingest import measure, sample_texts, self_retrieval, write_report
from services.rag.ingest import ingest
from tests.rag.conftest import HashingEmbedder, rag_settings, write_handbook

pytestmark = pytest.mark.unit


def test_texts_are_drawn_from_the_current_version_with_their_chunks(tmp_path: Path) -> None:
    settings = rag_settings(tmp_path / "index")
    ingest([write_handbook(tmp_path / "handbook")], settings, embedder=HashingEmbedder(), progress=False)
    sample = sample_texts(settings.index_dir, 4, 3, seed=1)
    assert len(sample.chunk_texts) == 4 and len(sample.unit_texts) == 3
    # each unit's words come from the chunk it is said to come from
    for unit, owner in zip(sample.unit_texts, sample.unit_chunk, strict=True):
        assert unit.split()[-1].strip(".") in sample.chunk_texts[owner]


def test_interleaved_rounds_return_each_configurations_vectors_in_text_order() -> None:
    embedder = HashingEmbedder(dimensions=16)

    def embed(texts: Sequence[str]) -> npt.NDArray[np.float32]:
        return embedder.embed_documents(texts)

    texts = [f"text number {i}" for i in range(11)]
    rates, vectors = measure({"a": embed, "b": embed}, texts, rounds=3)
    assert set(rates) == {"a", "b"} and all(rate > 0 for rate in rates.values())
    np.testing.assert_array_equal(vectors["a"], embedder.embed_documents(texts))
    np.testing.assert_array_equal(vectors["b"], vectors["a"])


def test_self_retrieval_counts_units_whose_chunk_is_in_the_top_five() -> None:
    # chunk i lies i * 10 degrees from the unit: ranked 0, 1, 2, ...
    angles = np.radians(np.arange(10) * 10.0)
    chunks = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    units = np.array([[1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    assert self_retrieval(chunks, units, [0, 4]) == 1.0
    assert self_retrieval(chunks, units, [0, 5]) == 0.5


def test_report_lists_every_configuration_and_the_full_ingest(tmp_path: Path) -> None:
    row = {"texts_per_s": 10.0, "vs_before": 1.0, "min_cosine_vs_torch": 1.0, "unit_to_own_chunk_at_5": 0.9}
    results = {
        "machine": "test",
        "load_average_before": [1.0, 1.0, 1.0],
        "load_average_after": [1.0, 1.0, 1.0],
        "index": "idx",
        "model": "m",
        "chunk_texts": 2,
        "unit_texts": 2,
        "tokens_mean_chunks": 100.0,
        "tokens_mean_units": 20.0,
        "rounds": 2,
        "torch_threads": 2,
        "configs": [{"config": "torch (before)", **row}, {"config": "onnx fp32 2t b64 sorted", **row}],
        "full_ingests": [
            {
                "engine": "onnx",
                "corpus": "c",
                "files": 3,
                "chunks": 9,
                "embedded_units": 30,
                "minutes": 1.5,
                "load_average_before_after": [1.0, 2.0],
                "stage_minutes": {"load": 0.1, "embed_units": 1.0},
            }
        ],
    }
    write_report(results, tmp_path)
    text = (tmp_path / "ingest.md").read_text(encoding="utf-8")
    assert "| onnx fp32 2t b64 sorted |" in text and "| onnx | 1.50 | 0.10 | 1.00 | 1.0/2.0 |" in text
    assert (
        json.loads((tmp_path / "ingest.json").read_text(encoding="utf-8"))["configs"][0]["vs_before"] == 1.0
    )
