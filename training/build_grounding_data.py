"""Build the `grounded` adapter's training data: answer a rag prompt by copying its answering evidence line.

The adapter is trained for a behaviour, not for knowledge. Given the prompt the `rag` pipeline sends in
evidence mode (question + quoted evidence sentences, rag.j2), the answer is the one evidence line that
answers the question, copied verbatim, or exactly rag.j2's `unanswerable` text when no line does.

How an example is made:
- questions: every corpus fact (training/build_generator_data.py: a sentence, bullet or table row holding
  a number, an amount or a tool name, its value masked into a question) gives its question as built, and
  a seeded share also a less lexical variant: without the document title, only the clause that holds the
  question words, or the question words plus part of the sentence's words.
- prompts: built by the real code. A RagPipeline (as services/pipelines/factory.py builds it, without the
  privacy context filter) plans each question against a real RetrievalService, with a stub generator; the
  prompt is `plan.messages`. The retriever is wrapped so its evidence selection can be edited before the
  pipeline renders it (lines removed, lines and blocks shuffled); everything else is the pipeline's own.
- answerable: the evidence holds the fact's line (its masked value and most of its words). The target is
  that line as the prompt shows it, without the leading "- ".
- unanswerable (~18 % of the examples, seeded): every line holding the fact, its value or one of the
  value's numbers is removed, the distractors stay; the target is rag.j2's `unanswerable` block. Half come
  from questions whose evidence held the fact (hard negatives), half from questions whose evidence missed
  it (the realistic case).
- a seeded share of the examples has its evidence lines and blocks shuffled, so the answer is not always
  first.
- split: the facts of a seeded 15 % of the handbook's files go to val.jsonl only, and evidence from those
  files is removed from every training prompt, so validation measures transfer to unseen documents.

Questions that retrieval calls irrelevant (the pipeline then answers without generating) are skipped.
Writes are atomic and the same index, corpus and seed give byte-identical files.

    python -m training.build_grounding_data --index var/index --out var/grounding-data [--seed N] [--limit N]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import json
import logging
import random
import re
import sys
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from services.core.protocols import Generator
from services.core.types import ChatMessage, GenerationParams
from services.llm.prompts import PromptLibrary
from services.pipelines.base import PipelineRequest, RequestTrace
from services.pipelines.rag import GroundingOptions, RagPipeline
from services.rag.evidence import EvidenceSelection, EvidenceUnit
from training.build_generator_data import (
    DEFAULT_CORPUS,
    SOURCE_MARKER,
    Fact,
    facts_from_document,
    write_json_atomic,
    write_jsonl_atomic,
)

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_INDEX = REPO_ROOT / "var" / "index"
DEFAULT_OUT = REPO_ROOT / "var" / "grounding-data"
LINE_PREFIX = "- "
# a line "holds" a fact when it states the fact's value and at least this share of the fact's words
MIN_ANSWER_OVERLAP = 0.6
# facts without a masked value (FAQ answers) need more of their words in the line
MIN_ANSWER_OVERLAP_NO_VALUE = 0.8
# for unanswerable examples a line that shares this much of the fact is removed even without the value
MIN_REMOVE_OVERLAP = 0.4

Kind = Literal["answerable", "unanswerable"]
_WORD = re.compile(r"[a-z0-9]+(?:[.,'][a-z0-9]+)*")
_NUMBER = re.compile(r"\d[\d,.]*\d|\d")
_STOPWORDS = frozenset(
    "a an the of to in on at by for from with and or but is are was were be been being it its this that "
    "these those as if than then so you your we our us they their them he she his her i my me do does "
    "did can may must should will would not no yes per any all each every up".split()
)
# the question words build_generator_data puts in place of a masked value (its _wh_phrase)
_WH = re.compile(
    r"\b(how many(?:(?: [\w'-]+){0,2}? (?:minutes|hours|days|weeks|months|years|times|people|employees"
    r"|nights|miles|km|weeks'))?"
    r"|how much|what percentage|which date|which tool|what)\b",
    re.IGNORECASE,
)
QUESTION_STYLES = ("no_title", "clause", "partial")


# --------------------------------------------------------------------------- text matching


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("\u00a0", " ")).strip().lower()


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(normalise(text)) if w not in _STOPWORDS}


def fact_text(fact: Fact) -> str:
    """The fact's own words: its answer without the "Source: <title>." that build_generator_data adds."""
    suffix = f" {SOURCE_MARKER} {fact.title}."
    return fact.answer[: -len(suffix)] if fact.answer.endswith(suffix) else fact.answer


