from __future__ import annotations

import pytest

from services.core.cost import CostLedger
from services.core.settings import PriceCard

pytestmark = pytest.mark.unit


def test_self_hosted_generation_is_priced_by_busy_seconds() -> None:
    ledger = CostLedger(PriceCard(self_hosted_hour_usd={"local": 3.6}))
    assert ledger.generation_usd(
        "local", busy_s=2.0, prompt_tokens=999, completion_tokens=999
    ) == pytest.approx(0.002)


def test_external_api_is_priced_per_token() -> None:
    ledger = CostLedger(PriceCard(external_per_million={"cloud": (1.0, 4.0)}))
    cost = ledger.generation_usd("cloud", busy_s=99.0, prompt_tokens=1000, completion_tokens=500)
    assert cost == pytest.approx((1000 * 1.0 + 500 * 4.0) / 1e6)


def test_request_costs_group_cpu_stages_and_sum_to_total() -> None:
    ledger = CostLedger(PriceCard(cpu_core_hour_usd=36.0, self_hosted_hour_usd={"local": 0.0}))
    costs = ledger.request_costs(
        {
            "privacy": 1.0,
            "route": 2.0,
            "embed": 10.0,
            "search": 1.0,
            "rerank": 0.5,
            "select": 0.5,
            "generate": 900.0,
        },
        backend="local",
        busy_s=0.9,
        prompt_tokens=10,
        completion_tokens=10,
    )
    per_ms = 36.0 / 3600.0 / 1000.0
    assert costs["route"] == pytest.approx(2.0 * per_ms)
    assert costs["retrieval"] == pytest.approx(12.0 * per_ms)
    assert costs["privacy"] == pytest.approx(1.0 * per_ms)
    assert costs["total"] == pytest.approx(sum(v for k, v in costs.items() if k != "total"))


def test_refusal_without_generation_has_no_generate_cost() -> None:
    costs = CostLedger(PriceCard()).request_costs(
        {"route": 3.0}, backend=None, busy_s=0, prompt_tokens=0, completion_tokens=0
    )
    assert "generate" not in costs
    assert costs["total"] == costs["route"] > 0
