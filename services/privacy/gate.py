"""The privacy gate: what the gateway and pipelines call before a backend sees text and after it answers.

    gate = PrivacyGate(settings.privacy)
    decision = gate.inspect_messages(messages, backend_trust="external", internal_available=True)
    # decision.action == "force_internal": send decision.messages to an internal backend instead
    context = gate.inspect_context(chunk_texts, decision, backend_trust=decision.backend_trust)
    answer_filter = gate.output_filter(decision, backend_trust=decision.backend_trust)
    for delta in stream: send(answer_filter.feed(delta.text))
    send(answer_filter.flush())

Blocks raise `PrivacyBlocked` (a `PolicyViolation`) naming the category, never the value, and carrying
the kinds found so that blocked requests are counted too. With `fail_closed` (the default) any other
exception inside the gate also becomes a PolicyViolation, so a bug never lets unchecked text out.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NotRequired, TypedDict, TypeVar

from services.core.errors import PolicyViolation
from services.core.privacy_settings import Action, Classification, PrivacySettings
from services.core.types import ChatMessage, Trust
from services.privacy.classification import floor_classification, most_sensitive
from services.privacy.detectors import Finding, PiiDetector
from services.privacy.injection import InjectionDetector
from services.privacy.policy import PrivacyPolicy
from services.privacy.redaction import PLACEHOLDER_LABELS, Redactor, StreamingTextFilter

logger = logging.getLogger(__name__)

GATE_ERROR_MESSAGE = "privacy gate error: request blocked"
DROPPED_CONTEXT_NOTICE = "[retrieved text removed: it contained instruction-like content]"
_INJECTION_SCANNED_ROLES = frozenset({"user", "tool"})

_T = TypeVar("_T")


class PrivacyReport(TypedDict):
    """The `privacy` object of the response's `hybrid` extension: kinds and actions, never values."""

    findings: list[str]
    action: Action
    backend_trust: Trust
    classification: Classification
    injection: list[str]
    # Set when retrieved context was inspected: what the gate did to it, and which chunks looked like
    # instructions (chunk position, rule names).
    context_action: NotRequired[Action]
    context_injection: NotRequired[list[tuple[int, tuple[str, ...]]]]