def usable_fact(fact: Fact) -> bool:
    """False for a fact whose masked value is only part of a larger token ("00" of "07:00", "30" of
    "30-60-90"): its question asks about nothing a reader would ask."""
    text = fact_text(fact)
    for value in fact.expected:
        if value.isdigit() and not re.search(rf"(?<![\d:.-]){re.escape(value)}(?![\d:-])", text):
            return False
    return True


def word_overlap(line: str, fact_words: set[str]) -> float:
    """Share of `fact_words` found in `line`."""
    if not fact_words:
        return 0.0
    return len(fact_words & content_words(line)) / len(fact_words)


def holds_fact(line: str, text: str, values: Sequence[str]) -> bool:
    """Whether an evidence line states the fact: its masked value and most of its words."""
    words = content_words(text)
    if values:
        line_norm = normalise(line)
        if not any(normalise(v) in line_norm for v in values if v.strip()):
            return False
        return word_overlap(line, words) >= MIN_ANSWER_OVERLAP
    return word_overlap(line, words) >= MIN_ANSWER_OVERLAP_NO_VALUE


def mentions_fact(line: str, text: str, values: Sequence[str]) -> bool:
    """The wider test for unanswerable examples: anything that might give the answer away."""
    line_norm = normalise(line)
    if any(normalise(v) in line_norm for v in values if v.strip()):
        return True
    line_numbers = set(_NUMBER.findall(line_norm))
    if any(n in line_numbers for v in values for n in _NUMBER.findall(normalise(v))):
        return True
    return word_overlap(line, content_words(text)) >= MIN_REMOVE_OVERLAP


def evidence_lines(user_message: str) -> list[str]:
    """The evidence lines of a rendered rag user message, without their "- "."""
    return [line[len(LINE_PREFIX) :] for line in user_message.splitlines() if line.startswith(LINE_PREFIX)]


def answer_line(lines: Sequence[str], text: str, values: Sequence[str]) -> str | None:
    """The line that answers: the one holding the fact with the most of its words (the first on a tie)."""
    words = content_words(text)
    best: tuple[float, int] | None = None
    for index, line in enumerate(lines):
        if holds_fact(line, text, values):
            score = (word_overlap(line, words), -index)
            best = score if best is None or score > best else best
    return None if best is None else lines[-best[1]]


# --------------------------------------------------------------------------- questions


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


def strip_title(question: str, title: str) -> str:
    """The masked question without build_generator_data's templates ("Per the X policy, ", "X: ", ...)."""
    for prefix in (f"Per the {title} policy, ", f"{title}: ", "Quick question: "):
        if question.startswith(prefix):
            return _capitalise(question[len(prefix) :])
    return question


def clause_question(question: str) -> str | None:
    """Only the clause (between commas, semicolons, colons) that holds the question words."""
    body = question.rstrip("?").strip()
    for clause in re.split(r"\s*[,;:]\s+", body):
        if _WH.search(clause) and len(clause.split()) >= 4 and clause != body:
            return _capitalise(clause.strip()) + "?"
    return None


def partial_question(question: str, rng: random.Random) -> str | None:
    """The question words first, then a seeded part (50-80 %) of the other content words, in order."""
    body = question.rstrip("?").strip()
    match = _WH.search(body)
    if match is None:
        return None
    rest = [
        w
        for w in re.findall(r"[\w'/%$€.-]+", body[: match.start()] + " " + body[match.end() :])
        if w.lower().strip(".") not in _STOPWORDS and any(ch.isalnum() for ch in w)
    ]
    if len(rest) < 3:
        return None
    keep = max(2, round(len(rest) * rng.uniform(0.5, 0.8)))
    chosen = sorted(rng.sample(range(len(rest)), keep))
    return f"{_capitalise(match.group(0).lower())} {' '.join(rest[i].strip('.') for i in chosen)}?"


def question_variant(fact: Fact, style: str, rng: random.Random) -> str | None:
    """A less lexical phrasing of the fact's question (None when the style does not apply)."""
    base = strip_title(fact.question, fact.title)
    if style == "no_title":
        return base if base != fact.question else None
    if style == "clause":
        return clause_question(base)
    if style == "partial":
        return partial_question(base, rng)
    raise ValueError(f"unknown question style {style!r}")


@dataclass(frozen=True, slots=True)
class Question:
    text: str
    style: str
    fact: Fact


