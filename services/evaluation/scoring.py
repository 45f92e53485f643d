"""Scoring one answer of the e2e eval set, and aggregating scores. Pure functions, no I/O.

Item format (JSONL): {"id", "route": "rag"|"direct"|"out_of_scope", "question", "gold_files",
"answer_substrings"}. A row with `"draft": true` (written by `hybridllm eval scaffold`) is refused unless
drafts are allowed: its question and gold files are proposals that nobody has checked yet.
A score is None where it does not apply (no route reported, no gold files, no substrings), so aggregates
average only over the items a metric applies to.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from services.core.errors import InvalidRequest

# The eval file's route names versus the router's intents.
EXPECTED_INTENT: dict[str, str] = {"rag": "knowledge", "direct": "direct", "out_of_scope": "out_of_scope"}
HIT_K = 5

# Phrases a generator uses when it declines; a pipeline without a router can still refuse in words.
_REFUSAL = re.compile(
    r"\b(i can(?:'|no)t help|i cannot help|i'm not able to|i am not able to|i can only (?:help|answer)|"
    r"outside (?:of )?(?:my|the) (?:scope|knowledge)|not (?:something|a question) i can|"
    r"i don't have (?:any )?information|i do not have (?:any )?information|not covered|"
    r"unable to (?:help|answer)|can't assist|"
    r"cannot assist|out of scope)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class EvalItem:
    item_id: str
    route: str
    question: str
    gold_files: tuple[str, ...] = ()
    answer_substrings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.route not in EXPECTED_INTENT:
            raise ValueError(f"route must be one of {sorted(EXPECTED_INTENT)}, got {self.route!r}")
        if not self.question.strip():
            raise ValueError(f"item {self.item_id!r} has an empty question")


@dataclass(slots=True)
class ItemScore:
    """One item's outcome. Booleans are None where the metric does not apply."""

    item_id: str
    route: str
    pipeline: str
    ok: bool
    latency_ms: float
    answer: str = ""
    error: str = ""
    intent: str | None = None
    target: str | None = None
    confidence: float | None = None
    route_scores: dict[str, float] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    route_correct: bool | None = None
    hit_at_5: bool | None = None
    answer_contains: bool | None = None
    refused: bool = False
    cost_usd: float | None = None
    context_tokens: int | None = None
    # hybrid.groundedness of a checked rag answer: its score and what the check did (pass, flag, ...)
    groundedness: float | None = None
    groundedness_action: str | None = None
    cache_hit: str | None = None  # hybrid.cache.hit: exact or semantic when the response cache answered

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_eval_items(path: Path, limit: int | None = None, *, allow_drafts: bool = False) -> list[EvalItem]:
    """Read the e2e JSONL; InvalidRequest names the line of a bad row, or the first unchecked draft."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidRequest(f"cannot read e2e eval file {path}: {exc}") from exc
    items: list[EvalItem] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            item = item_from_row(row, default_id=f"line-{number}")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise InvalidRequest(f"{path}:{number}: not an e2e eval row: {exc}") from exc
        if row.get("draft") is True and not allow_drafts:
            raise InvalidRequest(
                f"{path}:{number}: item {item.item_id!r} is still a draft: check it and delete its "
                '"draft" field, or pass --allow-drafts'
            )
        items.append(item)
    if not items:
        raise InvalidRequest(f"{path} holds no e2e eval rows")
    if limit is not None:
        if limit <= 0:
            raise ValueError(f"limit must be > 0, got {limit}")
        items = items[:limit]
    return items


def item_from_row(row: Mapping[str, Any], default_id: str = "") -> EvalItem:
    return EvalItem(
        item_id=str(row.get("id") or default_id),
        route=str(row["route"]),
        question=str(row["question"]),
        gold_files=tuple(str(f) for f in row.get("gold_files") or ()),
        answer_substrings=tuple(str(s) for s in row.get("answer_substrings") or ()),
    )


def _norm_path(path: str) -> str:
    return str(PurePosixPath(path.replace("\\", "/").lstrip("./"))).lower()


def same_file(gold: str, source: str) -> bool:
    """Equal relative paths, or one the other's tail (a gold path may name the corpus folder too)."""
    g, s = _norm_path(gold), _norm_path(source)
    return g == s or g.endswith("/" + s) or s.endswith("/" + g)


def hit_at_k(gold_files: Sequence[str], sources: Sequence[str], k: int = HIT_K) -> bool | None:
    if not gold_files:
        return None
    return any(same_file(g, s) for s in sources[:k] for g in gold_files)


