"""OpenAI-shaped response bodies, typed, so that the OpenAPI document states the real contract.

Fields are declared in the order they are sent. Bodies are written with `json_body`, which leaves out the
optional fields a response never set (OpenAI's `usage` on a content chunk, the extension's `fallback`
when none happened) and keeps the ones set to None as null.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Every status the service answers with an error object, and when.
ERROR_STATUSES: dict[int, str] = {
    400: "The request is invalid (body, parameter or limit); `param` names the field.",
    401: "Missing or wrong API key (admin routes: admin key).",
    404: "The model (pipeline) does not exist or is not ready.",
    413: "The request body exceeds server.max_body_bytes.",
    422: "The model's answer could not be made to match `response_format`.",
    429: "Rate or token limit of the API key reached; Retry-After says when to retry.",
    502: "The generator backend failed.",
    503: "Not ready, shutting down, overloaded, or retrieval unavailable.",
    504: "The request exceeded server.request_timeout_s.",
}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def json_body(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_unset=True)


class ErrorDetail(_Body):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(_Body):
    """OpenAI's error object; also sent as an event when a stream fails after it started."""

    error: ErrorDetail


class RouteInfo(_Body):
    intent: str
    confidence: float
    scores: dict[str, float]
    target: str


class SourceRef(_Body):
    source: str
    chunk_id: str
    score: float


class TokenCounts(_Body):
    """`cached_prompt`: of `prompt`, the tokens the backend's KV cache held instead of prefilling them."""

    prompt: int
    completion: int
    context: int
    cached_prompt: int


class TemplateInfo(_Body):
    name: str
    version: str


class BackendInfo(_Body):
    name: str
    trust: str | None


class AdapterInfo(_Body):
    name: str
    version: str | None


class FallbackInfo(_Body):
    from_backend: str = Field(alias="from")
    to_backend: str = Field(alias="to")


class PrivacyReport(_Body):
    """What the privacy gate found (kinds only, never values) and did."""

    findings: list[str]
    action: str
    backend_trust: str
    classification: str
    injection: list[str]
    # Present when retrieved context was inspected: what the gate did to it, and the chunks that looked
    # like instructions as (position, rule names).
    context_action: str | None = None
    context_injection: list[tuple[int, list[str]]] | None = None


class GroundednessReport(_Body):
    """The answer's groundedness check: its score against the evidence and what was done with it."""

    score: float
    unsupported: list[str]
    abstained: bool
    threshold: float
    action: str


class TimeToFirstToken(_Body):
    """`visible`: from the request to the first text the client received; `model`: from the start of
    generation to the model's first token (null when no model ran)."""

    visible: float
    model: float | None


class CacheInfo(_Body):
    """The response cache: `hit` is `exact` or `semantic` when the answer was replayed (null otherwise);
    on a hit, the cached query's cosine similarity (1 for an exact hit), the answer's age in seconds and
    the generation cost it saved."""

    hit: Literal["exact", "semantic"] | None
    similarity: float | None = None
    age_s: float | None = None
    saved_usd: float | None = None


class HybridExtension(_Body):
    """The `hybrid` object: how this service produced the answer (pipeline, route, sources, cost...)."""

    pipeline: str
    route: RouteInfo | None
    sources: list[SourceRef]
    timings_ms: dict[str, float]
    tokens: TokenCounts
    cost_usd: dict[str, float]
    privacy: PrivacyReport | None
    index_version: str | None
    template: TemplateInfo | None
    backend: BackendInfo | None
    adapter: AdapterInfo | None = None
    fallback: FallbackInfo | None = None
    degraded: str | None = None
    groundedness: GroundednessReport | None = None
    ttft_ms: TimeToFirstToken | None = None
    cache: CacheInfo | None = None


class PromptTokensDetails(_Body):
    """Of the prompt tokens, `cached_tokens` the backend's KV cache held instead of prefilling them."""

    cached_tokens: int


class Usage(_Body):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails


class AssistantMessage(_Body):
    role: Literal["assistant"]
    content: str


class Choice(_Body):
    index: int
    message: AssistantMessage
    finish_reason: str
    logprobs: None


class ChatCompletion(_Body):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    hybrid: HybridExtension


class ChunkDelta(_Body):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(_Body):
    index: int
    delta: ChunkDelta
    finish_reason: str | None
    logprobs: None


class ChatCompletionChunk(_Body):
    """One `data:` event of a stream. The last chunk carries `hybrid`, and `usage` when asked for."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    hybrid: HybridExtension | None = None


class ModelCard(_Body):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    hybrid_description: str


class ModelList(_Body):
    object: Literal["list"]
    data: list[ModelCard]


class RetrievedChunk(_Body):
    rank: int
    score: float
    source: str
    chunk_id: str
    title: str
    heading_path: list[str]
    text: str


class RetrieveResponse(_Body):
    object: Literal["list"]
    index_version: str
    relevant: bool
    timings_ms: dict[str, float]
    data: list[RetrievedChunk]


class Readiness(_Body):
    status: Literal["ready", "not_ready"]
    reason: str | None = None
    pipelines: list[str] | None = None
    unavailable: dict[str, str] | None = None
    generator: BackendInfo | None = None
    index: IndexInfo | None = None


class IndexInfo(_Body):
    version: str
    chunks: int


class Health(_Body):
    status: Literal["ok"]


class IndexReloaded(_Body):
    reloaded: bool
    version: str
    chunks: int


class AdapterLoaded(_Body):
    loaded: str
    version: str


Readiness.model_rebuild()


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entries of a route's error statuses, each with the OpenAI error object."""
    return {status: {"model": ErrorResponse, "description": ERROR_STATUSES[status]} for status in statuses}
