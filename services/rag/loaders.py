"""Read a corpus from disk into plain documents: Markdown, text, HTML, PDF and BEIR `corpus.jsonl`.

`source` is the path relative to the ingested root with `/` separators, so it means the same thing on every
machine and in every index version. When several roots are ingested together, each source is prefixed by
its root's folder name (`handbook/benefits/time-off.md`) so two roots cannot produce the same source.
Unreadable or binary files are skipped, counted and named in one warning rather than failing the ingest.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from services.core.errors import RetrievalError

logger = logging.getLogger(__name__)

DocumentKind = Literal["markdown", "text", "html", "pdf", "beir"]

SUFFIX_KINDS: dict[str, DocumentKind] = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".mdx": "markdown",
    ".txt": "text",
    ".text": "text",
    ".rst": "text",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
}
BEIR_CORPUS_NAME = "corpus.jsonl"


@dataclass(frozen=True, slots=True)
class Document:
    source: str
    text: str
    kind: DocumentKind
    # Empty: the chunker derives the title (Markdown H1, else the file name).
    title: str = ""


@dataclass(frozen=True, slots=True)
class LoadResult:
    documents: list[Document]
    files: int
    skipped: list[str] = field(default_factory=list)


class UnreadableFile(Exception):
    """A file that cannot be turned into text (binary, bad encoding, broken PDF)."""


def _looks_binary(data: bytes) -> bool:
    return b"\x00" in data[:8192]


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if _looks_binary(data):
        raise UnreadableFile("binary content")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableFile(f"not UTF-8: {exc}") from exc


def _html_to_text(html: str) -> tuple[str, str]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    if soup.title:
        soup.title.decompose()
    # Headings become Markdown headings so the heading-aware chunker keeps HTML sections apart too.
    for level in range(1, 7):
        for heading in soup.find_all(f"h{level}"):
            heading.replace_with(f"\n\n{'#' * level} {heading.get_text(' ', strip=True)}\n\n")
    lines = (line.strip() for line in soup.get_text("\n").splitlines())
    text = "\n".join(lines)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip(), title


def _pdf_to_text(path: Path) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(path)
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, OSError, ValueError, KeyError, TypeError) as exc:
        raise UnreadableFile(f"unreadable PDF: {exc}") from exc
    return "\n\n".join(page.strip() for page in pages if page.strip())


def read_document(path: Path, source: str) -> list[Document]:
    """One file to documents (a BEIR corpus gives one document per line). Raises UnreadableFile."""
    if path.name == BEIR_CORPUS_NAME:
        return list(read_beir_corpus(path))
    kind = SUFFIX_KINDS.get(path.suffix.lower())
    if kind is None:
        raise UnreadableFile(f"unsupported file type {path.suffix!r}")
    if kind == "pdf":
        return [Document(source=source, text=_pdf_to_text(path), kind="pdf")]
    text = _read_text(path)
    if kind == "html":
        body, title = _html_to_text(text)
        return [Document(source=source, text=body, kind="html", title=title)]
    return [Document(source=source, text=text, kind=kind)]


def read_beir_corpus(path: Path) -> Iterator[Document]:
    """BEIR rows `{"_id", "title", "text"}`; the source is the `_id`, which qrels refer to."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                doc_id = str(row["_id"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise UnreadableFile(f"line {number} is not a BEIR corpus row: {exc}") from exc
            yield Document(
                source=doc_id, text=str(row.get("text") or ""), kind="beir", title=str(row.get("title") or "")
            )


def candidate_files(root: Path) -> list[Path]:
    """Every file under `root` (a folder or one file), hidden ones excluded, in a stable order."""
    if root.is_file():
        return [root]
    return sorted(
        path
        for path in root.rglob("*")
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts)
    )


def load_corpus(roots: Sequence[Path]) -> LoadResult:
    """Load every readable document under `roots` (folders or single files).

    Raises RetrievalError when a root does not exist, two roots share a folder name, or nothing readable
    was found.
    """
    if not roots:
        raise RetrievalError("no corpus paths given")
    prefix_sources = len(roots) > 1
    names = [Path(root).resolve().name for root in roots]
    if prefix_sources and len(set(names)) != len(names):
        raise RetrievalError(f"corpus roots must have distinct folder names, got {names}")
    documents: list[Document] = []
    skipped: list[str] = []
    files = 0
    for root, name in zip(roots, names, strict=True):
        root = Path(root)
        if not root.exists():
            raise RetrievalError(f"corpus path does not exist: {root}")
        base = root.parent if root.is_file() else root
        for path in candidate_files(root):
            relative = path.relative_to(base).as_posix()
            source = f"{name}/{relative}" if prefix_sources and root.is_dir() else relative
            try:
                loaded = read_document(path, source)
            except (UnreadableFile, OSError) as exc:
                skipped.append(source)
                logger.debug("skipping %s: %s", path, exc)
                continue
            files += 1
            documents.extend(doc for doc in loaded if doc.text.strip())
    if skipped:
        shown = ", ".join(skipped[:10]) + (f" and {len(skipped) - 10} more" if len(skipped) > 10 else "")
        logger.warning("skipped %d unreadable or unsupported files: %s", len(skipped), shown)
    if not documents:
        raise RetrievalError(
            f"no readable documents under {[str(root) for root in roots]} ({len(skipped)} files skipped)"
        )
    return LoadResult(documents=documents, files=files, skipped=skipped)
