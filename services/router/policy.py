"""Routing policy: an intent prediction -> the pipeline that serves the request."""

from __future__ import annotations

from services.core.errors import ConfigError
from services.core.settings import RouterSettings
from services.core.types import IntentPrediction, RouteDecision

KNOWN_PIPELINES: frozenset[str] = frozenset({"prompt", "rag", "tuned", "refuse"})
DEFAULT_OOS_INTENT = "out_of_scope"


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

    def decide(self, prediction: IntentPrediction) -> RouteDecision:
        if self._threshold is not None and prediction.confidence < self._threshold:
            # The calibrated threshold is the out-of-scope decision itself: min_confidence does not apply.
            prediction = apply_oos_threshold(prediction, self._threshold, self._oos_intent)
            target = self._targets[self._oos_intent]
        else:
            mapped = self._targets.get(prediction.intent)
            # An intent with no mapping (a model trained on other labels) is treated like an unsure one.
            unsure = mapped is None or prediction.confidence < self._min_confidence
            target = self._low_confidence_target if unsure or mapped is None else mapped
        return RouteDecision(
            intent=prediction.intent,
            confidence=prediction.confidence,
            scores=dict(prediction.scores),
            target=target,
        )