class PrivacyBlocked(PolicyViolation):
    """The gate refused the request. `counts`: findings per kind in the text it inspected (the messages,
    or the retrieved context); `report`: the `privacy` report of the request, action `block`."""

    def __init__(
        self, message: str, *, counts: Mapping[str, int], report: PrivacyReport, code: str | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.counts = counts
        self.report = report


@dataclass(frozen=True, slots=True)
class GateDecision:
    """The gate's verdict on one request's messages.

    `messages`: what may be sent (redacted where the policy says so), prepared for `backend_trust`
    (`internal` after force_internal). `findings`: kinds found, sorted; `counts`: findings per kind.
    `redactor`: this request's placeholder map; redacts further text consistently and restores answers.
    `injection_flags`: names of the injection rules that matched in user/tool messages.
    """

    messages: tuple[ChatMessage, ...]
    findings: tuple[str, ...]
    counts: Mapping[str, int]
    classification: Classification
    action: Action
    backend_trust: Trust
    redactor: Redactor
    injection_flags: tuple[str, ...] = ()
    floor: Classification = "public"
    redacted_count: int = 0

    def as_hybrid_dict(self) -> PrivacyReport:
        """The `privacy` object of the response's `hybrid` extension (kinds and action, no values)."""
        return {
            "findings": list(self.findings),
            "action": self.action,
            "backend_trust": self.backend_trust,
            "classification": self.classification,
            "injection": list(self.injection_flags),
        }


@dataclass(frozen=True, slots=True)
class ContextInspection:
    """Retrieved chunks after the gate: `texts[i]` replaces chunk i (same order and length)."""

    texts: list[str]
    counts: Mapping[str, int]
    action: Action
    injection_flags: tuple[tuple[int, tuple[str, ...]], ...] = field(default=())


class OutputFilter:
    """Filters the model's answer on its way to the user: `feed(chunk) -> str`, then `flush() -> str`.

    Removes values of `output_redact_kinds` the model produced (e.g. secrets) and puts the user's own
    values back in place of placeholders (when `restore_placeholders`). Holds back a bounded tail so a
    value or placeholder split across chunks is handled whole. `filter_text` does a whole answer at once.
    """

    def __init__(self, stream: StreamingTextFilter, *, fail_closed: bool) -> None:
        self._stream = stream
        self._fail_closed = fail_closed

    def feed(self, chunk: str) -> str:
        return _guarded(lambda: self._stream.feed(chunk), self._fail_closed, fallback=chunk)

    def flush(self) -> str:
        return _guarded(self._stream.flush, self._fail_closed, fallback="")

    def filter_text(self, text: str) -> str:
        return self.feed(text) + self.flush()


def _guarded(call: Callable[[], _T], fail_closed: bool, *, fallback: _T) -> _T:
    try:
        return call()
    except PolicyViolation:
        raise
    except Exception as exc:
        # The exception text can quote the input; log only its type.
        logger.error("privacy gate failed (%s); fail_closed=%s", type(exc).__name__, fail_closed)
        if fail_closed:
            raise PolicyViolation(GATE_ERROR_MESSAGE, code="privacy_gate_error") from None
        return fallback


def _counts(findings: Sequence[Finding]) -> Mapping[str, int]:
    return MappingProxyType(dict(sorted(Counter(f.kind for f in findings).items())))


def _messages_blocked(
    counts: Mapping[str, int], classification: Classification, trust: Trust, flags: tuple[str, ...]
) -> PrivacyReport:
    return {
        "findings": list(counts),
        "action": "block",
        "backend_trust": trust,
        "classification": classification,
        "injection": list(flags),
    }


def _context_blocked(decision: GateDecision, counts: Mapping[str, int]) -> PrivacyReport:
    report = decision.as_hybrid_dict()
    report["findings"] = sorted(set(decision.findings) | set(counts))
    report["action"] = "block"
    report["context_action"] = "block"
    return report


class PrivacyGate:
    def __init__(self, settings: PrivacySettings) -> None:
        self.settings = settings
        self._detector = PiiDetector(settings.detectors, settings.phone_regions)
        self._output_detector = PiiDetector(settings.output_redact_kinds, settings.phone_regions)
        self._policy = PrivacyPolicy(settings)
        self._injection = InjectionDetector()

    def detect(self, text: str) -> list[Finding]:
        return self._detector.detect(text)

    # --- messages ----------------------------------------------------------------------------------

    def inspect_messages(
        self,
        messages: Sequence[ChatMessage],
        *,
        backend_trust: Trust,
        internal_available: bool,
        pipeline: str | None = None,
    ) -> GateDecision:
        """Find, classify and apply the policy to a request's messages. Raises PolicyViolation on block."""
        return _guarded(
            lambda: self._inspect_messages(messages, backend_trust, internal_available, pipeline),
            self.settings.fail_closed,
            fallback=self._passthrough(messages, backend_trust),
        )

    def _passthrough(self, messages: Sequence[ChatMessage], backend_trust: Trust) -> GateDecision:
        return GateDecision(
            messages=tuple(messages),
            findings=(),
            counts=MappingProxyType({}),
            classification=self.settings.minimum_classification,
            action="allow",
            backend_trust=backend_trust,
            redactor=Redactor(self._detector.detect, lambda finding: False),
        )

    def _inspect_messages(
        self,
        messages: Sequence[ChatMessage],
        backend_trust: Trust,
        internal_available: bool,
        pipeline: str | None,
    ) -> GateDecision:
        if not self.settings.enabled:
            return self._passthrough(messages, backend_trust)
        floor = floor_classification(self.settings, pipeline=pipeline)
        per_message = [self._detector.detect(message.content) for message in messages]
        all_findings = [finding for findings in per_message for finding in findings]
        flags = self._injection_flags(messages)
        outcome = self._policy.decide(
            all_findings, floor=floor, backend_trust=backend_trust, internal_available=internal_available
        )
        counts = _counts(all_findings)
        if flags and self.settings.injection_action == "block":
            logger.info("privacy gate blocked a request: injection rules %s", ",".join(flags))
            raise PrivacyBlocked(
                f"request blocked: the message looks like a prompt injection ({', '.join(flags)})",
                counts=counts,
                report=_messages_blocked(counts, outcome.classification, backend_trust, flags),
                code="prompt_injection",
            )
        logger.debug(
            "privacy gate: kinds=%s action=%s classification=%s trust=%s",
            dict(counts),
            outcome.action,
            outcome.classification,
            outcome.backend_trust,
        )
        if outcome.action == "block":
            raise PrivacyBlocked(
                f"request blocked by privacy policy: {outcome.classification} data "
                f"({', '.join(outcome.blocking_kinds)}) may not be sent to an {backend_trust} backend"
                + ("" if internal_available else " and no internal backend is available"),
                counts=counts,
                report=_messages_blocked(counts, outcome.classification, backend_trust, flags),
            )
        prepared_trust = outcome.backend_trust
        redactor = Redactor(
            self._detector.detect,
            lambda finding: self._policy.finding_action(finding, floor, prepared_trust) == "redact",
        )
        marked = {id(finding) for finding in outcome.to_redact}
        prepared = tuple(
            ChatMessage(
                message.role,
                redactor.redact_findings(message.content, [f for f in findings if id(f) in marked]),
            )
            if any(id(f) in marked for f in findings)
            else message
            for message, findings in zip(messages, per_message, strict=True)
        )
        return GateDecision(
            messages=prepared,
            findings=tuple(counts),
            counts=counts,
            classification=outcome.classification,
            action=outcome.action,
            backend_trust=prepared_trust,
            redactor=redactor,
            injection_flags=flags,
            floor=floor,
            redacted_count=len(marked),
        )

    def _injection_flags(self, messages: Sequence[ChatMessage]) -> tuple[str, ...]:
        flags: dict[str, None] = {}
        for message in messages:
            if message.role in _INJECTION_SCANNED_ROLES:
                flags.update(dict.fromkeys(self._injection.detect(message.content)))
        return tuple(flags)

    # --- retrieved context -------------------------------------------------------------------------

    def inspect_context(
        self, chunks_texts: Sequence[str], decision: GateDecision, *, backend_trust: Trust
    ) -> list[str]:
        """Retrieved chunks before they enter a prompt: redacted as the messages are, or blocked."""
        return self.inspect_context_detailed(chunks_texts, decision, backend_trust=backend_trust).texts

    def inspect_context_detailed(
        self, chunks_texts: Sequence[str], decision: GateDecision, *, backend_trust: Trust
    ) -> ContextInspection:
        return _guarded(
            lambda: self._inspect_context(chunks_texts, decision, backend_trust),
            self.settings.fail_closed,
            fallback=ContextInspection(list(chunks_texts), MappingProxyType({}), "allow"),
        )

    def _inspect_context(
        self, chunks_texts: Sequence[str], decision: GateDecision, backend_trust: Trust
    ) -> ContextInspection:
        if not self.settings.enabled:
            return ContextInspection(list(chunks_texts), MappingProxyType({}), "allow")
        floor = most_sensitive((decision.floor, self.settings.knowledge_base_classification))
        per_chunk = [self._detector.detect(text) for text in chunks_texts]
        all_findings = [finding for findings in per_chunk for finding in findings]
        # The backend is already chosen when context is retrieved, so "force_internal" cannot be honoured
        # here: it blocks (the caller avoids this by inspecting with the internal backend's trust).
        outcome = self._policy.decide(
            all_findings, floor=floor, backend_trust=backend_trust, internal_available=False
        )
        counts = _counts(all_findings)
        if outcome.action == "block":
            raise PrivacyBlocked(
                f"request blocked by privacy policy: retrieved context holds {outcome.classification} data "
                f"({', '.join(outcome.blocking_kinds)}) that may not be sent to an {backend_trust} backend",
                counts=counts,
                report=_context_blocked(decision, counts),
            )
        marked = {id(finding) for finding in outcome.to_redact}
        texts: list[str] = []
        injection: list[tuple[int, tuple[str, ...]]] = []
        for index, (text, findings) in enumerate(zip(chunks_texts, per_chunk, strict=True)):
            flags = self._injection.detect(text)
            if flags:
                injection.append((index, flags))
                if self.settings.context_injection_action == "block":
                    raise PrivacyBlocked(
                        "request blocked: retrieved context looks like a prompt injection "
                        f"({', '.join(flags)})",
                        counts=counts,
                        report=_context_blocked(decision, counts),
                        code="prompt_injection",
                    )
                if self.settings.context_injection_action == "drop":
                    texts.append(DROPPED_CONTEXT_NOTICE)
                    continue
            texts.append(decision.redactor.redact_findings(text, [f for f in findings if id(f) in marked]))
        logger.debug(
            "privacy gate (context): chunks=%d kinds=%s action=%s injection_chunks=%d",
            len(chunks_texts),
            dict(counts),
            outcome.action,
            len(injection),
        )
        return ContextInspection(texts, counts, outcome.action, tuple(injection))

    # --- answers -----------------------------------------------------------------------------------

    def output_filter(self, decision: GateDecision, *, backend_trust: Trust) -> OutputFilter:
        """A filter for the model's answer (streaming or whole) to this request.

        Restoring placeholders into the answer is safe for both trust levels: the value goes back to the
        user who sent it, and the backend never saw it. Kinds in `output_redact_kinds` are neither
        restored nor let through when the model produces them.
        """
        settings = self.settings
        forbidden = tuple(settings.output_redact_kinds)
        detector = self._output_detector
        redactor = decision.redactor

        def redact_forbidden(text: str) -> str:
            findings = detector.detect(text) if forbidden else []
            if not findings:
                return text
            pieces: list[str] = []
            position = 0
            for finding in findings:
                pieces.append(text[position : finding.start])
                pieces.append(f"[{PLACEHOLDER_LABELS[finding.kind]}_REDACTED]")
                position = finding.end
            pieces.append(text[position:])
            logger.debug(
                "privacy gate (output): redacted %d values from a %s backend", len(findings), backend_trust
            )
            return "".join(pieces)

        def transform(text: str) -> str:
            cleaned = redact_forbidden(text)
            if settings.enabled and settings.restore_placeholders:
                return redactor.restore(cleaned, except_kinds=forbidden)
            return cleaned

        stream = StreamingTextFilter(
            transform,
            detector.detect if forbidden else None,
            settings.stream_holdback_chars,
            settings.stream_max_buffer_chars,
        )
        return OutputFilter(stream, fail_closed=settings.fail_closed)


__all__ = [
    "DROPPED_CONTEXT_NOTICE",
    "GATE_ERROR_MESSAGE",
    "ContextInspection",
    "GateDecision",
    "OutputFilter",
    "PrivacyBlocked",
    "PrivacyGate",
]
