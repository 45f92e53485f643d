"""`hybridllm eval scaffold`: draft e2e eval questions from a corpus's headings, for a person to correct.

Knowledge questions come from the headings and bold FAQ questions of the corpus's markdown files (the
question builder of build_router_data.py); `direct` and `out_of_scope` rows from the router's packaged
hand-written examples. Every row is marked `"draft": true` with a note on what to check, and
`answer_substrings` stays empty: the section's first sentence is only a `suggested_answer`, never ground
truth. `hybridllm eval e2e` refuses drafts unless --allow-drafts.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.cli import Subparsers, add_command, emit, existing_dir
from services.core.atomic import atomic_write
from training.build_router_data import (
    DEFAULT_SOURCE,
    Heading,
    clean_heading,
    find_proper_nouns,
    heading_questions,
    iter_headings,
    read_lines,
)

_HEADING_LINE = re.compile(r"^#{1,4}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_FENCED_CODE = re.compile(r"^\s*```.*?^\s*```[^\n]*$", re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MARKUP = re.compile(r"[*_`]+|<[^>]+>")
_LIST_MARK = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")
SUGGESTION_CHARS = 240

KNOWLEDGE_NOTE = (
    "Draft from the heading {heading!r} of {file}. Check that the question reads as a user would ask it, "
    "that gold_files lists every file that answers it, and write answer_substrings: short exact phrases of "
    "the right answer (suggested_answer is the section's first sentence, unchecked). Then delete 'draft'."
)
PACKAGED_NOTE = (
    "Draft from the router's packaged {route} examples. Check that your users would send it and that it "
    "should be {handled}. Then delete 'draft'."
)
HANDLED = {"direct": "answered without your documents", "out_of_scope": "refused"}


@dataclass(frozen=True, slots=True)
class DraftQuestion:
    question: str
    file: str
    heading: str
    suggested_answer: str


def _plain(line: str) -> str:
    return " ".join(_MARKUP.sub("", _LINK.sub(r"\1", _LIST_MARK.sub("", line))).split())


def first_sentences(path: Path) -> dict[str, str]:
    """The first sentence of body text under each heading of a markdown file, keyed by the cleaned heading
    (the first section of a repeated heading wins)."""
    text = _FENCED_CODE.sub("", path.read_text(encoding="utf-8", errors="replace"))
    parts = _HEADING_LINE.split(text)  # [before, heading, body, heading, body, ...]
    found: dict[str, str] = {}
    for heading, body in zip(parts[1::2], parts[2::2], strict=True):
        key = clean_heading(heading)
        lines = (_plain(line) for line in body.splitlines())
        first = next((line for line in lines if line and not line.startswith("|")), "")
        if first and key not in found:
            found[key] = _SENTENCE_END.split(first, maxsplit=1)[0][:SUGGESTION_CHARS]
    return found


def corpus_drafts(corpus: Path, rng: random.Random) -> dict[str, list[DraftQuestion]]:
    """Draft questions per file (relative path), from headings and FAQ questions, in file order."""
    files = sorted(p for p in corpus.rglob("*.md") if p.is_file())
    if not files:
        raise ValueError(f"no markdown files under {corpus}: the scaffold reads headings of .md files")
    proper_nouns = find_proper_nouns(p.read_text(encoding="utf-8", errors="replace") for p in files)
    drafts: dict[str, list[DraftQuestion]] = defaultdict(list)
    for path in files:
        rel = path.relative_to(corpus).as_posix()
        sentences = first_sentences(path)
        for item in iter_headings(path, corpus):
            if isinstance(item, Heading):
                questions = heading_questions(item, rng, 1, proper_nouns)[:1]
                heading = item.text
            else:
                questions, heading = [item[1]], item[1]
            for question in questions:
                drafts[rel].append(DraftQuestion(question, rel, heading, sentences.get(heading, "")))
    return drafts


def _round_robin(
    drafts: dict[str, list[DraftQuestion]], n: int, rng: random.Random
) -> Iterator[DraftQuestion]:
    """Up to `n` drafts, one file after another, so that a cap spreads over the documents."""
    queues = [list(drafts[f]) for f in sorted(drafts)]
    for queue in queues:
        rng.shuffle(queue)
    rng.shuffle(queues)
    taken = 0
    while taken < n and any(queues):
        for queue in queues:
            if queue and taken < n:
                taken += 1
                yield queue.pop()


def scaffold_rows(
    corpus: Path, *, n: int, n_direct: int, n_oos: int, seed: int, examples_dir: Path = DEFAULT_SOURCE
) -> list[dict[str, Any]]:
    """Draft e2e rows: `n` knowledge questions from the corpus, then packaged direct and out-of-scope ones."""
    for name, value in (("n", n), ("n_direct", n_direct), ("n_oos", n_oos)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for number, draft in enumerate(_round_robin(corpus_drafts(corpus, rng), n, rng), start=1):
        rows.append(
            {
                "id": f"draft-rag-{number:03d}",
                "route": "rag",
                "question": draft.question,
                "gold_files": [draft.file],
                "answer_substrings": [],
                "suggested_answer": draft.suggested_answer,
                "draft": True,
                "note": KNOWLEDGE_NOTE.format(heading=draft.heading, file=draft.file),
            }
        )
    for route, count in (("direct", n_direct), ("out_of_scope", n_oos)):
        source = examples_dir / f"{route}.txt"
        if not source.is_file():
            raise ValueError(f"packaged {route} examples not found: {source}")
        pool = read_lines(source)
        for number, question in enumerate(rng.sample(pool, k=min(count, len(pool))), start=1):
            rows.append(
                {
                    "id": f"draft-{route.replace('_', '-')}-{number:03d}",
                    "route": route,
                    "question": question,
                    "gold_files": [],
                    "answer_substrings": [],
                    "draft": True,
                    "note": PACKAGED_NOTE.format(route=route, handled=HANDLED[route]),
                }
            )
    return rows


# ----------------------------------------------------------------------------- command


def cmd_eval_scaffold(args: argparse.Namespace) -> None:
    out: Path = args.out
    if out.exists() and not args.force:
        raise ValueError(f"{out} exists (it may hold your corrections): pass --force to replace it")
    rows = scaffold_rows(args.corpus, n=args.n, n_direct=args.n_direct, n_oos=args.n_oos, seed=args.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, "".join(json.dumps(row) + "\n" for row in rows))
    counts = {
        route: sum(1 for r in rows if r["route"] == route) for route in ("rag", "direct", "out_of_scope")
    }
    emit({"out": str(out), "rows": len(rows), **counts, "seed": args.seed, "draft": True})


def _count(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value!r}")
    return int(value)


def register_eval_scaffold(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers,
        "scaffold",
        cmd_eval_scaffold,
        "draft e2e eval questions from a corpus, to correct by hand",
    )
    parser.add_argument("--corpus", type=existing_dir, required=True, help="folder of markdown documents")
    parser.add_argument("--out", type=Path, required=True, help="JSONL file to write (refused if it exists)")
    parser.add_argument("--n", type=_count, default=30, help="knowledge questions to draft")
    parser.add_argument("--n-direct", type=_count, default=5, help="packaged direct examples to add")
    parser.add_argument("--n-oos", type=_count, default=5, help="packaged out-of-scope examples to add")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--force", action="store_true", help="replace an existing --out file")
    return parser
