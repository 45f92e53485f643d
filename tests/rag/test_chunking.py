from __future__ import annotations

import pytest

from services.rag.chunking import (
    chunk_document,
    chunk_id_for,
    embedding_text,
    split_into_windows,
    split_markdown_sections,
    whitespace_token_spans,
)
from services.rag.loaders import Document

pytestmark = pytest.mark.unit


def markdown(text: str, source: str = "guide/doc.md") -> Document:
    return Document(source=source, text=text, kind="markdown")


def test_sections_follow_headings_and_keep_the_heading_chain() -> None:
    text = "# Guide\n\nIntro.\n\n## Setup\n\nStep one.\n\n### Linux\n\napt.\n"
    title, sections = split_markdown_sections(text)
    assert title == "Guide"
    assert [(s.heading_path, s.body) for s in sections] == [
        (("Guide",), "Intro."),
        (("Guide", "Setup"), "Step one."),
        (("Guide", "Setup", "Linux"), "apt."),
    ]


def test_a_chunk_never_spans_two_sections() -> None:
    doc = markdown("# T\n\n## A\n\nalpha text here\n\n## B\n\nbeta text here\n")
    chunks = chunk_document(doc, whitespace_token_spans, chunk_tokens=200, chunk_overlap=0)
    assert [c.text for c in chunks] == ["alpha text here", "beta text here"]
    assert [c.heading_path for c in chunks] == [("T", "A"), ("T", "B")]
    assert all(c.title == "T" for c in chunks)


def test_empty_sections_and_headings_without_body_make_no_chunks() -> None:
    doc = markdown("# Title\n\n## Empty\n\n## Also empty\n### Child\n\nonly body\n")
    chunks = chunk_document(doc, whitespace_token_spans, chunk_tokens=50, chunk_overlap=0)
    assert [(c.heading_path, c.text) for c in chunks] == [(("Title", "Also empty", "Child"), "only body")]


def test_document_with_only_headings_gives_no_chunks() -> None:
    assert chunk_document(markdown("# A\n## B\n"), whitespace_token_spans) == []


def test_title_falls_back_to_the_file_name() -> None:
    chunks = chunk_document(markdown("Just a paragraph.", "a/b/remote-work.md"), whitespace_token_spans)
    assert chunks[0].title == "remote-work"
    assert embedding_text(chunks[0]).startswith("remote-work\n")


def test_huge_paragraph_without_newline_is_split_within_budget_with_overlap() -> None:
    words = [f"w{i}" for i in range(1000)]
    doc = markdown("# Big\n\n" + " ".join(words))
    chunks = chunk_document(doc, whitespace_token_spans, chunk_tokens=100, chunk_overlap=10)
    assert len(chunks) > 10
    for chunk in chunks:
        assert len(whitespace_token_spans(embedding_text(chunk))) <= 100
    # Every word survives and consecutive windows overlap.
    covered = {w for c in chunks for w in c.text.split()}
    assert covered == set(words)
    first, second = chunks[0].text.split(), chunks[1].text.split()
    assert set(first) & set(second)


def test_a_single_token_longer_than_the_budget_still_terminates() -> None:
    pieces = split_into_windows("x" * 5000, lambda t: [(i, i + 1) for i in range(len(t))], 64, 8)
    assert "".join(p for p, _ in pieces).count("x") >= 5000
    assert all(count <= 64 for _, count in pieces)


def test_windows_prefer_paragraph_breaks() -> None:
    text = "\n\n".join(" ".join(f"p{p}w{i}" for i in range(30)) for p in range(4))
    pieces = split_into_windows(text, whitespace_token_spans, 70, 0)
    assert pieces[0][0].endswith("p1w29")
    assert pieces[1][0].startswith("p2w0")


def test_hash_lines_inside_code_fences_are_not_headings() -> None:
    doc = markdown("# Scripts\n\n```bash\n# not a heading\necho hi\n```\n\n~~~\n## nor this\n~~~\n")
    title, sections = split_markdown_sections(doc.text)
    assert len(sections) == 1
    assert "# not a heading" in sections[0].body and "## nor this" in sections[0].body


def test_front_matter_is_dropped_and_its_title_used() -> None:
    title, sections = split_markdown_sections('---\ntitle: "Leave policy"\ntags: [hr]\n---\nBody text.\n')
    assert title == "Leave policy"
    assert sections[0].body == "Body text."


def test_unicode_text_and_headings_survive() -> None:
    doc = markdown("# Política de férias 🌴\n\n## Überstunden\n\nMehrarbeit wird 1:1 ausgeglichen — 残業.\n")
    chunks = chunk_document(doc, whitespace_token_spans)
    assert chunks[0].heading_path == ("Política de férias 🌴", "Überstunden")
    assert "残業" in chunks[0].text


def test_chunk_ids_are_stable_and_content_addressed() -> None:
    doc = markdown("# T\n\nsame text\n")
    first = chunk_document(doc, whitespace_token_spans)[0].chunk_id
    assert chunk_document(doc, whitespace_token_spans)[0].chunk_id == first
    assert chunk_document(markdown("# T\n\nother text\n"), whitespace_token_spans)[0].chunk_id != first
    assert chunk_id_for("other.md", ("T",), "same text") != first


def test_repeated_paragraph_in_one_document_is_one_chunk() -> None:
    doc = markdown("# T\n\n## A\n\nboiler\n\n## A\n\nboiler\n")
    assert len(chunk_document(doc, whitespace_token_spans)) == 1


@pytest.mark.parametrize(("tokens", "overlap"), [(0, 0), (10, 10), (10, -1)])
def test_bad_sizes_are_rejected(tokens: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="chunk_"):
        chunk_document(markdown("x"), whitespace_token_spans, chunk_tokens=tokens, chunk_overlap=overlap)


@pytest.mark.integration
def test_chunks_fit_the_model_tokenizer(minilm) -> None:
    body = " ".join(f"Trip {i} to Lisbon requires receipts for reimbursement." for i in range(200))
    doc = markdown(f"# Expenses\n\n## Travel\n\n{body}")
    chunks = chunk_document(doc, minilm.token_spans, chunk_tokens=128, chunk_overlap=16)
    assert len(chunks) > 3
    for chunk in chunks:
        assert minilm.count_tokens(embedding_text(chunk)) <= 128 + 2  # tokenizer merges at boundaries
