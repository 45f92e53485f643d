"""Cache keys: everything that decides an answer, hashed.

Two levels. The *context* holds what must match exactly for any reuse: the pipeline and the route it took,
the template name and version, the index version, the adapter and its version, the generation
parameters, the deployment (model, system prompt, answer-shaping settings) and every message before the
last user message. The *exact key* adds the last user message. A semantic lookup searches the entries of
one context for a paraphrase of the last user message.

Messages are normalised for layout only: Unicode NFKC, case folded, runs of whitespace made one space,
ends trimmed. Punctuation, word order and wording are kept: they can change meaning.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.core.types import ChatMessage, GenerationParams

_WHITESPACE = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()


def params_fingerprint(params: GenerationParams) -> dict[str, Any]:
    """The generation parameters as a JSON-able mapping (every field: a new one can never be forgotten)."""
    return {
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "seed": params.seed,
        "stop": list(params.stop),
        "response_format": params.response_format,
        "adapter": params.adapter,
    }


def _digest(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def split_last_user(messages: Sequence[ChatMessage]) -> tuple[tuple[ChatMessage, ...], str | None]:
    """(the messages before the last user message, its text); (all, None) when the last message is not
    a user's (then only an exact match can hit)."""
    if messages and messages[-1].role == "user":
        return tuple(messages[:-1]), messages[-1].content
    return tuple(messages), None


@dataclass(frozen=True, slots=True)
class CacheKey:
    """`context`: the semantic bucket; `exact`: the entry's own key; `query`: the last user message."""

    context: str
    exact: str
    query: str | None


def cache_key(
    *,
    pipeline: str,
    route: str | None,
    template: tuple[str, str] | None,
    index_version: str | None,
    adapter: tuple[str, str] | None,
    params: GenerationParams,
    deployment: str,
    messages: Sequence[ChatMessage],
) -> CacheKey:
    history, query = split_last_user(messages)
    context = _digest(
        {
            "pipeline": pipeline,
            "route": route,
            "template": template,
            "index_version": index_version,
            "adapter": adapter,
            "params": params_fingerprint(params),
            "deployment": deployment,
            "history": [(m.role, normalise_text(m.content)) for m in history],
        }
    )
    last = normalise_text(query) if query is not None else None
    return CacheKey(context=context, exact=_digest([context, last]), query=query)


def deployment_fingerprint(parts: dict[str, Any]) -> str:
    """A short hash of what the operator configured that shapes answers (see services.cache.build)."""
    return _digest(parts)[:16]
