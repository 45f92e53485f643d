"""Settings of the privacy gate, mounted at `Settings.privacy`. They live in core because the service's
settings hold them; services/privacy reads them from here.

Environment overrides follow the service's convention, e.g. `HYBRID_PRIVACY__FAIL_CLOSED=false`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.core.types import Trust

Classification = Literal["public", "internal", "confidential", "restricted"]
Action = Literal["allow", "redact", "block", "force_internal"]

# Ordered from least to most sensitive; comparisons use the index.
CLASSIFICATION_ORDER: tuple[Classification, ...] = ("public", "internal", "confidential", "restricted")
# Ordered from least to most severe: the gate applies the most severe action any finding asks for.
ACTION_ORDER: tuple[Action, ...] = ("allow", "redact", "force_internal", "block")

DETECTOR_KINDS: tuple[str, ...] = ("email", "phone", "card", "iban", "ssn", "ipv4", "ipv6", "secret")


class TrustActions(BaseModel):
    """What happens to data of one classification (or one kind) per backend trust level."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    internal: Action = "allow"
    external: Action = "allow"

    @model_validator(mode="after")
    def _internal_cannot_force_internal(self) -> TrustActions:
        if self.internal == "force_internal":
            raise ValueError(
                "internal: force_internal makes no sense for an internal backend; use redact or block"
            )
        return self

    def for_trust(self, trust: Trust) -> Action:
        return self.internal if trust == "internal" else self.external


def _default_actions() -> dict[Classification, TrustActions]:
    return {
        "public": TrustActions(internal="allow", external="allow"),
        "internal": TrustActions(internal="allow", external="allow"),
        "confidential": TrustActions(internal="allow", external="redact"),
        # force_internal degrades to block when no internal backend is configured (see policy.py).
        "restricted": TrustActions(internal="redact", external="force_internal"),
    }


def _default_kind_classification() -> dict[str, Classification]:
    return {
        "secret": "restricted",
        "card": "restricted",
        "iban": "restricted",
        "ssn": "restricted",
        "email": "confidential",
        "phone": "confidential",
        "ipv4": "internal",
        "ipv6": "internal",
    }


class PrivacySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    # Any exception inside the gate blocks the request instead of letting unchecked text through.
    fail_closed: bool = True
    # Detector kinds to run (a subset of DETECTOR_KINDS).
    detectors: list[str] = Field(default_factory=lambda: list(DETECTOR_KINDS))
    # Regions tried, in order, for phone numbers written without a country code.
    phone_regions: list[str] = Field(default_factory=lambda: ["US", "GB", "DE", "FR", "NL", "ES", "IT"])
    kind_classification: dict[str, Classification] = Field(default_factory=_default_kind_classification)
    actions: dict[Classification, TrustActions] = Field(default_factory=_default_actions)
    # Per-kind overrides of the classification's action, e.g. {"ipv4": {"external": "redact"}}.
    kind_actions: dict[str, TrustActions] = Field(default_factory=dict)
    # The classification every request has at least.
    minimum_classification: Classification = "public"
    # Per pipeline (`model` field): the classification its requests have at least.
    pipeline_classification: dict[str, Classification] = Field(default_factory=dict)
    # Requests whose prompt carries knowledge-base text are at least this.
    knowledge_base_classification: Classification = "internal"
    # Instruction-like text in user messages: report it (flag) or refuse the request (block).
    injection_action: Literal["flag", "block"] = "flag"
    # Instruction-like text in retrieved chunks: report it, replace the chunk by a notice, or refuse.
    context_injection_action: Literal["flag", "drop", "block"] = "flag"
    # Put the user's own values back into the answer in place of placeholders (the backend never saw them).
    restore_placeholders: bool = True
    # Kinds the model must never return, even from an internal backend (values it produced or echoed).
    output_redact_kinds: list[str] = Field(default_factory=lambda: ["secret"])
    # Streaming answers are held back by this many characters so a value with spaces in it (an IBAN
    # with spaces is up to 42) is seen whole; tokens without spaces are never split whatever the value.
    # Larger is safer for odd formats; every character held back adds to time to first token.
    stream_holdback_chars: int = Field(48, ge=16, le=4096)
    # Beyond this, a stream buffer without a safe cut point is flushed anyway (redacting what it must).
    stream_max_buffer_chars: int = Field(16_384, ge=256)

    @field_validator("detectors", "output_redact_kinds")
    @classmethod
    def _known_kinds(cls, kinds: list[str]) -> list[str]:
        unknown = sorted(set(kinds) - set(DETECTOR_KINDS))
        if unknown:
            raise ValueError(f"unknown detector kinds {unknown}; known: {list(DETECTOR_KINDS)}")
        return kinds

    @field_validator("kind_classification", "kind_actions")
    @classmethod
    def _known_kind_keys(cls, mapping: dict[str, object]) -> dict[str, object]:
        unknown = sorted(set(mapping) - set(DETECTOR_KINDS))
        if unknown:
            raise ValueError(f"unknown detector kinds {unknown}; known: {list(DETECTOR_KINDS)}")
        return mapping

    @model_validator(mode="after")
    def _complete_tables(self) -> PrivacySettings:
        missing = [level for level in CLASSIFICATION_ORDER if level not in self.actions]
        if missing:
            raise ValueError(f"actions must name every classification; missing {missing}")
        unclassified = [kind for kind in self.detectors if kind not in self.kind_classification]
        if unclassified:
            raise ValueError(f"kind_classification lacks detector kinds {unclassified}")
        if self.stream_max_buffer_chars < 2 * self.stream_holdback_chars:
            raise ValueError(
                "stream_max_buffer_chars must be at least twice stream_holdback_chars, got "
                f"{self.stream_max_buffer_chars} < 2 * {self.stream_holdback_chars}"
            )
        return self


__all__ = [
    "ACTION_ORDER",
    "CLASSIFICATION_ORDER",
    "DETECTOR_KINDS",
    "Action",
    "Classification",
    "PrivacySettings",
    "TrustActions",
]
