"""Workloads: which prompts to send, and when (closed loop at a concurrency, open loop at a Poisson rate)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from benchmarks.harness.client import PromptItem
from benchmarks.harness.stats import RequestRecord

BUILTIN_PROMPTS: tuple[str, ...] = (
    "How many vacation days do new employees get?",
    "Write a haiku about autumn.",
    "What is the policy for expensing a client dinner?",
    "Translate 'good morning' into French.",
    "Who approves remote work requests?",
    "Summarize the benefits of unit tests in two sentences.",
    "How do I report a security incident?",
    "What is 17 times 23?",
    "What's the weather like on Mars today?",
    "How do I request a new laptop?",
)

T = TypeVar("T")


def with_repeats(pool: Sequence[T], requests: int, repeat_rate: float, seed: int) -> list[T]:
    """`requests` entries from `pool` in order; each, with probability `repeat_rate`, instead repeats one
    already sent (seeded). Raises ValueError when the pool runs out of fresh entries."""
    if not 0.0 <= repeat_rate < 1.0:
        raise ValueError(f"repeat rate must be in [0, 1), got {repeat_rate:g}")
    rng = random.Random(seed)
    fresh = iter(pool)
    sent: list[T] = []
    sequence: list[T] = []
    for _ in range(requests):
        if sent and rng.random() < repeat_rate:
            sequence.append(rng.choice(sent))
            continue
        entry = next(fresh, None)
        if entry is None:
            raise ValueError(f"{len(pool)} distinct entries are too few for {requests} requests")
        sent.append(entry)
        sequence.append(entry)
    return sequence


SendFn = Callable[[PromptItem], Coroutine[Any, Any, RequestRecord]]


def load_prompts(path: Path | None, limit: int | None = None) -> list[PromptItem]:
    """Prompts from an e2e eval JSONL (`id`, `question`, ...) or, without a path, the built-in list."""
    if path is None:
        items = [PromptItem(f"builtin-{i}", text, {}) for i, text in enumerate(BUILTIN_PROMPTS)]
    else:
        items = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                question = str(row["question"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: not an e2e eval row with a 'question': {exc}") from exc
            items.append(PromptItem(str(row.get("id", f"line-{number}")), question, row))
        if not items:
            raise ValueError(f"{path} holds no prompts")
    if limit is not None:
        if limit <= 0:
            raise ValueError(f"limit must be > 0, got {limit}")
        items = items[:limit]
    return items


@dataclass(frozen=True, slots=True)
class Bounds:
    """A run stops at whichever comes first: `requests` sent or `duration_s` elapsed (None: unbounded)."""

    requests: int | None
    duration_s: float | None

    def __post_init__(self) -> None:
        if self.requests is None and self.duration_s is None:
            raise ValueError("a run needs --requests or --duration (or both)")
        if self.requests is not None and self.requests <= 0:
            raise ValueError(f"requests must be > 0, got {self.requests}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError(f"duration must be > 0, got {self.duration_s}")


async def run_closed_loop(
    send: SendFn, prompts: Sequence[PromptItem], concurrency: int, bounds: Bounds
) -> tuple[list[RequestRecord], float]:
    """`concurrency` users each send their next request as soon as the previous one answers.

    Prompts are taken in order, cycling, so a run of len(prompts) requests sends each prompt once.
    Returns the records and the wall-clock seconds of the run.
    """
    if concurrency <= 0:
        raise ValueError(f"concurrency must be > 0, got {concurrency}")
    records: list[RequestRecord] = []
    next_index = 0
    start = time.perf_counter()
    deadline = start + bounds.duration_s if bounds.duration_s is not None else None

    def claim() -> int | None:
        nonlocal next_index
        if bounds.requests is not None and next_index >= bounds.requests:
            return None
        if deadline is not None and time.perf_counter() >= deadline:
            return None
        index = next_index
        next_index += 1
        return index

    async def user() -> None:
        while (index := claim()) is not None:
            records.append(await send(prompts[index % len(prompts)]))

    await asyncio.gather(*(user() for _ in range(concurrency)))
    return records, time.perf_counter() - start


async def run_open_loop(
    send: SendFn,
    prompts: Sequence[PromptItem],
    rate: float,
    bounds: Bounds,
    *,
    seed: int = 0,
    drain_timeout_s: float | None = None,
) -> tuple[list[RequestRecord], float]:
    """Requests arrive as a Poisson process at `rate` per second, whether or not earlier ones answered.

    Arrivals are scheduled against absolute times so a slow event loop does not lower the offered rate.
    Requests in flight when arrivals stop are awaited (their latency is the point of an overload test), for
    at most `drain_timeout_s`; those still unanswered then are cancelled and recorded as failed, so an
    overloaded server cannot stretch a bounded run without end.
    """
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    if drain_timeout_s is not None and drain_timeout_s < 0:
        raise ValueError(f"drain_timeout_s must be >= 0, got {drain_timeout_s}")
    rng = random.Random(seed)
    tasks: list[tuple[PromptItem, float, asyncio.Task[RequestRecord]]] = []
    start = time.perf_counter()
    next_arrival = start
    index = 0
    while bounds.requests is None or index < bounds.requests:
        next_arrival += rng.expovariate(rate)
        if bounds.duration_s is not None and next_arrival - start >= bounds.duration_s:
            break
        delay = next_arrival - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        item = prompts[index % len(prompts)]
        tasks.append((item, time.perf_counter(), asyncio.create_task(send(item))))
        index += 1
    if tasks:
        await asyncio.wait([task for _, _, task in tasks], timeout=drain_timeout_s)
    records = []
    for item, sent_at, task in tasks:
        if task.done():
            records.append(task.result())
            continue
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        now = time.perf_counter()
        records.append(
            RequestRecord(
                "", item.item_id, sent_at, now - sent_at, ok=False, error="drain_timeout: unanswered"
            )
        )
    return records, time.perf_counter() - start
