"""Build the generator's LoRA training data from the handbook: house-style behaviour and corpus knowledge.

Three kinds of chat examples, all carrying the system prompt the `tuned` pipeline sends (tuned.j2), so the
adapter learns exactly the conversation it will serve:

- knowledge: question/answer pairs drawn from corpus facts. Every sentence, bullet or table row holding a
  number, an amount or a tool name becomes one fact; its value is masked into a question with a template
  ("You may carry up to how many unused days into the next year?") and the answer repeats the fact and names
  the document ("... Source: Vacation and Time Off."). FAQ entries are taken as written.
- refusal: out-of-scope requests (a seeded sample of the router's out_of_scope training texts) answered with
  refusal.j2's text word for word.
- direct: a small hand-written set (corpus/tuned/behaviour_direct.jsonl) of short answers to general tasks.

A seeded share of the facts (all their phrasings) is held out entirely (`heldout.jsonl`, with the masked
value as `expected`), so evaluation can tell recalled training facts from unseen ones. Writes are atomic
(services/core/atomic.py); the same inputs and seed give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.core.atomic import atomic_write, atomic_writer
from services.core.settings import PromptSettings
from services.llm.prompts import PromptLibrary

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO_ROOT / "corpus" / "handbook"
DEFAULT_OUT = REPO_ROOT / "corpus" / "tuned"
DEFAULT_BEHAVIOUR = REPO_ROOT / "corpus" / "tuned" / "behaviour_direct.jsonl"
DEFAULT_ROUTER_DATA = REPO_ROOT / "corpus" / "router" / "train.jsonl"
OUT_OF_SCOPE_LABELS = ("out_of_scope", "oos")
SOURCE_MARKER = "Source:"
MAX_FACT_WORDS = 45

# The handbook's recurring internal tool names (corpus/README.md): a bold tool name is a fact worth asking.
TOOL_NAMES = frozenset(
    "Harbor Scout Orbit Learnloop Ledgerly Waypoint Relay Commons Helm Globehand Keyward Atlas".split()
)
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
_NUMERIC = re.compile(
    r"(?:USD|EUR)\s?[\d,.]+(?:\s?(?:million|k))?"
    r"|[$€]\s?[\d,.]+"
    r"|\d[\d,.]*\s?%"
    rf"|\d{{1,2}}\s(?:{_MONTHS})"
    r"|(?<![\w-])\d[\d,.]*(?:\s(?:working|business|calendar|consecutive|unused|full|paid))?"
    r"\s(?:minutes?|hours?|days?|weeks?|months?|years?|times|people|employees|nights?|miles?|km|weeks')\b"
    r"|(?<![\w-])\d[\d,.]*(?:st|nd|rd|th)?\b(?![:.]\d)"
)
_UNITS = frozenset(
    "minutes hours days weeks months years times people employees working business calendar consecutive "
    "unused paid full".split()
)
_QUESTION_TEMPLATES = (
    "{q}",
    "Per the {title} policy, {q_lower}",
    "{title}: {q}",
    "Quick question: {q_lower}",
)


@dataclass(frozen=True, slots=True)
class Fact:
    """One question/answer pair from the corpus; `key` groups the phrasings of one fact for splitting."""

    key: str
    source: str
    title: str
    question: str
    answer: str
    expected: tuple[str, ...]


# --------------------------------------------------------------------------- markdown -> facts


def _clean(text: str) -> str:
    text = _BOLD.sub(r"\1", text)
    text = re.sub(r"(?<!\w)\*(\S(?:.*?\S)?)\*(?!\w)", r"\1", text)  # *italic*
    text = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", text)  # [link](target)
    text = text.replace("`", "")
    return re.sub(r"\s+", " ", text).strip()


def _split_sentences(paragraph: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z*])", paragraph) if s.strip()]


def _wh_phrase(value: str) -> str:
    """The question words that replace a masked value ("25 working days" -> "how many working days")."""
    plain = _clean(value)
    if re.match(r"^(?:USD|EUR|[$€])", plain) or re.search(r"\d\s?(?:USD|EUR)$", plain):
        return "how much"
    if plain.endswith("%"):
        return "what percentage"
    if re.search(rf"\b(?:{_MONTHS})\b", plain):
        return "which date"
    match = re.match(r"^\d[\d,.]*\s+(.+)$", plain)
    if match and match.group(1).split()[0] in _UNITS:
        return f"how many {match.group(1)}"
    if re.fullmatch(r"\d[\d,.]*", plain):
        return "how many"
    if plain in TOOL_NAMES:
        return "which tool"
    return "what"


def _fact_value(raw: str) -> str | None:
    """The span of a raw (markdown) sentence to ask about: a bold number or tool, else a numeric span."""
    for match in _BOLD.finditer(raw):
        inner = match.group(1)
        if any(ch.isdigit() for ch in inner) or inner in TOOL_NAMES:
            return match.group(0)
    numeric = _NUMERIC.search(_clean(raw))
    return numeric.group(0) if numeric else None


def _question_from_sentence(raw: str, value: str, title: str, rng: random.Random) -> str | None:
    masked_raw = raw.replace(value, f"\x00{_wh_phrase(value)}\x00", 1)
    masked = (
        _clean(masked_raw) if value.startswith("**") else _clean(raw).replace(value, _wh_phrase(value), 1)
    )
    masked = masked.replace("\x00", "")
    if masked == _clean(raw):
        return None
    q = re.sub(r"[.:;!]+$", "", masked).strip() + "?"
    q_lower = q[0].lower() + q[1:] if not q[:2].isupper() else q
    template = rng.choice(_QUESTION_TEMPLATES)
    return template.format(q=q, q_lower=q_lower, title=title)


def _answer(text: str, title: str) -> str:
    text = text.rstrip()
    if text and text[-1] not in ".!?":
        text += "."
    return f"{text} {SOURCE_MARKER} {title}."


def _table_facts(
    rows: list[list[str]], title: str, heading: str, key_prefix: str
) -> Iterator[tuple[str, str, str, str]]:
    """(key, question, answer, expected) per data row of a markdown table with a header."""
    if len(rows) < 2:
        return
    header = [_clean(c) for c in rows[0]]
    for index, row in enumerate(rows[1:]):
        cells = [_clean(c) for c in row]
        if len(cells) != len(header) or len(cells) < 2 or not cells[0]:
            continue
        values = [c for c in cells[1:] if any(ch.isdigit() for ch in c) or c in TOOL_NAMES]
        if not values:
            continue
        column = header[-1].lower() or heading.lower()
        question = f"{title}: what is the {column} for {cells[0]}?"
        details = "; ".join(f"{h.lower()} {c}" for h, c in zip(header[1:], cells[1:], strict=True) if c)
        yield f"{key_prefix}#t{index}", question, _answer(f"{cells[0]}: {details}", title), values[-1]


def _units_of(markdown: str) -> Iterator[tuple[str, str, list[list[str]] | None]]:
    """(heading, raw text, table rows or None) for each sentence, bullet, FAQ entry and table."""
    heading = ""
    table: list[list[str]] = []
    for line in [*markdown.splitlines(), ""]:
        stripped = line.strip()
        if stripped.startswith("|"):
            cells = [c.strip() for c in stripped.strip("|").split("|")]
            if not all(re.fullmatch(r":?-{2,}:?", c) for c in cells):
                table.append(cells)
            continue
        if table:
            yield heading, "", table
            table = []
        if not stripped or stripped.startswith("# "):
            continue
        if stripped.startswith("#"):
            heading = _clean(stripped.lstrip("#"))
            continue
        bullet = re.match(r"^(?:[-*]|\d+\.)\s+(.*)$", stripped)
        if bullet:
            yield heading, bullet.group(1), None
            continue
        if stripped.startswith("**") and "?**" in stripped:  # an FAQ entry: **Question?** Answer.
            yield heading, stripped, None
            continue
        for sentence in _split_sentences(stripped):
            yield heading, sentence, None


def facts_from_document(path: Path, corpus_dir: Path, rng: random.Random) -> list[Fact]:
    markdown = path.read_text(encoding="utf-8")
    title_match = re.search(r"^# (.+)$", markdown, flags=re.MULTILINE)
    title = _clean(title_match.group(1)) if title_match else path.stem.replace("-", " ").title()
    source = path.relative_to(corpus_dir).as_posix()
    facts: list[Fact] = []
    for index, (heading, raw, table) in enumerate(_units_of(markdown)):
        key = f"{source}#{index}"
        if table is not None:
            for row_key, row_question, row_answer, row_value in _table_facts(table, title, heading, key):
                facts.append(Fact(row_key, source, title, row_question, row_answer, (row_value,)))
            continue
        faq = re.match(r"^\*\*(.+?\?)\*\*\s*(.+)$", raw)
        if faq:
            answer_text = " ".join(_split_sentences(_clean(faq.group(2)))[:2])
            faq_value = _fact_value(faq.group(2))
            expected = (_clean(faq_value),) if faq_value else ()
            facts.append(
                Fact(key, source, title, _clean(faq.group(1)), _answer(answer_text, title), expected)
            )
            continue
        if len(_clean(raw).split()) > MAX_FACT_WORDS or raw.rstrip().endswith(":"):  # lead-in to a list
            continue
        value = _fact_value(raw)
        if value is None:
            continue
        question = _question_from_sentence(raw, value, title, rng)
        if question is None:
            continue
        facts.append(Fact(key, source, title, question, _answer(_clean(raw), title), (_clean(value),)))
    return facts


# --------------------------------------------------------------------------- behaviour


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def out_of_scope_requests(router_data: Path, count: int, rng: random.Random) -> list[str]:
    texts = sorted(
        {str(r["text"]) for r in _read_jsonl(router_data) if r.get("label") in OUT_OF_SCOPE_LABELS}
    )
    rng.shuffle(texts)
    return texts[:count]


def tuned_system_prompt(prompts: PromptLibrary | None = None, system_prompt: str | None = None) -> str:
    """The system message the `tuned` pipeline sends: training must see the same conversation."""
    library = prompts or PromptLibrary()
    base = system_prompt if system_prompt is not None else PromptSettings().system_prompt
    return library.render_block("tuned", "system", system_prompt=base)


def refusal_text(prompts: PromptLibrary | None = None) -> str:
    return (prompts or PromptLibrary()).render_block("refusal", "answer")


def chat_example(
    system: str, question: str, answer: str, *, kind: str, source: str = "", expected: Sequence[str] = ()
) -> dict[str, Any]:
    return {
        "id": hashlib.sha256(f"{kind}|{question}".encode()).hexdigest()[:12],
        "kind": kind,
        "source": source,
        "expected": list(expected),
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ],
    }


# --------------------------------------------------------------------------- writing


def write_jsonl_atomic(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write one JSON object per line, atomically; returns the number of rows."""
    count = 0
    with atomic_writer(path) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            count += 1
    return count


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(payload, indent=1, sort_keys=True) + "\n")


