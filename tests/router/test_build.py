"""build_router: the classifier the settings name, loaded, and the policy with its calibrated threshold."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.core.settings import RouterSettings
from services.router.build import build_router

pytestmark = pytest.mark.integration


def test_the_router_routes_with_the_models_own_threshold(service_router: Path) -> None:
    router = build_router(RouterSettings(model_dir=service_router))
    assert router.policy.threshold == router.classifier.oos_threshold
    decision = router.policy.decide(router.classifier.predict("How many vacation days do I get?"))
    assert decision.target in {"prompt", "rag", "refuse"}