def questions_for(facts: Sequence[Fact], seed: int, variant_share: float) -> list[Question]:
    """Each fact's question as built, plus for a seeded share a less lexical variant; unique texts."""
    out: list[Question] = []
    seen: set[str] = set()
    for fact in facts:
        rng = random.Random(f"{seed}|variant|{fact.key}|{fact.question}")
        candidates = [Question(fact.question, "as_built", fact)]
        if rng.random() < variant_share:
            styles = list(QUESTION_STYLES)
            rng.shuffle(styles)
            for style in styles:
                text = question_variant(fact, style, rng)
                if text:
                    candidates.append(Question(text, style, fact))
                    break
        for question in candidates:
            if question.text not in seen:
                seen.add(question.text)
                out.append(question)
    return out


# --------------------------------------------------------------------------- splits and edits


def heldout_sources(sources: Sequence[str], fraction: float, seed: int) -> set[str]:
    """A seeded share of the files (at least one when there are two or more) kept for validation."""
    ordered = sorted(set(sources))
    random.Random(f"{seed}|heldout").shuffle(ordered)
    count = round(len(ordered) * fraction)
    if fraction > 0 and len(ordered) >= 2:
        count = max(1, count)
    return set(ordered[: min(count, len(ordered) - 1)])


def edit_selection(
    selection: EvidenceSelection,
    *,
    drop: Callable[[EvidenceUnit], bool] | None = None,
    shuffle: random.Random | None = None,
) -> EvidenceSelection:
    """The selection without the units `drop` names, optionally with units and blocks shuffled.

    Blocks (chunks) left without units disappear; the pipeline renders blocks in `chunks` order and each
    block's lines in `units` order.
    """
    units = [u for u in selection.units if drop is None or not drop(u)]
    kept_ids = {u.chunk.chunk_id for u in units}
    chunks = [c for c in selection.chunks if c.chunk.chunk_id in kept_ids]
    if shuffle is not None:
        units = list(units)
        chunks = list(chunks)
        shuffle.shuffle(units)
        shuffle.shuffle(chunks)
    return EvidenceSelection(
        units=units, chunks=chunks, token_count=selection.token_count, select_ms=selection.select_ms
    )


def drop_unit(
    unit: EvidenceUnit, *, heldout: Collection[str], fact: tuple[str, Sequence[str]] | None
) -> bool:
    """Whether an evidence unit leaves an example: it comes from a held-out file, or it may state `fact`
    (text, values) in an example that must not answer."""
    if unit.chunk.source in heldout:
        return True
    return fact is not None and mentions_fact(unit.text, *fact)


