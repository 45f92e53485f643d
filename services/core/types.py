"""Domain types shared by every layer. Frozen dataclasses: values, not behaviour."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Role = Literal["system", "user", "assistant", "tool"]
Trust = Literal["internal", "external"]
FinishReason = Literal["stop", "length"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class GenerationParams:
    """Sampling and output controls for one generation call.

    `adapter` names a LoRA adapter known to the backend (None: the base model).
    `response_format` is the OpenAI-shaped dict, passed through or enforced by the backend.
    """

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    response_format: dict[str, Any] | None = None
    adapter: str | None = None


@dataclass(frozen=True, slots=True)
class GenerationResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
    backend: str
    # Seconds from the call to the first generated token, and the seconds the backend was busy.
    ttft_s: float
    busy_s: float
    cached_prompt_tokens: int = 0  # of prompt_tokens, those a KV cache held instead of prefilling them


@dataclass(frozen=True, slots=True)
class TokenDelta:
    """One streamed piece of output. The final delta carries `finish_reason` and the token counts."""

    text: str
    finish_reason: FinishReason | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_prompt_tokens: int | None = None  # of prompt_tokens, those a KV cache held (None: not reported)
    ttft_s: float | None = None
    busy_s: float | None = None


@dataclass(frozen=True, slots=True)
class Chunk:
    """A retrievable piece of a document. `chunk_id` is a stable hash of source and text."""

    chunk_id: str
    source: str
    text: str
    title: str = ""
    heading_path: tuple[str, ...] = ()
    token_count: int = 0


@dataclass(frozen=True, slots=True)
class ScoredChunk:
    chunk: Chunk
    score: float


@dataclass(frozen=True, slots=True)
class RetrievalOutcome:
    """Chunks best first. `score` of each is its cosine similarity to the query.

    timings_ms has "embed" (query embedding), "search" (dense + sparse + fusion), "rerank".
    relevant: the best dense cosine reached rag.relevance.min_dense_score: the index likely knows the topic.
    query_vector: the query's embedding, for evidence selection.
    """

    chunks: list[ScoredChunk]
    timings_ms: dict[str, float]
    index_version: str
    max_dense_score: float
    relevant: bool
    query_vector: npt.NDArray[np.float32]
    # The query of a second search when rag.query_rewrite fired; None when the first one was used.
    rewritten_query: str | None = None
    rewrite_ms: float = 0.0  # the rewrite and its second search, inside timings_ms["search"]


@dataclass(frozen=True, slots=True)
class ContextSelection:
    """The chunks that go into the prompt, in citation order, and the tokens they take."""

    chunks: list[ScoredChunk]
    token_count: int
    select_ms: float


@dataclass(frozen=True, slots=True)
class IntentPrediction:
    intent: str
    confidence: float
    scores: dict[str, float]


@dataclass(frozen=True, slots=True)
class RouteDecision:
    intent: str
    confidence: float
    scores: dict[str, float]
    target: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "intent": self.intent,
            "confidence": round(self.confidence, 4),
            "scores": {k: round(v, 4) for k, v in self.scores.items()},
            "target": self.target,
        }


@dataclass(slots=True)
class StageTimings:
    """Milliseconds per stage for one request, in the order stages ran."""

    ms: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, milliseconds: float) -> None:
        self.ms[stage] = self.ms.get(stage, 0.0) + milliseconds
