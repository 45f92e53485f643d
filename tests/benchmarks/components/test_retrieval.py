"""The retrieval benchmark's synthetic path, small: every index kind measured, reported and compared."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.components.retrieval import KINDS, bench_size, synthetic_corpus, write_report

pytestmark = pytest.mark.unit


def test_every_index_kind_is_measured_and_reported(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    corpus = synthetic_corpus(3000, rng)
    rows = [
        bench_size(corpus, kind, 20, [5.0], rng, hnsw_m=16, hnsw_ef_construction=40, nprobe=8)
        for kind in KINDS
    ]
    assert [r["kind"] for r in rows] == list(KINDS)
    for row in rows:
        assert row["total_p50_ms"] >= 5.0  # the query embedding time is added to each query
        assert row["dense_search_p50_ms"] > 0 and row["bm25_search_p50_ms"] > 0
        assert row["bytes_per_million"]["vectors"] > 0
    assert "recall@10_vs_exact" not in rows[0]
    assert all(0.0 <= r["recall@10_vs_exact"] <= 1.0 for r in rows[1:])
    # SQ8 codes take a byte per dimension instead of four.
    by_kind = {r["kind"]: r for r in rows}
    assert (
        by_kind["ivf_sq8"]["bytes_per_million"]["vectors"]
        < 0.4 * by_kind["flat"]["bytes_per_million"]["vectors"]
    )

    results = {
        "machine": "test",
        "query_engine": "onnx",
        "query_embed_p50_ms": 5.0,
        "query_embed_p99_ms": 5.0,
        "latency": rows,
        "skipped": ["hnsw at 1,000,000 chunks"],
    }
    write_report(results, tmp_path)
    report = (tmp_path / "retrieval.md").read_text()
    assert "ivf_sq8 / flat total p50" in report
    assert "Not run: hnsw at 1,000,000 chunks" in report
    assert json.loads((tmp_path / "retrieval.json").read_text())["latency"][0]["kind"] == "flat"
    assert (tmp_path / "retrieval_latency.png").stat().st_size > 0