def contains_any(answer: str, substrings: Sequence[str]) -> bool | None:
    if not substrings:
        return None
    folded = answer.casefold()
    return any(s.casefold() in folded for s in substrings)


def is_refusal(answer: str, hybrid: Mapping[str, Any]) -> bool:
    """The router sent it to refusal, or the answer declines in words."""
    route = hybrid.get("route") or {}
    if route.get("target") == "refuse":
        return True
    return bool(_REFUSAL.search(answer))


def score_answer(
    item: EvalItem,
    *,
    pipeline: str,
    answer: str,
    hybrid: Mapping[str, Any],
    latency_ms: float,
    ok: bool = True,
    error: str = "",
) -> ItemScore:
    """Score one response. A failed request scores False on every metric that applies to its item."""
    route = hybrid.get("route") or {}
    sources = [str(s.get("source", "")) for s in hybrid.get("sources") or [] if isinstance(s, Mapping)]
    cost = (hybrid.get("cost_usd") or {}).get("total")
    context = (hybrid.get("tokens") or {}).get("context")
    checked = hybrid.get("groundedness") or {}
    score = ItemScore(
        item_id=item.item_id,
        route=item.route,
        pipeline=pipeline,
        ok=ok,
        latency_ms=latency_ms,
        answer=answer,
        error=error,
        intent=route.get("intent"),
        target=route.get("target"),
        confidence=_float_or_none(route.get("confidence")),
        route_scores={str(k): float(v) for k, v in (route.get("scores") or {}).items()},
        sources=sources,
        cost_usd=_float_or_none(cost),
        context_tokens=int(context) if isinstance(context, int | float) else None,
        groundedness=_float_or_none(checked.get("score")),
        groundedness_action=str(checked["action"]) if "action" in checked else None,
        cache_hit=(hybrid.get("cache") or {}).get("hit"),
    )
    if not ok:
        score.route_correct = False if route or pipeline == "hybrid" else None
        score.hit_at_5 = False if item.route == "rag" and item.gold_files else None
        score.answer_contains = False if item.answer_substrings else None
        return score
    if score.intent is not None:
        score.route_correct = score.intent == EXPECTED_INTENT[item.route]
    if item.route == "rag":
        score.hit_at_5 = hit_at_k(item.gold_files, sources)
    score.answer_contains = contains_any(answer, item.answer_substrings)
    score.refused = is_refusal(answer, hybrid)
    return score


def _float_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _mean(flags: Sequence[bool | None]) -> float | None:
    applicable = [f for f in flags if f is not None]
    return sum(applicable) / len(applicable) if applicable else None


def _percentile(values: Sequence[float], q: float) -> float | None:
    """numpy's (linear) percentile, the rule every benchmark uses; None when there is nothing to rank."""
    return float(np.percentile(values, q)) if values else None


def _group_numbers(scores: Sequence[ItemScore]) -> dict[str, Any]:
    oos = [s for s in scores if s.route == "out_of_scope"]
    in_scope = [s for s in scores if s.route != "out_of_scope"]
    latencies = [s.latency_ms for s in scores if s.ok]
    costs = [s.cost_usd for s in scores if s.cost_usd is not None]
    return {
        "n": len(scores),
        "errors": sum(1 for s in scores if not s.ok),
        "route_accuracy": _mean([s.route_correct for s in scores]),
        "hit@5": _mean([s.hit_at_5 for s in scores]),
        "answer_contains": _mean([s.answer_contains for s in scores]),
        "refusal_accuracy": _mean([s.refused and s.ok for s in oos]) if oos else None,
        "false_refusal_rate": _mean([s.refused for s in in_scope if s.ok]) if in_scope else None,
        "p50_ms": _percentile(latencies, 50),
        "p95_ms": _percentile(latencies, 95),
        "mean_cost_usd": sum(costs) / len(costs) if costs else None,
        "groundedness_actions": dict(
            Counter(s.groundedness_action for s in scores if s.groundedness_action is not None)
        ),
    }


def aggregate(scores: Sequence[ItemScore]) -> dict[str, Any]:
    """Overall numbers, the same numbers per expected route, and the per-item records."""
    result = _group_numbers(scores)
    result["per_route"] = {
        route: _group_numbers([s for s in scores if s.route == route])
        for route in EXPECTED_INTENT
        if any(s.route == route for s in scores)
    }
    result["items"] = [s.to_dict() for s in scores]
    return result
