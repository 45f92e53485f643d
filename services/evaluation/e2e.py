"""`hybridllm eval e2e`: send each question of an e2e eval set through a running service and score it.

Uses the real `openai` client, as a user would; the `hybrid` extension comes from `model_extra`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import openai

from services.evaluation.scoring import EvalItem, ItemScore, aggregate, load_eval_items, score_answer

logger = logging.getLogger(__name__)


async def _ask(
    client: openai.AsyncOpenAI, item: EvalItem, pipeline: str, max_tokens: int, slots: asyncio.Semaphore
) -> ItemScore:
    async with slots:
        start = time.perf_counter()
        try:
            response = await client.chat.completions.create(
                model=pipeline,
                messages=[{"role": "user", "content": item.question}],
                max_tokens=max_tokens,
                temperature=0.0,
            )
        except openai.APIError as exc:
            latency_ms = (time.perf_counter() - start) * 1000.0
            logger.warning("item %s failed: %s", item.item_id, exc)
            return score_answer(
                item,
                pipeline=pipeline,
                answer="",
                hybrid={},
                latency_ms=latency_ms,
                ok=False,
                error=str(exc)[:300],
            )
        latency_ms = (time.perf_counter() - start) * 1000.0
    answer = (response.choices[0].message.content or "") if response.choices else ""
    hybrid = (response.model_extra or {}).get("hybrid") or {}
    return score_answer(item, pipeline=pipeline, answer=answer, hybrid=hybrid, latency_ms=latency_ms)


async def evaluate_e2e(
    data: Path,
    *,
    base_url: str,
    api_key: str | None = None,
    pipeline: str = "hybrid",
    concurrency: int = 2,
    max_tokens: int = 96,
    limit: int | None = None,
    out: Path | None = None,
    timeout_s: float = 300.0,
    allow_drafts: bool = False,
) -> dict[str, Any]:
    """Score every item of `data` against the service at `base_url` (with or without a trailing /v1).

    Returns {"route_accuracy", "hit@5", "answer_contains", "refusal_accuracy", "false_refusal_rate",
    "p50_ms", "p95_ms", "n", "errors", "per_route": {...}, "items": [...]}; with `out`, the per-item records
    are also written there as JSONL. Rows still marked `"draft": true` are refused unless `allow_drafts`.
    """
    if concurrency <= 0:
        raise ValueError(f"concurrency must be > 0, got {concurrency}")
    if max_tokens <= 0:
        raise ValueError(f"max_tokens must be > 0, got {max_tokens}")
    items = load_eval_items(data, limit, allow_drafts=allow_drafts)
    api_base = base_url.rstrip("/")
    if not api_base.endswith("/v1"):
        api_base += "/v1"
    slots = asyncio.Semaphore(concurrency)
    # No retries: a failure must show in the numbers, not be hidden by a second try.
    async with openai.AsyncOpenAI(
        base_url=api_base, api_key=api_key or "not-needed", max_retries=0, timeout=timeout_s
    ) as client:
        scores = await asyncio.gather(*(_ask(client, item, pipeline, max_tokens, slots) for item in items))
    result = aggregate(scores)
    result.update({"pipeline": pipeline, "data": str(data), "base_url": base_url})
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps(row) + "\n" for row in result["items"]), encoding="utf-8")
    return result
