"""`rag`: retrieve (dense + sparse, fused, reranked), select evidence or context under a token budget,
ground, then check the answer against that evidence.

Retrieval is CPU work (query embedding) and runs in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from services.core.protocols import Generator, Retriever
from services.core.types import ChatMessage, RetrievalOutcome, ScoredChunk
from services.llm.prompts import PromptLibrary
from services.pipelines.base import PipelineRequest, Plan, RequestTrace
from services.pipelines.grounding import EvidenceAnswerCheck, EvidenceQuote, UnsupportedAnswerPolicy
from services.pipelines.prompt import with_system_prompt
from services.privacy import quote_context_block
from services.rag.evidence import EvidenceSelection
from services.rag.groundedness import GroundednessScorer


class EvidenceRetriever(Retriever, Protocol):
    """What the rag pipeline needs: retrieval, and evidence selection inside the retrieved chunks."""

    def select_evidence(
        self, query: str, outcome: RetrievalOutcome, budget_tokens: int | None = None
    ) -> EvidenceSelection: ...


# Injected by the factory: privacy filtering of retrieved text before it enters a prompt.
ContextFilter = Callable[[list[str], RequestTrace], list[str]]
ContextQuoter = Callable[[int, str, str], str]


ContextMode = Literal["evidence", "chunks"]


@dataclass(frozen=True, slots=True)
class GroundingOptions:
    """How the rag pipeline builds its context and checks its answers (from RagSettings)."""

    context: ContextMode = "evidence"
    evidence_candidates: int = 6
    unsupported_answer: UnsupportedAnswerPolicy = "extract"
    groundedness_threshold: float = 0.6
    quote_units: int = 2
    adapter: str | None = None


class RagPipeline:
    def __init__(
        self,
        generator: Generator,
        retriever: EvidenceRetriever,
        prompts: PromptLibrary,
        system_prompt: str,
        *,
        options: GroundingOptions = GroundingOptions(),
        answer_when_irrelevant: bool = False,
        context_filter: ContextFilter | None = None,
        quote: ContextQuoter = quote_context_block,
    ) -> None:
        self._generator = generator
        self._retriever = retriever
        self._prompts = prompts
        self._system_prompt = system_prompt
        self._options = options
        self._answer_when_irrelevant = answer_when_irrelevant
        self._context_filter = context_filter
        self._quote = quote
        self._scorer = GroundednessScorer([prompts.render_block("rag", "unanswerable")])

    @property
    def name(self) -> str:
        return "rag"

    @property
    def description(self) -> str:
        context = "selected evidence" if self._options.context == "evidence" else "budgeted chunks"
        return f"embed -> FAISS + BM25 -> fuse -> rerank -> {context} -> grounded generation -> verify"

    async def plan(self, request: PipelineRequest, trace: RequestTrace) -> Plan:
        question = request.last_user_text
        evidence_mode = self._options.context == "evidence"
        top_k = self._options.evidence_candidates if evidence_mode else None
        outcome = await asyncio.to_thread(self._retriever.retrieve, question, top_k=top_k)
        for stage, ms in outcome.timings_ms.items():
            trace.timings.add(stage, ms)
        trace.index_version = outcome.index_version
        if evidence_mode:
            evidence = await asyncio.to_thread(self._retriever.select_evidence, question, outcome)
            trace.timings.add("select", evidence.select_ms)
            chunks, token_count = evidence.chunks, evidence.token_count
            bodies = ["\n".join(f"- {unit.text}" for unit in evidence.units_of(c.chunk)) for c in chunks]
        else:
            selection = await asyncio.to_thread(self._retriever.select_context, outcome.chunks)
            trace.timings.add("select", selection.select_ms)
            chunks, token_count = selection.chunks, selection.token_count
            bodies = [c.chunk.text for c in chunks]
        if (not outcome.relevant and not self._answer_when_irrelevant) or not chunks:
            trace.template = self._prompts.ref("no_answer")
            return Plan(fixed_answer=self._prompts.render_block("no_answer", "answer"))
        trace.context_tokens = token_count
        trace.sources = [
            {"source": c.chunk.source, "chunk_id": c.chunk.chunk_id, "score": round(c.score, 4)}
            for c in chunks
        ]
        if self._context_filter is not None:
            bodies = self._context_filter(bodies, trace)
        blocks = [
            self._quote(i, c.chunk.source, body)
            for i, (c, body) in enumerate(zip(chunks, bodies, strict=True), start=1)
        ]
        trace.template = self._prompts.ref("rag")
        system = self._prompts.render_block("rag", "system", system_prompt=self._system_prompt)
        user = self._prompts.render_block("rag", "user", context_blocks=blocks, question=question)
        history = request.messages[:-1] if request.messages[-1].role == "user" else request.messages
        messages = (*with_system_prompt(system, history), ChatMessage(role="user", content=user))
        params = request.params
        if self._options.adapter is not None:
            params = replace(params, adapter=self._options.adapter)
            trace.adapter = self._options.adapter
        return Plan(
            messages=messages,
            params=params,
            generator=self._generator,
            answer_check=self._answer_check(question, chunks, bodies, can_extract=evidence_mode),
        )

    def _answer_check(
        self, question: str, chunks: Sequence[ScoredChunk], bodies: Sequence[str], *, can_extract: bool
    ) -> EvidenceAnswerCheck:
        """The evidence the prompt carried (after privacy filtering), best first, as the check's reference."""
        quotes = [
            EvidenceQuote(text=line.removeprefix("- ").strip(), source=c.chunk.source)
            for c, body in zip(chunks, bodies, strict=True)
            for line in body.splitlines()
            if line.strip()
        ]
        return EvidenceAnswerCheck(
            self._scorer,
            quotes,
            question,
            policy=self._options.unsupported_answer,
            threshold=self._options.groundedness_threshold,
            render_extract=self._render_extract,
            can_extract=can_extract,
            quote_units=self._options.quote_units,
        )

    def _render_extract(self, quotes: Sequence[EvidenceQuote]) -> str:
        """The quotes grouped by source, in order: [(source, [text, ...]), ...] for the `extract` block."""
        grouped: dict[str, list[str]] = {}
        for quote in quotes:
            grouped.setdefault(quote.source, []).append(quote.text)
        return self._prompts.render_block("rag", "extract", quotes=list(grouped.items()))
