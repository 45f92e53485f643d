"""`rag`: retrieve (dense + sparse, fused, reranked), select context under a token budget, ground.

Retrieval is CPU work (query embedding) and runs in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from services.core.protocols import Generator
from services.core.types import ChatMessage, ScoredChunk
from services.llm.prompts import PromptLibrary
from services.pipelines.base import PipelineRequest, Plan, RequestTrace
from services.pipelines.prompt import with_system_prompt
from services.privacy import quote_context_block


class RetrievalOutcomeLike(Protocol):
    @property
    def chunks(self) -> list[ScoredChunk]: ...
    @property
    def timings_ms(self) -> dict[str, float]: ...
    @property
    def index_version(self) -> str: ...
    @property
    def relevant(self) -> bool: ...


class ContextSelectionLike(Protocol):
    @property
    def chunks(self) -> list[ScoredChunk]: ...
    @property
    def token_count(self) -> int: ...
    @property
    def select_ms(self) -> float: ...


class Retriever(Protocol):
    """What the rag pipeline needs from the retrieval service (services.rag.service.RetrievalService)."""

    def retrieve(self, query: str, *, top_k: int | None = None) -> Any: ...

    def select_context(self, chunks: Sequence[ScoredChunk], budget_tokens: int | None = None) -> Any: ...


# Injected by the factory: privacy filtering of retrieved text before it enters a prompt.
ContextFilter = Callable[[list[str], RequestTrace], list[str]]
ContextQuoter = Callable[[int, str, str], str]


class RagPipeline:
    def __init__(
        self,
        generator: Generator,
        retriever: Retriever,
        prompts: PromptLibrary,
        system_prompt: str,
        *,
        answer_when_irrelevant: bool = False,
        context_filter: ContextFilter | None = None,
        quote: ContextQuoter = quote_context_block,
    ) -> None:
        self._generator = generator
        self._retriever = retriever
        self._prompts = prompts
        self._system_prompt = system_prompt
        self._answer_when_irrelevant = answer_when_irrelevant
        self._context_filter = context_filter
        self._quote = quote

    @property
    def name(self) -> str:
        return "rag"

    @property
    def description(self) -> str:
        return "embed -> FAISS + BM25 -> fuse -> rerank -> budgeted context -> grounded generation"

    async def plan(self, request: PipelineRequest, trace: RequestTrace) -> Plan:
        question = request.last_user_text
        outcome: RetrievalOutcomeLike = await asyncio.to_thread(self._retriever.retrieve, question)
        for stage, ms in outcome.timings_ms.items():
            trace.timings.add(stage, ms)
        trace.index_version = outcome.index_version
        selection: ContextSelectionLike = await asyncio.to_thread(
            self._retriever.select_context, outcome.chunks
        )
        trace.timings.add("select", selection.select_ms)
        if not outcome.relevant and not self._answer_when_irrelevant:
            trace.template = self._prompts.ref("no_answer")
            return Plan(fixed_answer=self._prompts.render_block("no_answer", "answer"))
        chunks = selection.chunks
        trace.context_tokens = selection.token_count
        trace.sources = [
            {"source": c.chunk.source, "chunk_id": c.chunk.chunk_id, "score": round(c.score, 4)}
            for c in chunks
        ]
        texts = [c.chunk.text for c in chunks]
        if self._context_filter is not None:
            texts = self._context_filter(texts, trace)
        blocks = [
            self._quote(i, c.chunk.source, text)
            for i, (c, text) in enumerate(zip(chunks, texts, strict=True), start=1)
        ]
        trace.template = self._prompts.ref("rag")
        system = self._prompts.render_block("rag", "system", system_prompt=self._system_prompt)
        user = self._prompts.render_block("rag", "user", context_blocks=blocks, question=question)
        history = request.messages[:-1] if request.messages[-1].role == "user" else request.messages
        messages = (*with_system_prompt(system, history), ChatMessage(role="user", content=user))
        return Plan(messages=messages, params=request.params, generator=self._generator)
