"""Split documents into chunks sized in tokens of the embedder's tokenizer.

Markdown is split by headings first, so a chunk never spans two sections; each chunk keeps the document
title and its heading chain. The heading chain is prepended to the text that is embedded (not to the text
shown to the generator): a section body like "Submit it within 30 days." says little on its own, while
"Expenses > Travel > Receipts" tells the embedder what it is about.

Long sections are cut into windows of `chunk_tokens` with `chunk_overlap` tokens of overlap, preferring to
cut at a paragraph, a line or a sentence end; a paragraph with no break at all is cut at a token boundary.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from services.core.types import Chunk
from services.rag.loaders import Document

# (start, end) character offsets of each token of `text`, in order.
TokenSpans = Callable[[str], list[tuple[int, int]]]

_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_WORD = re.compile(r"\S+")
_SENTENCE_END = re.compile(r"[.!?][\"')\]]?\s")
HEADING_SEPARATOR = " > "
# A body shorter than this many tokens after the heading prefix would make useless chunks.
_MIN_BODY_TOKENS = 16


def whitespace_token_spans(text: str) -> list[tuple[int, int]]:
    """Fallback tokenizer for embedders without one of their own: one token per word."""
    return [match.span() for match in _WORD.finditer(text)]


@dataclass(frozen=True, slots=True)
class Section:
    heading_path: tuple[str, ...]
    body: str


def _strip_front_matter(text: str) -> tuple[str, str]:
    """Drop a leading YAML front matter block; return (text, its `title:` if any)."""
    if not text.startswith("---"):
        return text, ""
    end = text.find("\n---", 3)
    if end == -1:
        return text, ""
    block = text[3:end]
    title_match = re.search(r"^title:\s*[\"']?(.+?)[\"']?\s*$", block, flags=re.MULTILINE)
    rest = text[end + 4 :]
    return rest.split("\n", 1)[1] if "\n" in rest else "", title_match.group(1) if title_match else ""


def split_markdown_sections(text: str) -> tuple[str, list[Section]]:
    """Split Markdown into sections by ATX headings (ignoring `#` lines inside code fences).

    Returns (the first H1 or "", sections); sections with an empty body are dropped, but their heading
    stays in the path of the sections below it.
    """
    text, front_title = _strip_front_matter(text)
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    body_lines: list[str] = []
    first_h1 = ""
    fence: str | None = None

    def flush() -> None:
        body = "\n".join(body_lines).strip()
        if body:
            sections.append(Section(tuple(title for _, title in stack), body))
        body_lines.clear()

    for line in text.splitlines():
        fence_match = _FENCE.match(line)
        if fence_match:
            marker = fence_match.group(1)
            if fence is None:
                fence = marker[0] * 3
            elif marker.startswith(fence):
                fence = None
            body_lines.append(line)
            continue
        heading = _HEADING.match(line) if fence is None else None
        if heading is None:
            body_lines.append(line)
            continue
        flush()
        level, title = len(heading.group(1)), heading.group(2).strip()
        if level == 1 and not first_h1:
            first_h1 = title
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
    flush()
    return first_h1 or front_title, sections


def chunk_id_for(source: str, heading_path: Sequence[str], text: str) -> str:
    """A stable content hash: the same source, headings and text give the same id in every ingest."""
    digest = hashlib.sha256()
    for part in (source, HEADING_SEPARATOR.join(heading_path), text):
        digest.update(part.encode("utf-8"))
        digest.update(b"\x1f")
    return digest.hexdigest()[:24]


def embedding_text(chunk: Chunk) -> str:
    """What the embedder and BM25 see: heading chain (or title) on top of the chunk text."""
    context = HEADING_SEPARATOR.join(chunk.heading_path) if chunk.heading_path else chunk.title
    if context and not chunk.text.startswith(context):
        return f"{context}\n{chunk.text}"
    return chunk.text


def _cut_position(text: str, low: int, high: int) -> int:
    """The best character position in [low, high] to end a window: paragraph > line > sentence > space."""
    window = text[low:high]
    for pattern in ("\n\n", "\n"):
        found = window.rfind(pattern)
        if found > 0:
            return low + found
    sentence_ends = list(_SENTENCE_END.finditer(window))
    if sentence_ends:
        return low + sentence_ends[-1].end() - 1
    space = window.rfind(" ")
    return low + space if space > 0 else high


def split_into_windows(
    text: str, token_spans: TokenSpans, max_tokens: int, overlap: int
) -> list[tuple[str, int]]:
    """Cut `text` into (piece, token count) windows of at most `max_tokens` tokens with `overlap`."""
    if max_tokens <= 0:
        raise ValueError(f"max_tokens must be > 0, got {max_tokens}")
    spans = token_spans(text)
    if len(spans) <= max_tokens:
        return [(text.strip(), len(spans))] if text.strip() else []
    overlap = min(overlap, max_tokens // 2)
    pieces: list[tuple[str, int]] = []
    start = 0
    while start < len(spans):
        end = min(start + max_tokens, len(spans))
        if end < len(spans):
            # Search for a natural break in the second half of the window, so windows stay reasonably full.
            low = spans[start + max_tokens // 2][0]
            high = spans[end][0]
            cut = _cut_position(text, low, high)
            # First token starting at or after the cut begins the next window.
            end = next((i for i in range(start + max_tokens // 2, end + 1) if spans[i][0] >= cut), end)
            end = max(end, start + 1)
            piece = text[spans[start][0] : spans[end][0]]
        else:
            piece = text[spans[start][0] : spans[-1][1]]
        if piece.strip():
            pieces.append((piece.strip(), end - start))
        if end >= len(spans):
            break
        start = max(end - overlap, start + 1)
    return pieces


def chunk_document(
    document: Document,
    token_spans: TokenSpans,
    *,
    chunk_tokens: int = 256,
    chunk_overlap: int = 32,
) -> list[Chunk]:
    """Chunks of one document. The embedded text (heading prefix included) stays within `chunk_tokens`."""
    if chunk_tokens <= 0:
        raise ValueError(f"chunk_tokens must be > 0, got {chunk_tokens}")
    if chunk_overlap < 0 or chunk_overlap >= chunk_tokens:
        raise ValueError(f"chunk_overlap must be in [0, chunk_tokens), got {chunk_overlap}")
    if document.kind in ("markdown", "html"):
        first_h1, sections = split_markdown_sections(document.text)
    else:
        first_h1, sections = "", [Section((), document.text.strip())] if document.text.strip() else []
    title = document.title or first_h1 or PurePosixPath(document.source).stem
    chunks: list[Chunk] = []
    seen: set[str] = set()
    for section in sections:
        context = HEADING_SEPARATOR.join(section.heading_path) if section.heading_path else title
        prefix_tokens = len(token_spans(context)) + 1 if context else 0
        body_budget = max(chunk_tokens - prefix_tokens, _MIN_BODY_TOKENS)
        for piece, count in split_into_windows(section.body, token_spans, body_budget, chunk_overlap):
            chunk_id = chunk_id_for(document.source, section.heading_path, piece)
            if chunk_id in seen:
                continue
            seen.add(chunk_id)
            chunks.append(
                Chunk(
                    chunk_id=chunk_id,
                    source=document.source,
                    text=piece,
                    title=title,
                    heading_path=section.heading_path,
                    token_count=count,
                )
            )
    return chunks


def chunk_documents(
    documents: Sequence[Document],
    token_spans: TokenSpans,
    *,
    chunk_tokens: int = 256,
    chunk_overlap: int = 32,
) -> list[Chunk]:
    chunks: list[Chunk] = []
    for document in documents:
        chunks.extend(
            chunk_document(document, token_spans, chunk_tokens=chunk_tokens, chunk_overlap=chunk_overlap)
        )
    return chunks