class EditingRetriever:
    """The real retriever, whose evidence selection passes through `edit` before the pipeline sees it."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.edit: Callable[[EvidenceSelection], EvidenceSelection] | None = None
        self.last_selection: EvidenceSelection | None = None

    def retrieve(self, query: str, *, top_k: int | None = None) -> Any:
        return self._inner.retrieve(query, top_k=top_k)

    def select_context(self, chunks: Any, budget_tokens: int | None = None) -> Any:
        return self._inner.select_context(chunks, budget_tokens)

    def select_evidence(
        self, query: str, outcome: Any, budget_tokens: int | None = None
    ) -> EvidenceSelection:
        selection: EvidenceSelection = self._inner.select_evidence(query, outcome, budget_tokens)
        self.last_selection = selection
        return self.edit(selection) if self.edit is not None else selection


class _PlanOnlyGenerator:
    """A plan only needs a Generator reference; nothing here is ever called."""

    name = "plan-only"
    trust = "internal"
    adapters: tuple[str, ...] = ()


def plan_messages(
    pipeline: RagPipeline, loop: asyncio.AbstractEventLoop, question: str
) -> tuple[ChatMessage, ...] | None:
    """The messages the rag pipeline would send for `question`; None when it answers without generating."""
    request = PipelineRequest(
        messages=(ChatMessage(role="user", content=question),),
        params=GenerationParams(),
        request_id="grounding-data",
    )
    plan = loop.run_until_complete(pipeline.plan(request, RequestTrace(pipeline="rag")))
    return None if plan.fixed_answer is not None else plan.messages


# --------------------------------------------------------------------------- building


@dataclass(slots=True)
class BuildStats:
    questions: int = 0
    irrelevant: int = 0
    found: int = 0
    not_found: int = 0
    empty_after_removal: int = 0
    train_prompts_with_heldout_lines: int = 0
    styles: dict[str, int] = field(default_factory=dict)


def example_row(
    messages: Sequence[ChatMessage],
    target: str,
    *,
    kind: Kind,
    question: Question,
    shuffled: bool,
    split: str,
) -> dict[str, Any]:
    rows = [{"role": m.role, "content": m.content} for m in messages]
    return {
        "id": hashlib.sha256(f"{kind}|{question.text}".encode()).hexdigest()[:12],
        "kind": kind,
        "style": question.style,
        "shuffled": shuffled,
        "split": split,
        "source": question.fact.source,
        "expected": list(question.fact.expected),
        "messages": [*rows, {"role": "assistant", "content": target}],
    }


def unanswerable_plan(found: Sequence[int], missed: Sequence[int], share: float, seed: int) -> set[int]:
    """Which questions become unanswerable so that they are `share` of all examples, half from each pool.

    With u unanswerable taken as u/2 from `found` (answerable otherwise) and u/2 from `missed` (skipped
    otherwise): u / (len(found) - u/2 + u) = share  =>  u = share * len(found) / (1 - share / 2).
    """
    if not 0 <= share < 1:
        raise ValueError(f"unanswerable share must be in [0, 1), got {share}")
    total = round(share * len(found) / (1 - share / 2))
    rng = random.Random(f"{seed}|unanswerable")
    from_missed = min(len(missed), total // 2)
    from_found = min(len(found), total - from_missed)
    return set(rng.sample(sorted(missed), from_missed)) | set(rng.sample(sorted(found), from_found))


def build_grounding_data(
    retriever: Any,
    out_dir: Path,
    *,
    corpus_dir: Path = DEFAULT_CORPUS,
    prompts: PromptLibrary | None = None,
    system_prompt: str,
    options: GroundingOptions | None = None,
    answer_when_irrelevant: bool = False,
    seed: int = 7,
    limit: int | None = None,
    heldout_fraction: float = 0.15,
    unanswerable_share: float = 0.18,
    shuffle_share: float = 0.35,
    variant_share: float = 0.5,
) -> dict[str, Any]:
    """Write train.jsonl, val.jsonl and manifest.json under `out_dir`; returns the manifest.

    `retriever`: a warmed-up RetrievalService (or anything with its retrieve/select_context/
    select_evidence) over an index of `corpus_dir`, whose sources are paths relative to `corpus_dir`.
    """
    options = options or GroundingOptions()
    if options.context != "evidence":
        raise ValueError("grounding data is built for rag.context.mode: evidence")
    for name, share in (("heldout_fraction", heldout_fraction), ("shuffle_share", shuffle_share)):
        if not 0 <= share < 1:
            raise ValueError(f"{name} must be in [0, 1), got {share}")
    library = prompts or PromptLibrary()
    unanswerable_text = library.render_block("rag", "unanswerable")
    editing = EditingRetriever(retriever)
    pipeline = RagPipeline(
        cast(Generator, _PlanOnlyGenerator()),
        editing,
        library,
        system_prompt,
        options=options,
        answer_when_irrelevant=answer_when_irrelevant,
    )

    facts: list[Fact] = []
    files = sorted(corpus_dir.rglob("*.md"))
    for path in files:
        facts.extend(facts_from_document(path, corpus_dir, random.Random(f"{seed}|facts|{path.name}")))
    facts = [f for f in facts if usable_fact(f)]
    if not facts:
        raise ValueError(f"no facts found in {corpus_dir}")
    heldout = heldout_sources([p.relative_to(corpus_dir).as_posix() for p in files], heldout_fraction, seed)
    questions = questions_for(facts, seed, variant_share)
    if limit is not None:
        ordered = list(questions)
        random.Random(f"{seed}|limit").shuffle(ordered)
        keep = {q.text for q in ordered[:limit]}
        questions = [q for q in questions if q.text in keep]
    stats = BuildStats(questions=len(questions))

    def split_of(question: Question) -> str:
        return "val" if question.fact.source in heldout else "train"

    def from_heldout(unit: EvidenceUnit) -> bool:
        return unit.chunk.source in heldout

    loop = asyncio.new_event_loop()
    try:
        # pass 1: what the pipeline's own evidence shows for each question
        found: list[int] = []
        missed: list[int] = []
        for index, question in enumerate(questions):
            editing.edit = (
                functools.partial(edit_selection, drop=from_heldout)
                if split_of(question) == "train"
                else None
            )
            messages = plan_messages(pipeline, loop, question.text)
            if messages is None:
                stats.irrelevant += 1
                continue
            target = answer_line(
                evidence_lines(messages[-1].content), fact_text(question.fact), question.fact.expected
            )
            (found if target is not None else missed).append(index)
        stats.found, stats.not_found = len(found), len(missed)
        unanswerable = unanswerable_plan(found, missed, unanswerable_share, seed)

        # pass 2: the examples, evidence edited as each one needs
        rows: dict[str, list[dict[str, Any]]] = {"train": [], "val": []}
        for index in sorted({*found, *unanswerable}):
            question = questions[index]
            split = split_of(question)
            rng = random.Random(f"{seed}|example|{question.text}")
            shuffle = random.Random(rng.random()) if rng.random() < shuffle_share else None
            kind: Kind = "unanswerable" if index in unanswerable else "answerable"
            text, values = fact_text(question.fact), question.fact.expected

            drop = functools.partial(
                drop_unit,
                heldout=heldout if split == "train" else frozenset(),
                fact=(text, values) if kind == "unanswerable" else None,
            )
            editing.edit = functools.partial(edit_selection, drop=drop, shuffle=shuffle)
            messages = plan_messages(pipeline, loop, question.text)
            selection = editing.last_selection
            if split == "train" and selection is not None:
                stats.train_prompts_with_heldout_lines += any(
                    u.chunk.source in heldout for u in selection.units
                )
            if messages is None:
                stats.empty_after_removal += 1
                continue
            lines = evidence_lines(messages[-1].content)
            if kind == "unanswerable":
                if any(mentions_fact(line, text, values) for line in lines):
                    raise AssertionError(f"an unanswerable prompt still states the fact: {question.text!r}")
                target = unanswerable_text
            else:
                found_line = answer_line(lines, text, values)
                if found_line is None:  # cannot happen: the same evidence held it in pass 1
                    raise AssertionError(f"the answer line disappeared: {question.text!r}")
                target = found_line
            rows[split].append(
                example_row(
                    messages, target, kind=kind, question=question, shuffled=shuffle is not None, split=split
                )
            )
            stats.styles[question.style] = stats.styles.get(question.style, 0) + 1
    finally:
        loop.close()

    random.Random(f"{seed}|order").shuffle(rows["train"])
    counts = {
        split: {
            "examples": len(split_rows),
            "answerable": sum(r["kind"] == "answerable" for r in split_rows),
            "unanswerable": sum(r["kind"] == "unanswerable" for r in split_rows),
            "shuffled": sum(bool(r["shuffled"]) for r in split_rows),
        }
        for split, split_rows in rows.items()
    }
    write_jsonl_atomic(out_dir / "train.jsonl", rows["train"])
    write_jsonl_atomic(out_dir / "val.jsonl", rows["val"])
    system = library.render_block("rag", "system", system_prompt=system_prompt)
    manifest: dict[str, Any] = {
        "seed": seed,
        "limit": limit,
        "corpus_documents": len(files),
        "facts": len(facts),
        "questions": stats.questions,
        "question_styles": dict(sorted(stats.styles.items())),
        "irrelevant_skipped": stats.irrelevant,
        "evidence_held_fact": stats.found,
        "evidence_missed_fact": stats.not_found,
        "empty_after_removal": stats.empty_after_removal,
        "train_prompts_with_heldout_lines_removed": stats.train_prompts_with_heldout_lines,
        "heldout_sources": sorted(heldout),
        "counts": counts,
        "template": library.ref("rag").as_dict(),
        "unanswerable_text": unanswerable_text,
        "system_sha256": hashlib.sha256(system.encode()).hexdigest()[:16],
        "options": {
            "evidence_candidates": options.evidence_candidates,
            "heldout_fraction": heldout_fraction,
            "unanswerable_share": unanswerable_share,
            "shuffle_share": shuffle_share,
            "variant_share": variant_share,
        },
    }
    write_json_atomic(out_dir / "manifest.json", manifest)
    return manifest


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    from services.core.settings import load_settings
    from services.rag.service import RetrievalService

    parser = argparse.ArgumentParser(
        prog="python -m training.build_grounding_data", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--index", type=Path, default=DEFAULT_INDEX, help="index folder (of --corpus)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--corpus", type=Path, default=DEFAULT_CORPUS, help="the corpus the index was built from"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--limit", type=int, default=None, help="at most this many questions (a seeded sample)"
    )
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit <= 0:
        parser.error("--limit must be > 0")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    settings = load_settings(rag={"index_dir": str(args.index)})
    retriever = RetrievalService(settings.rag)
    retriever.warm_up()
    manifest = build_grounding_data(
        retriever,
        args.out,
        corpus_dir=args.corpus,
        prompts=PromptLibrary(settings.prompts.templates_dir, settings.project.template_variables()),
        system_prompt=settings.prompts.system_prompt,
        options=GroundingOptions(
            context=settings.rag.context.mode, evidence_candidates=settings.rag.evidence.candidates
        ),
        answer_when_irrelevant=settings.rag.relevance.no_answer == "generate",
        seed=args.seed,
        limit=args.limit,
    )
    summary = {"out": str(args.out), **manifest["counts"], "questions": manifest["questions"]}
    sys.stdout.write(json.dumps(summary, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
