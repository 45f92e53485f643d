"""What the runner asks of the response cache: which requests may use it, the key a request's trace gives,
and which finished answers may be replayed to someone else (services.cache does the storing)."""

from __future__ import annotations

from collections.abc import Sequence

from services.cache.entry import CachedAnswer
from services.cache.key import CacheKey, cache_key
from services.core.types import ChatMessage, FinishReason, GenerationParams
from services.pipelines.base import GroundednessReport, RequestTrace, SourceRef

# The version of an adapter nobody loaded at run time: the folder configured in generator.adapters
# (which the deployment fingerprint covers).
CONFIGURED_ADAPTER_VERSION = "initial"


def bypass_reason(trace: RequestTrace) -> str | None:
    """Requests the privacy gate flagged, and degraded answers, neither read nor fill the cache."""
    if trace.degraded is not None:
        return "degraded"
    privacy = trace.privacy
    if privacy is not None and (privacy["findings"] or privacy["action"] != "allow" or privacy["injection"]):
        return "privacy"
    return None


def request_key(
    deployment: str, trace: RequestTrace, params: GenerationParams, messages: Sequence[ChatMessage]
) -> CacheKey:
    """The key of a planned request: its pipeline and route, template, index and adapter versions."""
    adapter = None
    if trace.adapter is not None:
        version = trace.adapter_versions.get(trace.adapter, CONFIGURED_ADAPTER_VERSION)
        adapter = (trace.adapter, version)
    return cache_key(
        deployment=deployment,
        pipeline=trace.pipeline,
        route=trace.route.target if trace.route is not None else None,
        template=(trace.template.name, trace.template.version) if trace.template else None,
        index_version=trace.index_version,
        adapter=adapter,
        params=params,
        messages=messages,
    )


def not_cacheable(
    trace: RequestTrace, finish_reason: FinishReason, complete: bool, output_altered: bool
) -> str | None:
    """Why a finished answer must not be replayed to anyone else, or None when it may be.

    `complete`: a generation ran and produced text; `output_altered`: the privacy output filter changed it.
    """
    if finish_reason != "stop":
        return "truncated"
    if not complete:
        return "empty"
    if trace.fallback is not None:
        return "fallback"  # the key names the primary's deployment; a fallback answer is not its answer
    privacy = trace.privacy
    if privacy is not None:
        # Findings in the input or in the retrieved context (the context filter adds its own kinds).
        context_action = privacy.get("context_action", "allow")
        if privacy["findings"] or privacy.get("context_injection") or context_action != "allow":
            return "privacy"
    if output_altered:
        return "privacy_output"
    check = trace.groundedness
    if check is not None:
        below = check["score"] < check["threshold"]
        # An extract quotes the evidence itself; a flagged, abstaining or weak answer would be repeated
        # to everyone who asks, where a new generation may do better.
        if check["action"] in ("flag", "abstain") or (check["action"] == "pass" and below):
            return "ungrounded"
    return None


def restore_trace(answer: CachedAnswer, trace: RequestTrace) -> None:
    """A replayed answer reports the sources it drew on and its own groundedness check."""
    trace.sources = [SourceRef(**source) for source in answer.sources]  # type: ignore[typeddict-item]
    if answer.groundedness is not None:
        trace.groundedness = GroundednessReport(**answer.groundedness)  # type: ignore[typeddict-item]
