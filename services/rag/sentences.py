"""Split a chunk's Markdown into self-contained evidence units: sentences, list items and table rows.

A unit is what evidence selection scores and what the prompt quotes, so each one should read on its own:
- Markdown emphasis, inline code and links are reduced to their text;
- a list item under a lead-in that ends with ":" carries that lead-in ("Long service adds to it: From
  your 3rd anniversary: 26 days"), because the item alone does not say what it lists;
- a table row is written with its column headers ("Length of absence: 3-5 days; Request at least:
  2 weeks ahead");
- headings are not units; the nearest one is kept as `heading`, context for the embedder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d{1,3}[.)])\s+(.*)$")
_TABLE_ROW = re.compile(r"^\s*\|(.*)\|\s*$")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_EMPHASIS = re.compile(r"(\*\*|__|\*|_|`)(?=\S)(.+?)(?<=\S)\1")
_HTML_TAG = re.compile(r"</?[a-zA-Z][^>]*>")
_SPACES = re.compile(r"\s+")
# A sentence ends at . ! or ? followed by space and an upper-case letter, digit or quote; common
# abbreviations ("e.g.", "i.e.", "approx.") do not end one.
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[A-Z0-9\"'(\[])")
_ABBREVIATION = re.compile(r"\b(?:e\.g|i\.e|etc|approx|vs|incl|no|dept|mr|mrs|ms|dr|st|jr|sr|u\.s)\.$", re.I)
# Bump when split_units changes what it returns: unit vectors stored in an index by another version of the
# splitter no longer line up with the units, and are not used.
SPLITTER_VERSION = "1"
# A lead-in longer than this is a paragraph of its own, not a label for the list below it.
MAX_LEAD_IN_WORDS = 30


@dataclass(frozen=True, slots=True)
class TextUnit:
    """One evidence unit of a chunk. `position` orders units within the chunk (for neighbours)."""

    text: str
    position: int
    heading: str = ""


def plain_text(markdown: str) -> str:
    """Inline Markdown reduced to what a reader sees: links to their text, emphasis and code marks dropped."""
    text = _LINK.sub(r"\1", markdown)
    text = _HTML_TAG.sub(" ", text)
    for _ in range(2):  # nested emphasis (**_x_**) needs a second pass
        text = _EMPHASIS.sub(r"\2", text)
    return _SPACES.sub(" ", text).strip()


def split_sentences(paragraph: str) -> list[str]:
    """Sentences of one plain-text paragraph (abbreviation-aware)."""
    pieces: list[str] = []
    start = 0
    for match in _SENTENCE_BREAK.finditer(paragraph):
        candidate = paragraph[start : match.start()].strip()
        if _ABBREVIATION.search(candidate):
            continue
        if candidate:
            pieces.append(candidate)
        start = match.end()
    tail = paragraph[start:].strip()
    if tail:
        pieces.append(tail)
    return pieces


def _table_cells(row: str) -> list[str]:
    return [plain_text(cell) for cell in row.split("|")]


class _UnitWriter:
    def __init__(self) -> None:
        self.units: list[TextUnit] = []
        self.heading = ""

    def add(self, text: str) -> None:
        text = text.strip()
        if len(text) > 1 and any(ch.isalnum() for ch in text):
            self.units.append(TextUnit(text=text, position=len(self.units), heading=self.heading))


def split_units(markdown: str) -> list[TextUnit]:
    """The evidence units of a chunk of Markdown (or plain text), in reading order."""
    writer = _UnitWriter()
    paragraph: list[str] = []
    lead_in = ""
    header: list[str] | None = None
    in_fence = False

    def flush_paragraph() -> None:
        nonlocal lead_in
        if not paragraph:
            return
        sentences = split_sentences(plain_text(" ".join(paragraph)))
        paragraph.clear()
        for sentence in sentences:
            writer.add(sentence)
        last = sentences[-1] if sentences else ""
        lead_in = last if last.endswith(":") and len(last.split()) <= MAX_LEAD_IN_WORDS else ""

    for line in markdown.splitlines():
        if _FENCE.match(line):
            flush_paragraph()
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        if not line.strip():
            flush_paragraph()
            header = None
            continue
        heading = _HEADING.match(line)
        if heading:
            flush_paragraph()
            writer.heading, lead_in, header = plain_text(heading.group(1)), "", None
            continue
        row = _TABLE_ROW.match(line)
        if row:
            flush_paragraph()
            if _TABLE_RULE.match(line):
                continue
            cells = _table_cells(row.group(1))
            if header is None:
                header = cells
                continue
            pairs = [f"{h}: {c}" if h else c for h, c in zip(header, cells, strict=False) if c]
            writer.add("; ".join(pairs))
            continue
        item = _LIST_ITEM.match(line)
        if item:
            flush_paragraph()
            for number, sentence in enumerate(split_sentences(plain_text(item.group(1)))):
                writer.add(f"{lead_in} {sentence}" if lead_in and number == 0 else sentence)
            continue
        if paragraph or not line.startswith((" ", "\t")) or not writer.units:
            paragraph.append(line.strip())
        else:
            # An indented continuation of the previous list item.
            previous = writer.units.pop()
            writer.add(f"{previous.text} {plain_text(line)}")
    flush_paragraph()
    return writer.units


__all__ = [
    "MAX_LEAD_IN_WORDS",
    "SPLITTER_VERSION",
    "TextUnit",
    "plain_text",
    "split_sentences",
    "split_units",
]
