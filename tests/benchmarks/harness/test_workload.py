import asyncio
import json

import pytest

from benchmarks.harness.client import PromptItem
from benchmarks.harness.stats import RequestRecord
from benchmarks.harness.workload import BUILTIN_PROMPTS, Bounds, load_prompts, run_closed_loop, run_open_loop

pytestmark = pytest.mark.unit

PROMPTS = [PromptItem(f"p{i}", f"question {i}", {}) for i in range(3)]


def make_send(delay_s: float, log: list[str], in_flight: list[int], peak: list[int]):
    async def send(item: PromptItem) -> RequestRecord:
        in_flight[0] += 1
        peak[0] = max(peak[0], in_flight[0])
        log.append(item.item_id)
        try:
            await asyncio.sleep(delay_s)
        finally:
            in_flight[0] -= 1
        return RequestRecord("x", item.item_id, 0.0, delay_s, True, ttft_s=delay_s, output_tokens=1)

    return send


async def test_closed_loop_sends_exactly_n_requests_cycling_prompts_at_the_concurrency():
    log: list[str] = []
    peak = [0]
    send = make_send(0.01, log, [0], peak)
    records, duration = await run_closed_loop(send, PROMPTS, 2, Bounds(requests=7, duration_s=None))
    assert len(records) == 7 and duration > 0
    assert sorted(log) == sorted(["p0", "p1", "p2"] * 2 + ["p0"])
    assert peak[0] == 2


async def test_open_loop_is_bounded_by_requests_and_does_not_wait_for_answers():
    log: list[str] = []
    peak = [0]
    send = make_send(0.2, log, [0], peak)
    records, _ = await run_open_loop(send, PROMPTS, 200.0, Bounds(requests=10, duration_s=None), seed=1)
    assert len(records) == 10 and all(r.ok for r in records)
    assert peak[0] > 1  # arrivals kept coming while earlier requests were unanswered


async def test_open_loop_drain_timeout_fails_the_unanswered():
    send = make_send(5.0, [], [0], [0])
    records, duration = await run_open_loop(
        send, PROMPTS, 100.0, Bounds(requests=3, duration_s=None), drain_timeout_s=0.05
    )
    assert len(records) == 3 and not any(r.ok for r in records)
    assert all(r.error.startswith("drain_timeout") for r in records)
    assert duration < 5.0


def test_bounds_and_prompt_loading(tmp_path):
    with pytest.raises(ValueError, match="--requests or --duration"):
        Bounds(None, None)
    with pytest.raises(ValueError, match="requests must be > 0"):
        Bounds(0, None)
    assert [p.question for p in load_prompts(None)] == list(BUILTIN_PROMPTS)
    path = tmp_path / "e2e.jsonl"
    path.write_text(json.dumps({"id": "a", "route": "rag", "question": "q?"}) + "\n" + '{"nope": 1}\n')
    with pytest.raises(ValueError, match=r"e2e.jsonl:2"):
        load_prompts(path)
    path.write_text(json.dumps({"id": "a", "question": "q?"}) + "\n")
    assert load_prompts(path)[0].item_id == "a"
