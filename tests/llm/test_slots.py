from __future__ import annotations

import asyncio

import pytest

from services.core.errors import Overloaded
from services.llm.slots import GenerationSlots

pytestmark = pytest.mark.unit


async def test_slots_bound_concurrency_queue_then_reject() -> None:
    slots = GenerationSlots(max_concurrency=1, max_queue=1)
    release = asyncio.Event()
    peak = 0

    async def job() -> float:
        nonlocal peak
        async with slots.acquire() as waited:
            peak = max(peak, slots.running)
            await release.wait()
            return waited

    first = asyncio.create_task(job())
    await asyncio.sleep(0)
    second = asyncio.create_task(job())  # queued
    await asyncio.sleep(0)
    with pytest.raises(Overloaded) as info:
        async with slots.acquire():
            pass
    assert info.value.retry_after_s > 0
    release.set()
    waits = await asyncio.gather(first, second)
    assert peak == 1
    assert waits[1] >= waits[0]
    assert slots.running == 0 and slots.waiting == 0


def test_invalid_sizes_are_rejected() -> None:
    with pytest.raises(ValueError, match="max_concurrency"):
        GenerationSlots(0, 1)
    with pytest.raises(ValueError, match="max_queue"):
        GenerationSlots(1, -1)
