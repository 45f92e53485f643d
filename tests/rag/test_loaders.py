from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from services.core.errors import RetrievalError
from services.rag.loaders import load_corpus

pytestmark = pytest.mark.unit


def make_pdf(path: Path, text: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plt.figure()
    figure.text(0.1, 0.5, text)
    figure.savefig(path, format="pdf")
    plt.close(figure)


def test_every_format_is_read_with_relative_posix_sources(tmp_path: Path) -> None:
    root = tmp_path / "kb"
    (root / "sub").mkdir(parents=True)
    (root / "a.md").write_text("# Alpha\n\nmarkdown body", encoding="utf-8")
    (root / "sub" / "b.txt").write_text("plain body", encoding="utf-8")
    (root / "sub" / "c.html").write_text(
        "<html><head><title>Gamma page</title><style>p{}</style></head>"
        "<body><h2>Part</h2><p>html body</p><script>var x;</script></body></html>",
        encoding="utf-8",
    )
    make_pdf(root / "sub" / "d.pdf", "Quarterly revenue grew 12 percent")
    result = load_corpus([root])
    by_source = {doc.source: doc for doc in result.documents}
    assert set(by_source) == {"a.md", "sub/b.txt", "sub/c.html", "sub/d.pdf"}
    assert by_source["sub/c.html"].title == "Gamma page"
    assert "## Part" in by_source["sub/c.html"].text and "html body" in by_source["sub/c.html"].text
    assert "var x" not in by_source["sub/c.html"].text
    assert "Quarterly revenue grew 12 percent" in by_source["sub/d.pdf"].text
    assert result.files == 4 and result.skipped == []


def test_binary_and_unsupported_files_are_skipped_and_named(tmp_path: Path, caplog) -> None:
    (tmp_path / "ok.md").write_text("fine", encoding="utf-8")
    (tmp_path / "blob.txt").write_bytes(b"\x00\x01\x02binary")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    with caplog.at_level(logging.WARNING):
        result = load_corpus([tmp_path])
    assert [doc.source for doc in result.documents] == ["ok.md"]
    assert sorted(result.skipped) == ["blob.txt", "broken.pdf", "image.png", "latin1.txt"]
    assert "skipped 4" in caplog.text and "blob.txt" in caplog.text


def test_nothing_readable_raises(tmp_path: Path) -> None:
    (tmp_path / "x.bin").write_bytes(b"\x00")
    with pytest.raises(RetrievalError, match="no readable documents"):
        load_corpus([tmp_path])


def test_missing_root_raises(tmp_path: Path) -> None:
    with pytest.raises(RetrievalError, match="does not exist"):
        load_corpus([tmp_path / "nope"])


def test_several_roots_prefix_sources_with_the_root_name(tmp_path: Path) -> None:
    for name in ("handbook", "faq"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "index.md").write_text(f"{name} body", encoding="utf-8")
    result = load_corpus([tmp_path / "handbook", tmp_path / "faq"])
    assert sorted(doc.source for doc in result.documents) == ["faq/index.md", "handbook/index.md"]


def test_beir_corpus_rows_become_documents(tmp_path: Path) -> None:
    rows = [{"_id": "d1", "title": "T1", "text": "first"}, {"_id": "d2", "title": "", "text": "second"}]
    (tmp_path / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    result = load_corpus([tmp_path / "corpus.jsonl"])
    assert [(d.source, d.title, d.text, d.kind) for d in result.documents] == [
        ("d1", "T1", "first", "beir"),
        ("d2", "", "second", "beir"),
    ]
