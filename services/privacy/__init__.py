"""Privacy gate: find sensitive data, decide per backend trust, redact or block, filter answers."""

from services.core.privacy_settings import PrivacySettings, TrustActions
from services.privacy.detectors import Finding, PiiDetector
from services.privacy.gate import (
    ContextInspection,
    GateDecision,
    OutputFilter,
    PrivacyBlocked,
    PrivacyGate,
    PrivacyReport,
)
from services.privacy.injection import InjectionDetector, quote_context_block
from services.privacy.redaction import Redactor, StreamingTextFilter

__all__ = [
    "ContextInspection",
    "Finding",
    "GateDecision",
    "InjectionDetector",
    "OutputFilter",
    "PiiDetector",
    "PrivacyBlocked",
    "PrivacyGate",
    "PrivacyReport",
    "PrivacySettings",
    "Redactor",
    "StreamingTextFilter",
    "TrustActions",
    "quote_context_block",
]