def build_generator_data(
    corpus_dir: Path = DEFAULT_CORPUS,
    out_dir: Path = DEFAULT_OUT,
    *,
    seed: int = 7,
    heldout_fraction: float = 0.1,
    val_fraction: float = 0.08,
    refusals: int = 60,
    behaviour_file: Path | None = DEFAULT_BEHAVIOUR,
    router_data: Path | None = DEFAULT_ROUTER_DATA,
    system_prompt: str | None = None,
) -> dict[str, Any]:
    """Write train.jsonl, val.jsonl, heldout.jsonl and manifest.json under `out_dir`; returns the manifest."""
    if not corpus_dir.is_dir():
        raise ValueError(f"corpus_dir must be a folder, got {corpus_dir}")
    for name, fraction in (("heldout_fraction", heldout_fraction), ("val_fraction", val_fraction)):
        if not 0 <= fraction < 0.5:
            raise ValueError(f"{name} must be in [0, 0.5), got {fraction}")
    if refusals < 0:
        raise ValueError(f"refusals must be >= 0, got {refusals}")
    rng = random.Random(seed)
    prompts = PromptLibrary()
    system = tuned_system_prompt(prompts, system_prompt)

    # data: facts per document, grouped by fact so every phrasing of a held-out fact stays out of training
    facts: list[Fact] = []
    for path in sorted(corpus_dir.rglob("*.md")):
        facts.extend(facts_from_document(path, corpus_dir, rng))
    if not facts:
        raise ValueError(f"no facts found in {corpus_dir} (expected markdown with numbers, amounts or tools)")
    by_question: dict[str, Fact] = {}
    for fact in facts:
        by_question.setdefault(fact.question, fact)  # the same question twice would teach two answers
    unique = list(by_question.values())
    keys = sorted({f.key for f in unique})
    rng.shuffle(keys)
    askable = [k for k in keys if any(f.expected for f in unique if f.key == k)]
    heldout_keys = set(askable[: round(len(keys) * heldout_fraction)])

    knowledge = [
        chat_example(system, f.question, f.answer, kind="knowledge", source=f.source, expected=f.expected)
        for f in unique
        if f.key not in heldout_keys
    ]
    heldout = [
        chat_example(system, f.question, f.answer, kind="knowledge", source=f.source, expected=f.expected)
        for f in unique
        if f.key in heldout_keys
    ]
    refusal = refusal_text(prompts)
    behaviour = [
        chat_example(system, text, refusal, kind="refusal")
        for text in (out_of_scope_requests(router_data, refusals, rng) if router_data else [])
    ]
    if behaviour_file is not None:
        behaviour += [
            chat_example(system, str(r["question"]), str(r["answer"]), kind="direct")
            for r in _read_jsonl(behaviour_file)
        ]

    # split: validation is a seeded share of every kind, so its loss covers style and knowledge alike
    train: list[dict[str, Any]] = []
    val: list[dict[str, Any]] = []
    for group in (knowledge, behaviour):
        shuffled = list(group)
        rng.shuffle(shuffled)
        cut = round(len(shuffled) * val_fraction)
        val += shuffled[:cut]
        train += shuffled[cut:]
    rng.shuffle(train)

    counts = {
        "train": write_jsonl_atomic(out_dir / "train.jsonl", train),
        "val": write_jsonl_atomic(out_dir / "val.jsonl", val),
        "heldout": write_jsonl_atomic(out_dir / "heldout.jsonl", heldout),
    }
    kinds: dict[str, int] = {}
    for row in train:
        kinds[row["kind"]] = kinds.get(row["kind"], 0) + 1
    manifest: dict[str, Any] = {
        "seed": seed,
        "corpus_documents": len(list(corpus_dir.rglob("*.md"))),
        "facts": len({f.key for f in unique}),
        "heldout_facts": len(heldout_keys),
        "counts": counts,
        "train_kinds": dict(sorted(kinds.items())),
        "system_prompt_sha256": hashlib.sha256(system.encode()).hexdigest()[:16],
    }
    write_json_atomic(out_dir / "manifest.json", manifest)
    logger.info("generator data: %s", manifest)
    return manifest


if __name__ == "__main__":
    import sys

    logging.basicConfig(level=logging.INFO)
    result = build_generator_data()
    sys.stdout.write(json.dumps(result) + "\n")
