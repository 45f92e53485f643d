"""The response cache's effect in the architecture comparison: `hybrid` with the cache off and on, over
one workload in which a stated share of requests repeats an earlier one (`bench compare --cache-repeat`).

Both runs send the same sequence at concurrency 1, each to a service of its own, so the only difference is
the cache (`cache.mode: semantic`, in memory). Repeats are exact: paraphrase hits and false-hit safety are
measured by benchmarks/components/cache.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks.harness.report import markdown_table
from benchmarks.harness.workload import with_repeats
from services.evaluation.scoring import EvalItem

# A started service's settings for the cache-on run.
CACHE_ON_ENV = {"HYBRID_CACHE__MODE": "semantic", "HYBRID_CACHE__STORE": "memory"}
# Sent before each run and never part of it: a warm-up that asked a workload question would pre-fill the
# cache with that question's answer.
WARMUP_QUESTION = "Reply with the word ready."


def repeated_workload(items: Sequence[EvalItem], repeat_rate: float, seed: int) -> list[EvalItem]:
    """As many requests as `items`, each repeating an earlier one with probability `repeat_rate`."""
    return with_repeats(items, len(items), repeat_rate, seed)


def _side(summary: Mapping[str, Any], scores: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    latency = summary["latency"]["1"]
    hits = [s["cache_hit"] for s in scores if s.get("cache_hit")]
    return {
        "p50_ms": latency["p50"],
        "p95_ms": latency["p95"],
        "mean_ms": latency["mean"],
        "cost_per_1k_usd": summary["cost_per_1k_usd"]["from_responses"],
        "knowledge_answer_contains": summary["knowledge_answer_contains"],
        "answer_contains": summary["quality"]["answer_contains"],
        "hits": {"exact": hits.count("exact"), "semantic": hits.count("semantic")},
    }


def cache_effect(
    repeat_rate: float,
    workload: Sequence[EvalItem],
    off: Mapping[str, Any],
    on: Mapping[str, Any],
) -> dict[str, Any]:
    """Side-by-side figures from two `compare()` results (cache off, cache on) over `workload`."""
    sides = {
        name: _side(result["pipelines"]["hybrid"], result["items"]["hybrid"])
        for name, result in (("off", off), ("on", on))
    }
    ratios = {
        key: (sides["on"][key] / sides["off"][key]) if sides["off"][key] else None
        for key in ("cost_per_1k_usd", "p50_ms", "p95_ms", "mean_ms")
    }
    distinct = len({item.item_id for item in workload})
    return {
        "pipeline": "hybrid",
        "repeat_rate": repeat_rate,
        "requests": len(workload),
        "repeats": len(workload) - distinct,
        "cache": dict(CACHE_ON_ENV),
        "off": sides["off"],
        "on": sides["on"],
        "on_vs_off": ratios,
    }


def cache_effect_section(effect: Mapping[str, Any]) -> str:
    def fmt(value: Any, digits: int) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    rows = [
        [
            f"cache {name}",
            fmt(side["p50_ms"], 0),
            fmt(side["p95_ms"], 0),
            fmt(side["cost_per_1k_usd"], 4),
            fmt(side["knowledge_answer_contains"], 3),
            f"{side['hits']['exact']} / {side['hits']['semantic']}",
        ]
        for name, side in (("off", effect["off"]), ("on", effect["on"]))
    ]
    ratios = effect["on_vs_off"]
    return "\n".join(
        [
            f"`hybrid` over {effect['requests']} requests of which {effect['repeats']} repeat an earlier one "
            f"(repeat rate {effect['repeat_rate']:g}, seeded), concurrency 1, cache off and on "
            f"(`cache.mode: semantic`, memory store), each on a service of its own, same sequence.",
            "",
            markdown_table(
                ["run", "p50 ms", "p95 ms", "USD / 1k", "knowledge answer_contains", "hits exact / semantic"],
                rows,
            ),
            "",
            f"Cache on / off: cost {fmt(ratios['cost_per_1k_usd'], 2)}x, p50 {fmt(ratios['p50_ms'], 2)}x, "
            f"mean {fmt(ratios['mean_ms'], 2)}x. A hit replays the first answer, so quality moves only "
            "through which questions repeat.",
        ]
    )
