"""The key a request's trace gives: the route the router took, the template, the index version and the
adapter version loaded when the request started are all in it."""

from __future__ import annotations

from typing import Any

import pytest

from services.cache.key import CacheKey
from services.core.types import ChatMessage, GenerationParams, RouteDecision
from services.llm.prompts import TemplateRef
from services.pipelines.base import RequestTrace
from services.pipelines.cache_policy import bypass_reason, request_key

pytestmark = pytest.mark.unit

MESSAGES = (ChatMessage("user", "How many vacation days do I get?"),)


def routed(target: str, **fields: Any) -> RequestTrace:
    trace = RequestTrace(pipeline="hybrid", **fields)
    trace.route = RouteDecision(intent="knowledge", confidence=0.9, scores={}, target=target)
    trace.template = TemplateRef("rag", "1")
    trace.index_version = "v1"
    return trace


def key_of(trace: RequestTrace) -> CacheKey:
    return request_key("deployment", trace, GenerationParams(), MESSAGES)


def test_the_route_taken_template_and_index_version_are_in_the_key() -> None:
    base = key_of(routed("rag"))
    assert key_of(routed("rag")) == base
    assert key_of(routed("prompt")).exact != base.exact
    other_template = routed("rag")
    other_template.template = TemplateRef("rag", "2")
    assert key_of(other_template).exact != base.exact
    other_index = routed("rag")
    other_index.index_version = "v2"
    assert key_of(other_index).exact != base.exact


def test_the_adapter_version_comes_from_the_versions_loaded_at_the_start() -> None:
    configured = routed("rag")
    configured.adapter = "grounded"
    reloaded = routed("rag", adapter_versions={"grounded": "2026-12-03"})
    reloaded.adapter = "grounded"
    assert key_of(configured).exact != key_of(reloaded).exact != key_of(routed("rag")).exact


def test_degraded_answers_and_flagged_inputs_bypass() -> None:
    trace = routed("rag")
    assert bypass_reason(trace) is None
    trace.degraded = "retrieval_unavailable"
    assert bypass_reason(trace) == "degraded"
    flagged = routed("rag")
    flagged.privacy = {"findings": [], "action": "allow", "backend_trust": "internal",
                       "classification": "public", "injection": ["ignore_previous"]}  # fmt: skip
    assert bypass_reason(flagged) == "privacy"
