"""Decide, per finding and per request, what the backend may see: allow, redact, block or force_internal.

Each finding gets the action of its classification (its kind's, raised to the request's floor) for the
backend's trust level, unless `kind_actions` overrides it for that kind. The request takes the most
severe action of its findings and of its floor classification. `force_internal` means "send this to an
internal backend instead"; where none exists it becomes `block`. After forcing, the findings are judged
again for the internal backend (by default restricted data is then redacted).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.core.privacy_settings import ACTION_ORDER, Action, Classification, PrivacySettings
from services.core.types import Trust
from services.privacy.classification import classify_finding, most_sensitive
from services.privacy.detectors import Finding

_SEVERITY: dict[Action, int] = {action: rank for rank, action in enumerate(ACTION_ORDER)}


def most_severe(actions: Sequence[Action]) -> Action:
    return max(actions, key=_SEVERITY.__getitem__, default="allow")


@dataclass(frozen=True, slots=True)
class PolicyOutcome:
    """What to do with one piece of text (or a whole request) for one backend.

    `action`: the request-level action. `backend_trust`: the trust level the text is prepared for
    (`internal` after force_internal). `to_redact`: the findings to replace by placeholders.
    `blocking_kinds`: the kinds that caused a block (for the error message; never values).
    """

    action: Action
    backend_trust: Trust
    classification: Classification
    to_redact: tuple[Finding, ...]
    blocking_kinds: tuple[str, ...]


class PrivacyPolicy:
    def __init__(self, settings: PrivacySettings) -> None:
        self._settings = settings

    def finding_action(self, finding: Finding, floor: Classification, trust: Trust) -> Action:
        override = self._settings.kind_actions.get(finding.kind)
        if override is not None:
            return override.for_trust(trust)
        return self._settings.actions[classify_finding(self._settings, finding, floor)].for_trust(trust)

    def decide(
        self,
        findings: Sequence[Finding],
        *,
        floor: Classification,
        backend_trust: Trust,
        internal_available: bool,
    ) -> PolicyOutcome:
        outcome = self._decide_for(findings, floor, backend_trust)
        if outcome.action != "force_internal":
            return outcome
        if not internal_available:
            return PolicyOutcome("block", backend_trust, outcome.classification, (), outcome.blocking_kinds)
        forced = self._decide_for(findings, floor, "internal")
        if forced.action == "block":
            return forced
        return PolicyOutcome(
            "force_internal", "internal", forced.classification, forced.to_redact, outcome.blocking_kinds
        )

    def _decide_for(self, findings: Sequence[Finding], floor: Classification, trust: Trust) -> PolicyOutcome:
        settings = self._settings
        classification = most_sensitive([floor, *(classify_finding(settings, f, floor) for f in findings)])
        per_finding = [(finding, self.finding_action(finding, floor, trust)) for finding in findings]
        floor_action = settings.actions[floor].for_trust(trust)
        # A floor of "redact" has nothing of its own to redact; it only counts when it blocks or forces.
        candidates: list[Action] = [a for _, a in per_finding]
        if floor_action in ("block", "force_internal"):
            candidates.append(floor_action)
        action = most_severe(candidates)
        to_redact = tuple(f for f, a in per_finding if a == "redact")
        if action == "redact" and not to_redact:
            action = "allow"
        severe_kinds = sorted(
            {f.kind for f, a in per_finding if a == action and a in ("block", "force_internal")}
        )
        if not severe_kinds and action in ("block", "force_internal"):
            severe_kinds = [f"classification:{floor}"]
        return PolicyOutcome(action, trust, classification, to_redact, tuple(severe_kinds))


__all__ = ["PolicyOutcome", "PrivacyPolicy", "most_severe"]
