"""The file path as a BM25 field (rag.path_field) and query rewriting by feedback (rag.query_rewrite)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from services.core.errors import ConfigError
from services.core.settings import load_settings
from services.core.types import Chunk
from services.rag.fusion import fuse
from services.rag.index_store import VERSIONS_DIR, load_current, read_current
from services.rag.ingest import ingest
from services.rag.path_field import PathFieldIndex, path_words
from services.rag.query_rewrite import expand_query, expansion_terms, feedback_text
from services.rag.retriever import RetrievalParams, rank_chunks
from services.rag.service import RetrievalService
from services.rag.sparse import Bm25Tokenizer
from tests.rag.conftest import HashingEmbedder, rag_settings, write_handbook

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("engineering/dev/process/pull-requests.md", "engineering dev process pull requests"),
        ("benefits/time_off/index.md", "benefits time off index"),
        ("people/onCall.rota.md", "people on call rota"),
        ("notes/README", "notes readme"),
        ("C:\\docs\\Security-Policy.txt", "c: docs security policy"),
    ],
)
def test_path_words_split_folders_separators_and_camel_case(source: str, words: str) -> None:
    assert path_words(source) == words


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    root = write_handbook(tmp_path / "handbook")
    # A page whose path names its topic ("zanzibar office") while its text never does.
    page = root / "sites" / "zanzibar-office.md"
    page.parent.mkdir(parents=True)
    page.write_text(
        "# Site notes\n\nThe kitchen is on the second floor next to the library.\n", encoding="utf-8"
    )
    return root


def _sources(service: RetrievalService, query: str, top_k: int) -> list[str]:
    return [scored.chunk.source for scored in service.retrieve(query, top_k=top_k).chunks]


def test_a_query_matching_only_a_path_finds_its_chunk_with_the_field_on(tmp_path: Path, corpus: Path) -> None:
    settings = rag_settings(tmp_path / "index")
    ingest([corpus], settings, embedder=HashingEmbedder(), progress=False)
    off = RetrievalService(settings, embedder=HashingEmbedder())
    off.warm_up()
    on = RetrievalService(
        settings.model_copy(update={"path_field": settings.path_field.model_copy(update={"enabled": True})}),
        embedder=HashingEmbedder(),
    )
    on.warm_up()
    assert "sites/zanzibar-office.md" not in _sources(off, "zanzibar", 1)
    assert _sources(on, "zanzibar", 1) == ["sites/zanzibar-office.md"]
    # A query that matches text, not paths, keeps its answer with the field on.
    assert _sources(on, "Lockbox password manager", 1) == ["it-security/passwords.md"]


def test_an_index_ingested_before_the_options_serves_them_unchanged(tmp_path: Path, corpus: Path) -> None:
    """The field and the feedback read only the stored chunks: no re-ingest, no new file, same format."""
    settings = rag_settings(tmp_path / "index")
    ingest([corpus], settings, embedder=HashingEmbedder(), progress=False)
    version = read_current(settings.index_dir)
    assert version is not None
    files_before = sorted(p.name for p in (settings.index_dir / VERSIONS_DIR / version).rglob("*"))
    both = rag_settings(
        settings.index_dir,
        path_field={"enabled": True},
        query_rewrite={"method": "prf", "below": 1.0},
    )
    service = RetrievalService(both, embedder=HashingEmbedder())
    service.warm_up()
    outcome = service.retrieve("zanzibar kitchen")
    assert outcome.chunks[0].chunk.source == "sites/zanzibar-office.md"
    assert outcome.rewritten_query is not None and outcome.rewritten_query.startswith("zanzibar kitchen ")
    assert sorted(p.name for p in (settings.index_dir / VERSIONS_DIR / version).rglob("*")) == files_before


def test_path_field_ranks_each_matching_files_chunks_by_similarity(tmp_path: Path, corpus: Path) -> None:
    settings = rag_settings(tmp_path / "index")
    ingest([corpus], settings, embedder=HashingEmbedder(), progress=False)
    snapshot = load_current(settings.index_dir)
    index = PathFieldIndex(snapshot.chunks)
    query = "travel receipts"
    vector = HashingEmbedder().embed_query(query)
    ranking = index.search(query, vector, snapshot.embeddings, files=2, chunks_per_file=2)
    sources = [snapshot.chunks[row].source for row, _ in ranking]
    assert sources == ["expenses/travel.md", "expenses/travel.md"]  # no other path holds "travel"
    best = snapshot.chunks[ranking[0][0]]
    assert "Receipts" in best.heading_path or "receipts" in best.text.lower()
    with pytest.raises(ValueError, match="files"):
        index.search(query, vector, snapshot.embeddings, files=0, chunks_per_file=1)


def test_fusion_weighs_an_extra_ranking() -> None:
    dense, sparse = [(1, 0.9), (2, 0.8)], [(1, 5.0), (2, 4.0)]
    assert fuse(dense, sparse, mode="rrf")[0][0] == 1
    assert fuse(dense, sparse, mode="rrf", extra=[([(2, 1.0)], 3.0)])[0][0] == 2
    assert fuse(dense, sparse, mode="rrf", extra=[([(2, 1.0)], 0.01)])[0][0] == 1
    assert fuse(dense, sparse, mode="weighted", extra=[([(2, 3.0), (1, 1.0)], 1.5)])[0][0] == 2
    assert (
        fuse(dense, sparse, mode="dense", extra=[([(2, 1.0)], 3.0)])[0][0] == 1
    )  # single-list modes ignore it


def _chunk(source: str, heading: tuple[str, ...], text: str = "body") -> Chunk:
    return Chunk(chunk_id=source + "/".join(heading), source=source, text=text, heading_path=heading)


def test_expansion_terms_come_from_headings_and_paths_weighted_by_rank_and_skip_query_words() -> None:
    feedback = [
        _chunk("engineering/dev/pull-requests.md", ("Pull requests", "Reviews")),
        _chunk("engineering/dev/code-review.md", ("Code review",)),
        _chunk("company/values.md", ("Values",)),
    ]
    assert feedback_text(feedback[0]) == "Pull requests > Reviews engineering dev pull requests"
    terms = expansion_terms("how many reviewers before I merge", feedback, terms=4, tokenizer=Bm25Tokenizer())
    assert "reviews" not in terms and "review" not in terms  # same stem as "reviewers"
    assert terms[:2] == ["pull", "requests"]  # twice in the top chunk, which also ranks first
    assert "engineering" in terms and "values" not in terms  # the third chunk ranks too low for 4 terms
    assert expand_query("q", terms[:2]) == "q pull requests"
    assert expand_query("q", []) == "q"
    with pytest.raises(ValueError, match="terms must be > 0"):
        expansion_terms("q", feedback, terms=0, tokenizer=Bm25Tokenizer())


def test_prf_fires_only_below_the_threshold(tmp_path: Path, corpus: Path) -> None:
    settings = rag_settings(tmp_path / "index", query_rewrite={"method": "prf"})
    ingest([corpus], settings, embedder=HashingEmbedder(), progress=False)
    snapshot = load_current(settings.index_dir)
    query = "how much is the meal allowance when abroad"
    vector = HashingEmbedder().embed_query(query)
    params = RetrievalParams.from_settings(settings)
    best_cosine = rank_chunks(snapshot, query, vector, replace(params, query_rewrite="off")).max_dense_score
    below = rank_chunks(snapshot, query, vector, replace(params, rewrite_below=best_cosine + 0.01))
    above = rank_chunks(snapshot, query, vector, replace(params, rewrite_below=best_cosine - 0.01))
    off = rank_chunks(snapshot, query, vector, replace(params, query_rewrite="off", rewrite_below=1.0))
    assert below.rewritten_query is not None and below.rewritten_query.startswith(query + " ")
    assert below.rewrite_ms > 0
    assert above.rewritten_query is None and above.rewrite_ms == 0
    assert off.rewritten_query is None


def test_settings_validate_and_read_env(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = load_settings().rag
    assert (defaults.path_field.enabled, defaults.query_rewrite.method) == (False, "off")
    monkeypatch.setenv("HYBRID_RAG__QUERY_REWRITE__METHOD", "prf")
    monkeypatch.setenv("HYBRID_RAG__PATH_FIELD__ENABLED", "true")
    settings = load_settings(rag={"query_rewrite": {"below": 0.4}})
    assert (settings.rag.query_rewrite.method, settings.rag.query_rewrite.below) == ("prf", 0.4)
    assert settings.rag.path_field.enabled
    params = RetrievalParams.from_settings(settings.rag)
    assert (params.path_field, params.query_rewrite, params.rewrite_below) == (True, "prf", 0.4)
    for bad in (
        {"query_rewrite": {"method": "llm"}},
        {"path_field": {"weight": 0}},
        {"query_rewrite": {"terms": 0}},
    ):
        with pytest.raises(ConfigError, match="rag"):
            load_settings(rag=bad)
    with pytest.raises(ValueError, match="path_files must be > 0"):
        RetrievalParams(path_files=0)


def test_a_bare_yaml_off_is_the_off_method(tmp_path: Path) -> None:
    config = tmp_path / "s.yaml"
    config.write_text("rag:\n  query_rewrite:\n    method: off\n", encoding="utf-8")
    assert load_settings(config).rag.query_rewrite.method == "off"
