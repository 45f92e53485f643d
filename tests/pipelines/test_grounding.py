"""The rag answer check and its policies; the runner holds back an answer the check may replace."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from services.core.cost import CostLedger
from services.core.settings import PriceCard
from services.core.types import ChatMessage, Chunk, GenerationParams, ScoredChunk
from services.llm.prompts import PromptLibrary
from services.pipelines.base import PipelineRequest, RequestTrace
from services.pipelines.grounding import EvidenceAnswerCheck, EvidenceQuote
from services.pipelines.rag import GroundingOptions, RagPipeline
from services.pipelines.runner import Outcome, PipelineRunner
from services.rag.evidence import EvidenceSelection, EvidenceUnit
from services.rag.groundedness import GroundednessScorer
from tests.pipelines.fakes import ScriptedGenerator

pytestmark = pytest.mark.unit

PROMPTS = PromptLibrary()
UNANSWERABLE = PROMPTS.render_block("rag", "unanswerable")
QUESTION = "How many vacation days do we get?"
EVIDENCE = [
    EvidenceQuote("All employees receive 25 working days of paid vacation per year.", "benefits/vacation.md"),
    EvidenceQuote("Request vacation in Harbor at least two weeks ahead.", "benefits/vacation.md"),
]


def _render(quotes: Sequence[EvidenceQuote]) -> str:
    return " | ".join(f"{q.source}: {q.text}" for q in quotes)


def _check(policy: str, *, quote_units: int = 1, can_extract: bool = True) -> EvidenceAnswerCheck:
    return EvidenceAnswerCheck(
        GroundednessScorer([UNANSWERABLE]),
        EVIDENCE,
        QUESTION,
        policy=policy,  # type: ignore[arg-type]
        threshold=0.6,
        render_extract=_render,
        can_extract=can_extract,
        quote_units=quote_units,
    )


def test_a_supported_answer_passes_under_every_policy() -> None:
    for policy in ("pass", "flag", "extract"):
        checked = _check(policy).check("You receive 25 working days of paid vacation.")
        assert checked.text == "You receive 25 working days of paid vacation."
        assert checked.report["action"] == "pass" and checked.report["score"] == 1.0


def test_an_unsupported_answer_is_reported_flagged_or_replaced_by_the_quote() -> None:
    wrong = "You receive 12 paid vacation days."
    assert _check("pass").check(wrong).report["action"] == "pass"
    flagged = _check("flag").check(wrong)
    assert flagged.text == wrong and flagged.report["action"] == "flag"
    extracted = _check("extract").check(wrong)
    assert extracted.text == f"benefits/vacation.md: {EVIDENCE[0].text}"
    assert extracted.report["action"] == "extract" and "12" in extracted.report["unsupported"]
    assert _check("extract", quote_units=2).check(wrong).text == _render(EVIDENCE)


def test_an_abstention_passes_unless_extracting() -> None:
    assert _check("flag").check(UNANSWERABLE).report["action"] == "abstain"
    replaced = _check("extract").check(UNANSWERABLE)
    assert replaced.report["action"] == "extract" and replaced.report["abstained"] is True
    assert replaced.text.startswith("benefits/vacation.md")


def test_without_ranked_evidence_extract_degrades_to_flag() -> None:
    check = _check("extract", can_extract=False)
    assert not check.may_replace
    assert check.check("You receive 12 paid vacation days.").report["action"] == "flag"


class FakeRetriever:
    """Two chunks; evidence is their first sentences. Implements the rag pipeline's Retriever."""

    def __init__(self) -> None:
        self.chunks = [
            ScoredChunk(Chunk("c1", "benefits/vacation.md", EVIDENCE[0].text + " " + EVIDENCE[1].text), 0.8),
            ScoredChunk(Chunk("c2", "benefits/sick-leave.md", "Sick leave is unlimited."), 0.4),
        ]
        self.top_k: int | None = None

    def retrieve(self, query: str, *, top_k: int | None = None) -> Any:
        self.top_k = top_k

        class Outcome_:
            chunks = self.chunks
            timings_ms = {"embed": 1.0, "search": 1.0, "rerank": 0.0}
            index_version = "v1"
            relevant = True
            query_vector = np.zeros(4, dtype=np.float32)

        return Outcome_()

    def select_context(self, chunks: Sequence[ScoredChunk], budget_tokens: int | None = None) -> Any:
        raise AssertionError("evidence mode must not select whole chunks")

    def select_evidence(
        self, query: str, outcome: Any, budget_tokens: int | None = None
    ) -> EvidenceSelection:
        units = [
            EvidenceUnit(EVIDENCE[0].text, self.chunks[0].chunk, 0.9),
            EvidenceUnit("Sick leave is unlimited.", self.chunks[1].chunk, 0.5),
        ]
        return EvidenceSelection(units=units, chunks=self.chunks, token_count=20, select_ms=0.1)


