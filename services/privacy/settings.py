"""The privacy gate's settings types, for callers outside services/privacy. They are defined in
services/core/privacy_settings.py: the service's settings hold them, and core imports nothing above it."""

from services.core.privacy_settings import (
    ACTION_ORDER,
    CLASSIFICATION_ORDER,
    DETECTOR_KINDS,
    Action,
    Classification,
    PrivacySettings,
    TrustActions,
)

__all__ = [
    "ACTION_ORDER",
    "CLASSIFICATION_ORDER",
    "DETECTOR_KINDS",
    "Action",
    "Classification",
    "PrivacySettings",
    "TrustActions",
]
