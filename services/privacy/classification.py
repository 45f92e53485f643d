"""Classify a request as public | internal | confidential | restricted from its findings and settings."""

from __future__ import annotations

from collections.abc import Iterable

from services.core.privacy_settings import CLASSIFICATION_ORDER, Classification, PrivacySettings
from services.privacy.detectors import Finding

_RANK: dict[Classification, int] = {level: rank for rank, level in enumerate(CLASSIFICATION_ORDER)}


def most_sensitive(levels: Iterable[Classification]) -> Classification:
    """The most sensitive of `levels` (`public` when there are none)."""
    return max(levels, key=_RANK.__getitem__, default="public")


def floor_classification(
    settings: PrivacySettings, *, pipeline: str | None = None, touches_knowledge_base: bool = False
) -> Classification:
    """The classification a request has before anything is found in it."""
    levels: list[Classification] = [settings.minimum_classification]
    if pipeline is not None and pipeline in settings.pipeline_classification:
        levels.append(settings.pipeline_classification[pipeline])
    if touches_knowledge_base:
        levels.append(settings.knowledge_base_classification)
    return most_sensitive(levels)


def classify_finding(settings: PrivacySettings, finding: Finding, floor: Classification) -> Classification:
    """A finding is as sensitive as its kind, and never less than the request's floor."""
    return most_sensitive((settings.kind_classification[finding.kind], floor))


def classify(
    settings: PrivacySettings,
    findings: Iterable[Finding],
    *,
    pipeline: str | None = None,
    touches_knowledge_base: bool = False,
) -> Classification:
    """The request's classification: its floor raised by the most sensitive finding."""
    floor = floor_classification(settings, pipeline=pipeline, touches_knowledge_base=touches_knowledge_base)
    return most_sensitive([floor, *(settings.kind_classification[f.kind] for f in findings)])


__all__ = ["classify", "classify_finding", "floor_classification", "most_sensitive"]
