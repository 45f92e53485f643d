"""The reranker's data: parsing and filtering generated questions, mining negatives (plain values), and one
build over a real tiny index (hashing embedder) with a scripted generator standing in for the model."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from services.core.types import ChatMessage, Chunk, GenerationParams, TokenDelta
from services.rag.chunking import embedding_text
from services.rag.index_store import load_current
from services.rag.ingest import ingest
from services.rag.service import RetrievalService
from tests.pipelines.fakes import ScriptedGenerator
from tests.rag.conftest import HashingEmbedder, rag_settings
from training.build_rerank_data import (
    DataOptions,
    build_rerank_data,
    copies_passage,
    mine_negatives,
    parse_questions,
    question_problem,
)

PASSAGE = "All employees receive 25 working days of paid vacation per year, plus public holidays."


def _chunk(chunk_id: str, source: str, text: str = "text") -> Chunk:
    return Chunk(chunk_id=chunk_id, source=source, text=text, title=source)


@pytest.mark.unit
def test_parse_questions_strips_list_markers_splits_lines_and_drops_non_questions() -> None:
    text = (
        "1. How many vacation days do we get?\n"
        "2) Do holidays count? Can I carry days over?\n"
        "Question: When must carried days be used?\n"
        "Answer: 25 days.\n"
        "- \n"
        '"Who approves leave?"'
    )
    assert parse_questions(text) == [
        "How many vacation days do we get?",
        "Do holidays count?",
        "Can I carry days over?",
        "When must carried days be used?",
        "Who approves leave?",
    ]
    assert parse_questions("What about this passage") == []


@pytest.mark.unit
@pytest.mark.parametrize(
    ("question", "problem"),
    [
        ("How many vacation days?", None),
        ("Vacation?", "too_short"),
        ("What " * 30 + "?", "too_long"),
        ("What does the passage say about vacation?", "mentions_passage"),
        ("Do all employees receive 25 working days of paid vacation per year?", "copies_passage"),
    ],
)
def test_question_problem_names_why_a_question_is_rejected(question: str, problem: str | None) -> None:
    assert question_problem(question, PASSAGE, DataOptions()) == problem


@pytest.mark.unit
def test_copies_passage_needs_a_run_of_consecutive_words() -> None:
    # the same words, not in one run of 8
    assert not copies_passage("Do employees per year receive paid working vacation days?", PASSAGE, 8)
    assert copies_passage("receive 25 working days of paid vacation per year?", PASSAGE, 8)
    assert not copies_passage("receive 25 working days?", PASSAGE, 8)


@pytest.mark.unit
def test_options_name_the_bad_value() -> None:
    with pytest.raises(ValueError, match="questions_per_chunk must be >= 1, got 0"):
        DataOptions(questions_per_chunk=0)
    with pytest.raises(ValueError, match="hard_negatives \\+ random_negatives"):
        DataOptions(hard_negatives=0, random_negatives=0)
    with pytest.raises(ValueError, match="max_chunks must be >= 1, got 0"):
        DataOptions(max_chunks=0)


@pytest.mark.unit
def test_hard_negatives_are_the_best_ranked_chunks_of_other_files() -> None:
    positive = _chunk("p", "benefits/vacation.md")
    ranked = [
        _chunk("p2", "benefits/vacation.md"),  # same file: may answer too, never a negative
        positive,
        _chunk("a", "benefits/sick.md"),
        _chunk("a", "benefits/sick.md"),  # a repeat
        _chunk("b", "expenses/travel.md"),
        _chunk("c", "it/laptops.md"),
        _chunk("d", "people/onboarding.md"),
    ]
    corpus = [positive, ranked[0], *ranked[2:], _chunk("e", "people/buddy.md"), _chunk("f", "people/pay.md")]
    negatives = mine_negatives(ranked, positive, corpus, hard=3, random_count=2, rng=random.Random(1))
    assert [c.chunk_id for c in negatives.hard] == ["a", "b", "c"]
    assert len(negatives.random) == 2
    for chunk in negatives.random:
        assert chunk.source != positive.source
        assert chunk.chunk_id not in {"a", "b", "c"}
    # fewer random ones when the corpus has no more
    few = mine_negatives(ranked, positive, corpus[:4], hard=3, random_count=5, rng=random.Random(1))
    assert few.random == []


# --------------------------------------------------------------------------- a build over a real tiny index

TINY_CORPUS = {
    "benefits/vacation.md": "# Vacation\n\nEveryone receives 25 working days of paid vacation per year.\n",
    "benefits/sick-leave.md": "# Sick Leave\n\nYou receive 12 paid sick days per calendar year.\n",
    "expenses/travel.md": "# Travel\n\nSubmit travel receipts within 30 days of the trip in Ledgerly.\n",
    "it-security/laptops.md": "# Laptops\n\nLaptops are replaced every 36 months, or sooner if they fail.\n",
    "people/onboarding.md": "# Onboarding\n\nEvery new joiner gets an onboarding buddy for 60 days.\n",
}
# What the scripted model answers for a passage holding the key: good questions, and one of each bad kind.
ANSWERS = {
    "vacation": "1. How much paid vacation do employees get?\n2. What does the passage say?",
    "sick": "How many sick days per calendar year?\nHow many sick days per calendar year?",
    "receipts": "Submit travel receipts within 30 days of the trip in Ledgerly?",
    "Laptops": "When are laptops replaced?\nWhat is the onboarding buddy for new joiners?",
    "buddy": "I cannot help with that.",
}


class PassageGenerator(ScriptedGenerator):
    """Answers from ANSWERS by the passage in the prompt, as a model writing questions would."""

    async def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[TokenDelta]:
        self.answer = next(a for key, a in ANSWERS.items() if key in messages[-1].content)
        async for delta in super().stream(messages, params):
            yield delta


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RetrievalService]:
    root = tmp_path_factory.mktemp("rerank-data")
    corpus = root / "handbook"
    for relative, text in TINY_CORPUS.items():
        (corpus / relative).parent.mkdir(parents=True, exist_ok=True)
        (corpus / relative).write_text(text, encoding="utf-8")
    settings = rag_settings(root / "index", relevance={"min_dense_score": -1.0})
    embedder = HashingEmbedder()
    ingest([corpus], settings, embedder=embedder, progress=False)
    service = RetrievalService(settings, embedder=embedder)
    service.warm_up()
    return root, service


@pytest.mark.integration
def test_build_keeps_on_target_questions_with_negatives_from_other_files(
    tiny_index: tuple[Path, RetrievalService],
) -> None:
    root, service = tiny_index
    snapshot = load_current(root / "index")
    generator = PassageGenerator()
    options = DataOptions(filter_top_k=1, hard_negatives=2, random_negatives=1, max_new_tokens=40)
    manifest = build_rerank_data(
        service, snapshot.chunks, generator, root / "out", options=options, index_version=snapshot.version
    )

    rows = [json.loads(line) for line in (root / "out" / "queries.jsonl").read_text().splitlines()]
    assert {r["query"] for r in rows} == {
        "How much paid vacation do employees get?",
        "How many sick days per calendar year?",
        "When are laptops replaced?",
    }
    by_id = {c.chunk_id: c for c in snapshot.chunks}
    for row in rows:
        positive = by_id[row["positive_id"]]
        assert row["positive"] == embedding_text(positive)
        assert row["source"] == positive.source
        assert row["own_rank"] == 1
        assert len(row["hard_negatives"]) == 2 and len(row["random_negatives"]) == 1
        assert positive.source not in row["negative_sources"]
        assert row["positive"] not in row["hard_negatives"] + row["random_negatives"]
    counts = manifest["counts"]
    assert counts["questions_kept"] == 3
    # "What does the passage say?", the repeated sick-days question, the copied receipts sentence, the
    # laptops chunk's question about the onboarding buddy (its own chunk is not first), the refusal
    assert counts["rejected"] == {
        "copies_passage": 1,
        "mentions_passage": 1,
        "no_question": 1,
        "off_target": 1,
        "repeat": 1,
    }
    assert manifest["index_version"] == snapshot.version and manifest["generator"] == "fake"
    assert all(p.max_tokens == 40 for p in generator.received_params)
    # one prompt per chunk, in index order, carrying the text the reranker will score
    prompts = [messages[-1].content for messages in generator.received]
    assert len(prompts) == len(snapshot.chunks)
    assert all(embedding_text(c) in p for c, p in zip(snapshot.chunks, prompts, strict=True))
    # atomic writes leave no temporary files; the same inputs give the same bytes
    assert sorted(p.name for p in (root / "out").iterdir()) == ["manifest.json", "queries.jsonl"]
    build_rerank_data(
        service, snapshot.chunks, generator, root / "again", options=options, index_version=snapshot.version
    )
    assert (root / "again" / "queries.jsonl").read_bytes() == (root / "out" / "queries.jsonl").read_bytes()


@pytest.mark.integration
def test_build_with_a_chunk_cap_asks_only_that_many_chunks(tiny_index: tuple[Path, RetrievalService]) -> None:
    root, service = tiny_index
    chunks = load_current(root / "index").chunks
    generator = PassageGenerator()
    manifest = build_rerank_data(
        service, chunks, generator, root / "capped", options=DataOptions(max_chunks=2, filter_top_k=0)
    )
    assert len(generator.received) == 2
    assert manifest["counts"]["chunks_used"] == 2 and manifest["counts"]["index_chunks"] == len(chunks)
