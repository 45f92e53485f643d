"""Build the reranker's training data: the generator's questions for each chunk, negatives from the index.

doc2query style (Nogueira et al., 2019): for each chunk of an index the configured generator backend (the
embedded ONNX one by default, as `make run` serves it) writes up to `questions_per_chunk` short questions that
the chunk answers. Each question is then asked to the real hybrid retriever over the same index, which gives
both the filter and the hard negatives.

Filters, in order (the manifest counts each reason):
- empty or not a question (under 3 words), too long (over `max_question_words`);
- copying the chunk (a run of `copy_words` consecutive words of the chunk) or naming "the passage";
- a repeat of a question already kept for that chunk;
- `off_target`: the question's own chunk is not among the first `filter_top_k` chunks the retriever returns,
  i.e. not among the candidates a reranker would see. What survives is on topic yet often not ranked first,
  which is what a reranker must learn to fix; `filter_top_k: 0` keeps everything.

Negatives: `hard_negatives` of the retriever's best-ranked chunks for the question that come from another file
(the same file may well answer too), plus `random_negatives` chunks drawn from other files. Texts are what
the reranker scores at serving time (services.rag.chunking.embedding_text: heading path over the text).

Writes queries.jsonl and manifest.json atomically; the same index, generator and seed give the same files.

    python -m training.build_rerank_data --index var/index --out var/rerank-data [--max-chunks N] [--config F]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import random
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from services.core.protocols import Generator
from services.core.types import ChatMessage, Chunk, GenerationParams, RetrievalOutcome
from services.rag.chunking import embedding_text
from training.build_generator_data import write_json_atomic, write_jsonl_atomic

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_INDEX = REPO_ROOT / "var" / "index"
DEFAULT_OUT = REPO_ROOT / "var" / "rerank-data"
QUERIES_FILE = "queries.jsonl"
MANIFEST_FILE = "manifest.json"

SYSTEM_PROMPT = "You write the questions people type into the search box of a company handbook."
USER_PROMPT = (
    "{passage}\n\nWrite {count} different short questions that the text above answers, as an employee "
    'would ask them, in your own words. Do not mention "the text" or "the passage". One question per line.'
)
MIN_QUESTION_WORDS = 3
# "1. ", "- ", "Q2: ", "Question: " before a question
_LIST_MARKER = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)]|q\d*[:.)]|question\s*\d*\s*[:.)])\s*", re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9]+")
_MENTIONS_PASSAGE = re.compile(r"\b(?:the|this|above) (?:passage|text|paragraph|section)\b", re.IGNORECASE)
PROGRESS_EVERY = 25


class Retriever(Protocol):
    """What the builder needs of RetrievalService: a ranked list of chunks for a question."""

    def retrieve(self, query: str, *, top_k: int | None = None) -> RetrievalOutcome: ...


@dataclass(frozen=True, slots=True)
class DataOptions:
    """How many questions per chunk, how they are generated and filtered, and how many negatives each gets."""

    questions_per_chunk: int = 2
    max_new_tokens: int = 64
    max_question_words: int = 25
    copy_words: int = 8
    filter_top_k: int = 20
    hard_negatives: int = 3
    random_negatives: int = 2
    max_chunks: int | None = None
    seed: int = 7

    def __post_init__(self) -> None:
        for name in ("questions_per_chunk", "max_new_tokens", "max_question_words", "copy_words"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("filter_top_k", "hard_negatives", "random_negatives"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.hard_negatives + self.random_negatives == 0:
            raise ValueError("hard_negatives + random_negatives must be >= 1, got 0")
        if self.max_chunks is not None and self.max_chunks < 1:
            raise ValueError(f"max_chunks must be >= 1, got {self.max_chunks}")

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


# --------------------------------------------------------------------------- questions


def question_messages(passage: str, count: int) -> list[ChatMessage]:
    return [
        ChatMessage(role="system", content=SYSTEM_PROMPT),
        ChatMessage(role="user", content=USER_PROMPT.format(passage=passage, count=count)),
    ]


def parse_questions(text: str) -> list[str]:
    """The questions in a generator's answer: one per line (list markers removed), a line with several
    question marks split after each; lines that are not questions (an answer, a heading) are left out."""
    questions: list[str] = []
    for line in text.splitlines():
        line = _LIST_MARKER.sub("", line).strip().strip('"').strip()
        if "?" not in line:
            continue
        for part in re.findall(r"[^?]*\?", line):
            part = _LIST_MARKER.sub("", part).strip()
            if part != "?":
                questions.append(part)
    return questions


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def copies_passage(question: str, passage: str, run: int) -> bool:
    """Whether the question repeats `run` or more consecutive words of the passage."""
    question_words, passage_words = words(question), words(passage)
    if len(question_words) < run:
        return False
    passage_runs = {tuple(passage_words[i : i + run]) for i in range(len(passage_words) - run + 1)}
    return any(
        tuple(question_words[i : i + run]) in passage_runs for i in range(len(question_words) - run + 1)
    )


def question_problem(question: str, passage: str, options: DataOptions) -> str | None:
    """Why a generated question is rejected (a manifest key), or None when it is kept."""
    count = len(words(question))
    if count < MIN_QUESTION_WORDS:
        return "too_short"
    if count > options.max_question_words:
        return "too_long"
    if _MENTIONS_PASSAGE.search(question):
        return "mentions_passage"
    if copies_passage(question, passage, options.copy_words):
        return "copies_passage"
    return None


# --------------------------------------------------------------------------- negatives


@dataclass(frozen=True, slots=True)
class Negatives:
    hard: list[Chunk]
    random: list[Chunk]


def mine_negatives(
    ranked: Sequence[Chunk],
    positive: Chunk,
    corpus: Sequence[Chunk],
    *,
    hard: int,
    random_count: int,
    rng: random.Random,
) -> Negatives:
    """The first `hard` chunks of `ranked` from another file than `positive`, and `random_count` chunks of
    `corpus` from other files that are not among those (fewer when the corpus has no more)."""
    hard_chunks: list[Chunk] = []
    for chunk in ranked:
        if len(hard_chunks) == hard:
            break
        if chunk.source != positive.source and chunk.chunk_id not in {c.chunk_id for c in hard_chunks}:
            hard_chunks.append(chunk)
    taken = {c.chunk_id for c in hard_chunks}
    pool = [c for c in corpus if c.source != positive.source and c.chunk_id not in taken]
    return Negatives(hard=hard_chunks, random=rng.sample(pool, min(random_count, len(pool))))


# --------------------------------------------------------------------------- building


@dataclass(slots=True)
class BuildStats:
    chunks: int = 0
    generated: int = 0
    kept: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    own_chunk_rank: dict[str, int] = field(default_factory=dict)
    generate_seconds: float = 0.0

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def count_rank(self, rank: int | None) -> None:
        """Where the retriever ranked a kept question's own chunk (what the reranker has to improve on)."""
        key = "none" if rank is None else ("1" if rank == 1 else "2-5" if rank <= 5 else "6+")
        self.own_chunk_rank[key] = self.own_chunk_rank.get(key, 0) + 1


