import pytest

from benchmarks.system.mix import parse_mix
from benchmarks.system.mix_sweep import at_mix, goal_region, mix_sweep_results, pool_by_class, sweep_mixes

pytestmark = pytest.mark.unit


def row(route, latency_ms, cost, contains, ok=True):
    return {"route": route, "latency_ms": latency_ms, "cost_usd": cost, "answer_contains": contains, "ok": ok}


# rag: knowledge takes 1000 ms and costs 3, direct 400 ms / 1, out_of_scope 400 ms / 1.
RAG = [row("rag", 1000.0, 3.0, True), row("rag", 1000.0, 3.0, False), row("direct", 400.0, 1.0, True),
       row("out_of_scope", 400.0, 1.0, None), row("rag", 5.0, 0.0, None, ok=False)]  # fmt: skip
# hybrid: knowledge as rag; direct takes the prompt path (100 ms, 0.5); out_of_scope is refused (10 ms, free).
HYBRID = [row("rag", 1000.0, 3.0, True), row("rag", 1000.0, 3.0, False), row("direct", 100.0, 0.5, True),
          row("out_of_scope", 10.0, 0.0, None)]  # fmt: skip


def test_pools_leave_failed_requests_out():
    pools = pool_by_class(RAG)
    assert {name: len(p) for name, p in pools.items()} == {"knowledge": 2, "direct": 1, "out_of_scope": 1}


def test_at_mix_against_a_hand_computation():
    mix = parse_mix("knowledge=0.5,direct=0.3,out_of_scope=0.2")
    rag, hybrid = at_mix(pool_by_class(RAG), mix, seed=1), at_mix(pool_by_class(HYBRID), mix, seed=1)
    assert rag is not None and hybrid is not None
    # cost = sum(share x class mean) per request, x 1000
    assert rag["cost_per_1k_usd"] == pytest.approx((0.5 * 3 + 0.3 * 1 + 0.2 * 1) * 1000)
    assert hybrid["cost_per_1k_usd"] == pytest.approx((0.5 * 3 + 0.3 * 0.5) * 1000)
    # Half the draws take 1000 ms: p95 is 1000, p50 lies between the classes' latencies.
    assert rag["p95_ms"] == pytest.approx(1000.0) and hybrid["p95_ms"] == pytest.approx(1000.0)
    assert 400.0 <= rag["p50_ms"] <= 1000.0
    assert rag["knowledge_answer_contains"] == 0.5
    # over the judged classes (knowledge and direct): (0.5 x 0.5 + 0.3 x 1) / 0.8
    assert rag["answer_contains"] == pytest.approx((0.5 * 0.5 + 0.3 * 1.0) / 0.8)


def test_p95_of_a_mixture_is_resampled_not_averaged():
    # 10 % knowledge (1000 ms) and 90 % direct (100 ms): p95 falls in the knowledge tail.
    mix = parse_mix("knowledge=0.1,direct=0.9")
    result = at_mix(pool_by_class(HYBRID), mix, seed=0)
    assert result is not None and result["p95_ms"] == pytest.approx(1000.0)
    mostly_direct = at_mix(pool_by_class(HYBRID), parse_mix("knowledge=0.02,direct=0.98"), seed=0)
    assert mostly_direct is not None and mostly_direct["p95_ms"] == pytest.approx(100.0)
    assert at_mix(pool_by_class(HYBRID), mix, seed=0) == result  # seeded: reproducible


def test_a_class_with_no_measured_requests_gives_no_point():
    only_knowledge = [row("rag", 1000.0, 3.0, True)]
    assert at_mix(pool_by_class(only_knowledge), parse_mix("knowledge=0.5,direct=0.5"), seed=0) is None
    assert at_mix(pool_by_class(only_knowledge), parse_mix("knowledge=1"), seed=0) is not None


def test_goal_region_lists_the_shares_where_hybrid_meets_cost_and_p95():
    pools = {"rag": pool_by_class(RAG), "hybrid": pool_by_class(HYBRID)}
    points = sweep_mixes(pools, parse_mix("knowledge=0.5,direct=0.5"), shares=(0.0, 0.5, 1.0), seed=0)
    region = goal_region(points)
    # share 0: cost 0.5 vs 1 and p95 100 vs 400 -> met; 0.5: cost 1.75 vs 2 -> missed; 1.0: equal -> missed.
    assert region["shares_met"] == [0.0]
    assert region["largest"]["cost_vs_rag"] == pytest.approx(0.5)
    assert region["largest"]["p95_vs_rag"] == pytest.approx(0.25)
    assert region["largest"]["knowledge_gap_vs_rag"] == 0.0


def test_mix_sweep_results_put_computed_beside_measured():
    mix = parse_mix("knowledge=0.5,direct=0.3,out_of_scope=0.2")
    measured = {"rag": {"p95_ms": 990.0, "cost_per_1k_usd": 2000.0}}
    result = mix_sweep_results({"rag": RAG, "hybrid": HYBRID}, mix, seed=0, measured=measured,
                               validation_mix=mix, same_requests=True)  # fmt: skip
    assert [p["knowledge_share"] for p in result["points"]] == pytest.approx([i / 10 for i in range(11)])
    check = result["validation"]["pipelines"]["rag"]
    assert check["measured_p95_ms"] == 990.0 and check["computed_p95_ms"] == pytest.approx(1000.0)
    assert check["computed_cost_per_1k_usd"] == pytest.approx(2000.0)
    assert result["pooled_requests"]["rag"] == {"knowledge": 2, "direct": 1, "out_of_scope": 1}
