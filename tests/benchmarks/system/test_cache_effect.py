"""The comparison's response-cache row: the seeded repeated workload and the side-by-side summary."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.harness.workload import with_repeats
from benchmarks.system.cache_effect import cache_effect, cache_effect_section, repeated_workload
from benchmarks.system.compare import build_parser
from services.evaluation.scoring import EvalItem

pytestmark = pytest.mark.unit


def _items(n: int) -> list[EvalItem]:
    return [EvalItem(f"q{i}", "rag", f"question {i}", (), ()) for i in range(n)]


def test_repeats_come_after_their_first_ask_and_are_seeded() -> None:
    workload = repeated_workload(_items(40), 0.3, seed=5)
    assert len(workload) == 40
    assert workload == repeated_workload(_items(40), 0.3, seed=5)
    seen: set[str] = set()
    repeats = 0
    for item in workload:
        repeats += item.item_id in seen
        seen.add(item.item_id)
    assert 6 <= repeats <= 18  # about 30 % of 40
    # fresh entries are taken in order: the distinct ids are a prefix of the pool
    assert sorted(seen, key=lambda i: int(i[1:])) == [f"q{i}" for i in range(len(seen))]


def test_no_repeats_at_rate_zero_and_bad_rates_refused() -> None:
    assert with_repeats([1, 2, 3], 3, 0.0, seed=1) == [1, 2, 3]
    with pytest.raises(ValueError, match="repeat rate"):
        with_repeats([1, 2], 2, 1.0, seed=1)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--cache-repeat", "1.5"])


def _result(p50: float, cost: float, hits: list[str | None]) -> dict[str, Any]:
    summary = {
        "latency": {"1": {"p50": p50, "p95": 2 * p50, "mean": 1.5 * p50}},
        "cost_per_1k_usd": {"from_responses": cost},
        "knowledge_answer_contains": 0.5,
        "quality": {"answer_contains": 0.6},
    }
    return {"pipelines": {"hybrid": summary}, "items": {"hybrid": [{"cache_hit": h} for h in hits]}}


def test_the_summary_compares_cache_on_with_off_over_the_same_workload() -> None:
    workload = _items(3) + _items(1)
    effect = cache_effect(
        0.25, workload, _result(1000.0, 0.4, [None] * 4), _result(600.0, 0.3, [None] * 3 + ["exact"])
    )
    assert effect["requests"] == 4 and effect["repeats"] == 1
    assert effect["on"]["hits"] == {"exact": 1, "semantic": 0}
    assert effect["on_vs_off"]["p50_ms"] == pytest.approx(0.6)
    assert effect["on_vs_off"]["cost_per_1k_usd"] == pytest.approx(0.75)
    text = cache_effect_section(effect)
    assert "repeat rate 0.25" in text and "cost 0.75x" in text and "| cache on |" in text