def review_question(
    question: str,
    chunk: Chunk,
    kept: Sequence[str],
    retriever: Retriever,
    options: DataOptions,
    search_k: int,
) -> tuple[str | None, list[Chunk], int | None]:
    """(why it is rejected or None, the retriever's ranking for it, its own chunk's rank or None)."""
    problem = question_problem(question, embedding_text(chunk), options)
    if problem is None and question.lower() in {k.lower() for k in kept}:
        problem = "repeat"
    if problem is not None:
        return problem, [], None
    ranked = [scored.chunk for scored in retriever.retrieve(question, top_k=search_k).chunks]
    ids = [c.chunk_id for c in ranked]
    rank = ids.index(chunk.chunk_id) + 1 if chunk.chunk_id in ids else None
    if options.filter_top_k and (rank is None or rank > options.filter_top_k):
        return "off_target", ranked, rank
    return None, ranked, rank


def query_row(question: str, positive: Chunk, negatives: Negatives, rank: int | None) -> dict[str, Any]:
    return {
        "id": hashlib.sha256(f"{positive.chunk_id}|{question}".encode()).hexdigest()[:12],
        "query": question,
        "source": positive.source,
        "positive_id": positive.chunk_id,
        "positive": embedding_text(positive),
        "own_rank": rank,
        "hard_negatives": [embedding_text(c) for c in negatives.hard],
        "random_negatives": [embedding_text(c) for c in negatives.random],
        "negative_sources": [c.source for c in (*negatives.hard, *negatives.random)],
    }


def chunks_to_use(chunks: Sequence[Chunk], max_chunks: int | None, seed: int) -> list[Chunk]:
    """All chunks, or a seeded sample of `max_chunks` of them (in index order)."""
    if max_chunks is None or max_chunks >= len(chunks):
        return list(chunks)
    keep = set(random.Random(f"{seed}|chunks").sample(range(len(chunks)), max_chunks))
    return [chunk for row, chunk in enumerate(chunks) if row in keep]