async def _ask(answer: str, options: GroundingOptions) -> tuple[list[str], Outcome, RequestTrace, Any]:
    gen = ScriptedGenerator(answer)
    retriever = FakeRetriever()
    rag = RagPipeline(gen, retriever, PROMPTS, "sys", options=options)
    runner = PipelineRunner(CostLedger(PriceCard()), primary=gen)
    request = PipelineRequest((ChatMessage("user", QUESTION),), GenerationParams(), "r1")
    trace = RequestTrace(pipeline="rag")
    pieces: list[str] = []
    outcome = Outcome()
    async for item in runner.stream(rag, request, trace):
        if isinstance(item, Outcome):
            outcome = item
        else:
            pieces.append(item)
    return pieces, outcome, trace, (gen, retriever)


async def test_rag_prompt_carries_evidence_lists_per_chunk_and_the_question_last() -> None:
    _, _, trace, (gen, retriever) = await _ask("25 working days.", GroundingOptions(evidence_candidates=7))
    assert retriever.top_k == 7
    user = gen.received[0][-1].content
    assert f"- {EVIDENCE[0].text}" in user and EVIDENCE[1].text not in user  # sentences, not whole chunks
    assert user.index('source="benefits/vacation.md"') < user.index('source="benefits/sick-leave.md"')
    assert user.rstrip().splitlines()[-2] == f"Question: {QUESTION}"
    assert [s["source"] for s in trace.sources] == ["benefits/vacation.md", "benefits/sick-leave.md"]
    assert trace.template is not None and trace.template.version == "3"


async def test_extract_holds_back_the_stream_and_sends_the_quote_in_one_piece() -> None:
    pieces, outcome, trace, _ = await _ask("You get twelve days off", GroundingOptions())
    assert len(pieces) == 1 and pieces[0] == outcome.text
    assert outcome.text == PROMPTS.render_block(  # the default quotes the first two evidence lines
        "rag",
        "extract",
        quotes=[
            ("benefits/vacation.md", [EVIDENCE[0].text]),
            ("benefits/sick-leave.md", ["Sick leave is unlimited."]),
        ],
    )
    assert trace.groundedness is not None and trace.groundedness["action"] == "extract"
    assert "verify" in trace.timings.ms


async def test_pass_streams_token_by_token_and_still_reports_the_score() -> None:
    pieces, outcome, trace, _ = await _ask(
        "You get twelve days off", GroundingOptions(unsupported_answer="pass")
    )
    assert len(pieces) == 5 and outcome.text == "You get twelve days off"
    assert trace.groundedness is not None and trace.groundedness["score"] < 0.6


async def test_a_rag_adapter_is_sent_with_the_generation() -> None:
    _, _, trace, (gen, _) = await _ask("25 working days.", GroundingOptions(adapter="grounded"))
    assert trace.adapter == "grounded" and gen.received_params[0].adapter == "grounded"
    _, _, trace, (gen, _) = await _ask("25 working days.", GroundingOptions())
    assert trace.adapter is None and gen.received_params[0].adapter is None
