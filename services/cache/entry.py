"""One cached answer, as stored (JSON: the same bytes in memory and in Redis)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from services.core.types import FinishReason


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """What a replay needs: the text the client saw, its finish reason and token counts, and what producing
    it cost (backend, busy seconds) so that a hit can be priced as the generation it saved."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    backend: str
    busy_s: float
    created_at: float
    sources: list[dict[str, Any]] = field(default_factory=list)
    groundedness: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | bytes) -> CachedAnswer:
        data = json.loads(raw)
        return cls(**data)


@dataclass(frozen=True, slots=True)
class IndexedQuery:
    """A cached query in its context's semantic index: its text (for the guard) and its embedding."""

    exact_key: str
    query: str
    vector: tuple[float, ...]
    created_at: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | bytes) -> IndexedQuery:
        data = json.loads(raw)
        return cls(
            exact_key=data["exact_key"],
            query=data["query"],
            vector=tuple(data["vector"]),
            created_at=data["created_at"],
        )