def build_rerank_data(
    retriever: Retriever,
    chunks: Sequence[Chunk],
    generator: Generator,
    out_dir: Path,
    *,
    options: DataOptions | None = None,
    index_version: str = "",
    generator_label: str = "",
) -> dict[str, Any]:
    """Write queries.jsonl and manifest.json under `out_dir`; returns the manifest.

    `chunks`: every chunk of the index `retriever` searches (random negatives come from all of them).
    """
    options = options or DataOptions()
    if not chunks:
        raise ValueError("the index has no chunks")
    params = GenerationParams(max_tokens=options.max_new_tokens, temperature=0.0, seed=options.seed)
    search_k = max(options.filter_top_k, options.hard_negatives * 3, 10)
    selected = chunks_to_use(chunks, options.max_chunks, options.seed)
    stats = BuildStats(chunks=len(selected))
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    loop = asyncio.new_event_loop()
    try:
        for done, chunk in enumerate(selected, start=1):
            passage = embedding_text(chunk)
            generating = time.perf_counter()
            result = loop.run_until_complete(
                generator.complete(question_messages(passage, options.questions_per_chunk), params)
            )
            stats.generate_seconds += time.perf_counter() - generating
            kept: list[str] = []
            questions = parse_questions(result.text)
            if not questions:
                stats.reject("no_question")
            for question in questions[: options.questions_per_chunk]:
                stats.generated += 1
                problem, ranked, rank = review_question(question, chunk, kept, retriever, options, search_k)
                if problem is not None:
                    stats.reject(problem)
                    continue
                kept.append(question)
                rng = random.Random(f"{options.seed}|negatives|{chunk.chunk_id}|{question}")
                negatives = mine_negatives(
                    ranked,
                    chunk,
                    chunks,
                    hard=options.hard_negatives,
                    random_count=options.random_negatives,
                    rng=rng,
                )
                stats.count_rank(rank)
                rows.append(query_row(question, chunk, negatives, rank))
            if done % PROGRESS_EVERY == 0 or done == len(selected):
                elapsed = time.perf_counter() - started
                logger.info(
                    "rerank data: %d/%d chunks, %d questions kept, %.0f s elapsed, about %.0f s left",
                    done,
                    len(selected),
                    len(rows),
                    elapsed,
                    elapsed / done * (len(selected) - done),
                )
    finally:
        loop.close()
    stats.kept = len(rows)
    if not rows:
        raise ValueError(f"no question survived the filters ({stats.rejected}); check the generator's output")

    data_sha256 = hashlib.sha256(
        "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode()
    ).hexdigest()
    write_jsonl_atomic(out_dir / QUERIES_FILE, rows)
    manifest: dict[str, Any] = {
        "index_version": index_version,
        "generator": generator_label or generator.name,
        "prompt_sha256": hashlib.sha256(f"{SYSTEM_PROMPT}\n{USER_PROMPT}".encode()).hexdigest()[:16],
        "options": options.as_dict(),
        "counts": {
            "index_chunks": len(chunks),
            "chunks_used": stats.chunks,
            "sources": len({r["source"] for r in rows}),
            "questions_generated": stats.generated,
            "questions_kept": stats.kept,
            "rejected": dict(sorted(stats.rejected.items())),
            "own_chunk_rank": dict(sorted(stats.own_chunk_rank.items())),
        },
        "generate_seconds": round(stats.generate_seconds, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "data_sha256": data_sha256,
    }
    write_json_atomic(out_dir / MANIFEST_FILE, manifest)
    return manifest


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    defaults = DataOptions()
    parser = argparse.ArgumentParser(
        prog="python -m training.build_rerank_data", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--index", type=Path, default=DEFAULT_INDEX, help="index folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--config", type=Path, default=None, help="settings YAML (the generator to use)")
    parser.add_argument("--max-chunks", type=int, default=None, help="a seeded sample of this many chunks")
    parser.add_argument("--questions-per-chunk", type=int, default=defaults.questions_per_chunk)
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens)
    parser.add_argument("--filter-top-k", type=int, default=defaults.filter_top_k, help="0: no filter")
    parser.add_argument("--hard-negatives", type=int, default=defaults.hard_negatives)
    parser.add_argument("--random-negatives", type=int, default=defaults.random_negatives)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from services.core.settings import load_settings
    from services.pipelines.factory import build_generator
    from services.rag.index_store import load_current
    from services.rag.service import RetrievalService

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        options = DataOptions(
            questions_per_chunk=args.questions_per_chunk,
            max_new_tokens=args.max_new_tokens,
            filter_top_k=args.filter_top_k,
            hard_negatives=args.hard_negatives,
            random_negatives=args.random_negatives,
            max_chunks=args.max_chunks,
            seed=args.seed,
        )
    except ValueError as exc:
        parser.error(str(exc))
    if not args.index.is_dir():
        parser.error(f"--index: no index folder at {args.index}")
    if args.config is not None and not args.config.is_file():
        parser.error(f"--config: no file at {args.config}")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")

    # The fused ranking without a reranker: the one being trained must not choose its own data.
    settings = load_settings(args.config, rag={"index_dir": str(args.index), "rerank": {"reranker": "none"}})
    retriever = RetrievalService(settings.rag)
    retriever.warm_up()
    snapshot = load_current(args.index)
    generator = build_generator(settings.generator, settings.data_dir)
    generator.warm_up()
    label = settings.generator.model
    if settings.generator.backend == "onnx":
        label += f" (onnx {getattr(settings.generator, 'onnx_precision', '')})"
    try:
        manifest = build_rerank_data(
            retriever,
            snapshot.chunks,
            generator,
            args.out,
            options=options,
            index_version=snapshot.version,
            generator_label=label,
        )
    finally:
        asyncio.run(generator.aclose())
    sys.stdout.write(json.dumps({"out": str(args.out), **manifest["counts"]}, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
