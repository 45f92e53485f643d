"""The cost ledger: what one request cost, per stage, under the configured price card.

External APIs are priced per token; a self-hosted generator by its machine's hourly price times the
seconds it was busy on this request; CPU stages by the core-hour price times their measured seconds.
"""

from __future__ import annotations

from collections.abc import Mapping

from services.core.settings import PriceCard

CPU_STAGES = ("privacy", "route", "embed", "search", "rerank", "select")
_SECONDS_PER_HOUR = 3600.0


class CostLedger:
    def __init__(self, prices: PriceCard) -> None:
        self._prices = prices

    def cpu_stage_usd(self, seconds: float) -> float:
        return self._prices.cpu_core_hour_usd * seconds / _SECONDS_PER_HOUR

    def generation_usd(
        self, backend: str, *, busy_s: float, prompt_tokens: int, completion_tokens: int
    ) -> float:
        per_million = self._prices.external_per_million.get(backend)
        if per_million is not None:
            input_price, output_price = per_million
            return (prompt_tokens * input_price + completion_tokens * output_price) / 1e6
        hourly = self._prices.self_hosted_hour_usd.get(backend, 0.0)
        return hourly * busy_s / _SECONDS_PER_HOUR

    def request_costs(
        self,
        timings_ms: Mapping[str, float],
        *,
        backend: str | None,
        busy_s: float,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> dict[str, float]:
        """Cost per group: privacy, route, retrieval (embed+search+rerank+select), generate, total."""
        costs: dict[str, float] = {}
        retrieval = sum(timings_ms.get(s, 0.0) for s in ("embed", "search", "rerank", "select"))
        for group, ms in (
            ("privacy", timings_ms.get("privacy", 0.0)),
            ("route", timings_ms.get("route", 0.0)),
            ("retrieval", retrieval),
        ):
            if ms > 0:
                costs[group] = self.cpu_stage_usd(ms / 1000.0)
        if backend is not None:
            costs["generate"] = self.generation_usd(
                backend, busy_s=busy_s, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
            )
        costs["total"] = sum(costs.values())
        return costs
