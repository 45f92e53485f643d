"""The router the settings describe: the intent classifier, loaded, and the routing policy over it."""

from __future__ import annotations

from dataclasses import dataclass

from services.core.settings import RouterSettings
from services.router.classifier import IntentRouterModel
from services.router.policy import RoutingPolicy


@dataclass(frozen=True, slots=True)
class Router:
    classifier: IntentRouterModel
    policy: RoutingPolicy


def build_router(settings: RouterSettings) -> Router:
    """Load the classifier in `settings.model_dir` (blocking: call at start) and the policy over it.

    A model trained with a threshold method brings its calibrated out-of-scope threshold to the policy.
    """
    classifier = IntentRouterModel(
        settings.model_dir,
        threads=settings.threads,
        max_length=settings.max_length,
        quantized=settings.precision == "int8",
    )
    classifier.warm_up()
    return Router(classifier=classifier, policy=RoutingPolicy(settings, threshold=classifier.oos_threshold))
