"""Adapts the privacy gate to the runner: inspect the request, pick an allowed backend, filter context
and output. The gate's per-request decision rides on the trace so every later step uses the same
placeholder map. A block leaves its findings on the trace before it propagates, so blocked requests are
counted in the metrics like the others."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

from services.core.errors import PolicyViolation
from services.core.protocols import Generator
from services.pipelines.base import PipelineRequest, RequestTrace
from services.privacy import GateDecision, OutputFilter, PrivacyBlocked, PrivacyGate

FindingsHook = Callable[[dict[str, int], str], None]


class PrivacyGuard:
    def __init__(self, gate: PrivacyGate, *, internal: Generator | None) -> None:
        self._gate = gate
        # The backend `force_internal` re-routes to; None when no internal backend is configured.
        self._internal = internal

    def _decision(self, trace: RequestTrace) -> GateDecision:
        decision = trace.guard_state
        if not isinstance(decision, GateDecision):
            # Fail closed: a step that runs without a gate decision must not see data.
            raise PolicyViolation("privacy gate error: request blocked", code="privacy_gate_error")
        return decision

    def before_plan(
        self, request: PipelineRequest, trace: RequestTrace, generator: Generator
    ) -> PipelineRequest:
        try:
            decision = self._gate.inspect_messages(
                request.messages,
                backend_trust=generator.trust,
                internal_available=self._internal is not None,
                pipeline=trace.pipeline,
            )
        except PrivacyBlocked as blocked:
            _record_block(trace, blocked)
            raise
        trace.guard_state = decision
        trace.privacy = decision.as_hybrid_dict()
        trace.privacy_counts = dict(decision.counts)
        return replace(request, messages=decision.messages)

    def choose_generator(self, trace: RequestTrace, planned: Generator) -> Generator:
        decision = self._decision(trace)
        if decision.backend_trust == "internal" and planned.trust != "internal":
            if self._internal is None:
                raise PolicyViolation("request needs an internal backend and none is configured")
            return self._internal
        return planned

    def filter_context(self, texts: list[str], trace: RequestTrace) -> list[str]:
        decision = self._decision(trace)
        try:
            inspection = self._gate.inspect_context_detailed(
                texts, decision, backend_trust=decision.backend_trust
            )
        except PrivacyBlocked as blocked:
            _record_block(trace, blocked)
            raise
        if inspection.counts:
            _add_counts(trace, inspection.counts)
            if trace.privacy is not None:
                kinds = set(trace.privacy.get("findings", [])) | set(inspection.counts)
                trace.privacy["findings"] = sorted(kinds)
                trace.privacy["context_action"] = inspection.action
        if inspection.injection_flags and trace.privacy is not None:
            trace.privacy["context_injection"] = list(inspection.injection_flags)
        return inspection.texts

    def output_filter(self, trace: RequestTrace, generator: Generator | None) -> OutputFilter:
        decision = self._decision(trace)
        trust = generator.trust if generator is not None else decision.backend_trust
        return self._gate.output_filter(decision, backend_trust=trust)


def _add_counts(trace: RequestTrace, counts: Mapping[str, int]) -> None:
    for kind, count in counts.items():
        trace.privacy_counts[kind] = trace.privacy_counts.get(kind, 0) + count


def _record_block(trace: RequestTrace, blocked: PrivacyBlocked) -> None:
    trace.privacy = blocked.report
    _add_counts(trace, blocked.counts)
