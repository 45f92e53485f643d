"""Routing policy: an intent prediction -> the pipeline that serves the request."""

from __future__ import annotations

from typing import Literal, cast

from services.core.errors import ConfigError
from services.core.settings import RouterSettings
from services.core.types import IntentPrediction, RouteDecision

KNOWN_PIPELINES: frozenset[str] = frozenset({"prompt", "rag", "tuned", "refuse"})
DEFAULT_OOS_INTENT = "out_of_scope"
# argmax: the top intent's target; low_confidence / unmapped_intent: low_confidence_target;
# oos_threshold: below a threshold-method router's calibrated threshold, out of scope.
RoutingRule = Literal["argmax", "low_confidence", "unmapped_intent", "oos_threshold"]


def apply_oos_threshold(prediction: IntentPrediction, threshold: float, oos_label: str) -> IntentPrediction:
    """The CLINC150 oos-threshold method: below the calibrated max probability, predict out of scope.

    Confidence becomes 1 - max probability: how sure the model is that none of its intents applies.
    """
    if prediction.confidence >= threshold:
        return prediction
    rejected_confidence = 1.0 - prediction.confidence
    return IntentPrediction(intent=oos_label, confidence=rejected_confidence, scores=prediction.scores)


class RoutingPolicy:
    """Maps intents to pipelines (settings.targets); unsure predictions go to settings.low_confidence_target.

    `threshold`: a calibrated out-of-scope threshold (from a router trained with the threshold method);
    when given, a prediction whose confidence is below it becomes `oos_intent` before anything else.
    """

    def __init__(
        self,
        settings: RouterSettings,
        *,
        threshold: float | None = None,
        oos_intent: str = DEFAULT_OOS_INTENT,
    ) -> None:
        for intent, target in settings.targets.items():
            if target not in KNOWN_PIPELINES:
                raise ConfigError(
                    f"router target for intent {intent!r} is {target!r}; "
                    f"known pipelines: {sorted(KNOWN_PIPELINES)}"
                )
        if settings.low_confidence_target not in KNOWN_PIPELINES:
            raise ConfigError(
                f"router low_confidence_target is {settings.low_confidence_target!r}; "
                f"known pipelines: {sorted(KNOWN_PIPELINES)}"
            )
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        if threshold is not None and oos_intent not in settings.targets:
            raise ConfigError(f"router threshold given but no target for out-of-scope intent {oos_intent!r}")
        self._targets = dict(settings.targets)
        self._min_confidence = settings.min_confidence
        self._low_confidence_target = settings.low_confidence_target
        self._threshold = threshold
        self._oos_intent = oos_intent

    @property
    def threshold(self) -> float | None:
        return self._threshold

    @property
    def min_confidence(self) -> float:
        return self._min_confidence

    @property
    def low_confidence_target(self) -> str:
        return self._low_confidence_target

    def rule_for(self, prediction: IntentPrediction) -> RoutingRule:
        """Which rule of this policy decides `prediction` (what `hybridllm route --explain` reports)."""
        if self._threshold is not None and prediction.confidence < self._threshold:
            return "oos_threshold"
        if prediction.intent not in self._targets:
            return "unmapped_intent"
        if prediction.confidence < self._min_confidence:
            return "low_confidence"
        return "argmax"

    def decide(self, prediction: IntentPrediction) -> RouteDecision:
        rule = self.rule_for(prediction)
        if rule == "oos_threshold":
            # The calibrated threshold is the out-of-scope decision itself: min_confidence does not apply.
            prediction = apply_oos_threshold(prediction, cast(float, self._threshold), self._oos_intent)
            target = self._targets[self._oos_intent]
        elif rule == "argmax":
            target = self._targets[prediction.intent]
        else:
            # Unsure, or an intent with no mapping (a model trained on other labels): the fallback target.
            target = self._low_confidence_target
        return RouteDecision(
            intent=prediction.intent,
            confidence=prediction.confidence,
            scores=dict(prediction.scores),
            target=target,
        )
