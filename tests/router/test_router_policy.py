import pytest

from services.core.errors import ConfigError
from services.core.settings import RouterSettings
from services.core.types import IntentPrediction
from services.router.policy import RoutingPolicy, apply_oos_threshold

pytestmark = pytest.mark.unit


def prediction(intent: str, confidence: float) -> IntentPrediction:
    return IntentPrediction(intent=intent, confidence=confidence, scores={intent: confidence})


@pytest.mark.parametrize(
    ("intent", "target"), [("direct", "prompt"), ("knowledge", "rag"), ("out_of_scope", "refuse")]
)
def test_confident_intents_map_to_their_pipelines(intent: str, target: str) -> None:
    assert RoutingPolicy(RouterSettings()).decide(prediction(intent, 0.9)).target == target


def test_low_confidence_goes_to_the_low_confidence_target() -> None:
    policy = RoutingPolicy(RouterSettings(min_confidence=0.6, low_confidence_target="rag"))
    decision = policy.decide(prediction("direct", 0.59))
    assert decision.target == "rag"
    assert decision.intent == "direct"


def test_unknown_intent_is_treated_as_unsure() -> None:
    assert RoutingPolicy(RouterSettings()).decide(prediction("weather", 0.99)).target == "rag"


def test_invalid_target_is_rejected_at_construction() -> None:
    with pytest.raises(ConfigError, match="'chat'"):
        RoutingPolicy(RouterSettings(targets={"direct": "chat"}))
    with pytest.raises(ConfigError, match="low_confidence_target"):
        RoutingPolicy(RouterSettings(low_confidence_target="nowhere"))


def test_threshold_out_of_range_is_rejected() -> None:
    with pytest.raises(ValueError, match="threshold"):
        RoutingPolicy(RouterSettings(), threshold=1.5)


def test_threshold_rejects_below_and_refuses_regardless_of_min_confidence() -> None:
    policy = RoutingPolicy(RouterSettings(min_confidence=0.55), threshold=0.8)
    rejected = policy.decide(prediction("direct", 0.7))
    assert (rejected.intent, rejected.target) == ("out_of_scope", "refuse")
    assert rejected.confidence == pytest.approx(0.3)
    kept = policy.decide(prediction("direct", 0.85))
    assert (kept.intent, kept.target) == ("direct", "prompt")


def test_apply_oos_threshold_keeps_scores() -> None:
    original = prediction("alarm", 0.4)
    rejected = apply_oos_threshold(original, 0.5, "oos")
    assert rejected.intent == "oos"
    assert rejected.scores == original.scores
    assert apply_oos_threshold(original, 0.3, "oos") is original
