"""EngineScheduler against a fake static-batch engine: admission window, cancellation, failure, shutdown."""

from __future__ import annotations

import enum
import threading
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest

from services.llm.onnx_batching import BatchScheduler, EngineScheduler, TurnEnd, TurnSpec

pytestmark = pytest.mark.unit


class FinishReason(enum.Enum):
    EOS = 1
    MAX_GENERATED_TOKENS = 3
    CANCELLED = 5
    FAILED = 6


class FakeEvent:
    def __init__(self, request: FakeRequest, flags: int, token: int = 0, reason: Any = None) -> None:
        self.request, self.flags, self.token, self.finish_reason = request, flags, token, reason
        self.error_code = 0


class FakeRequest:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.max_tokens = 0
        self.generated = 0
        self.cancelled = False
        self.closed = False

    def begin_turn(self, tokens: Any, turn: FakeTurnOptions) -> int:
        self.max_tokens = turn.max_tokens
        self.engine.waiting.append(self)
        return 7

    def cancel_turn(self, turn_id: int) -> bool:
        assert turn_id == 7
        self.cancelled = True
        return True

    def close(self) -> None:
        self.closed = True


class FakeTurnOptions:
    def __init__(self, request: FakeRequest) -> None:
        self.max_tokens = 0

    def set_max_generated_tokens(self, n: int) -> None:
        self.max_tokens = n

    def set_do_sample(self, value: bool) -> None: ...
    def set_temperature(self, value: float) -> None: ...
    def set_top_p(self, value: float) -> None: ...


class FakeRequestOptions:
    def set_max_session_tokens(self, n: int) -> None: ...


class FakeEngine:
    """A static batch: the requests waiting when a batch starts run together until all are done."""

    instances: list[FakeEngine] = []
    fail_next_run = False

    def __init__(self, model: Any) -> None:
        self.waiting: list[FakeRequest] = []
        self.batch: list[FakeRequest] = []
        self.batch_sizes: list[int] = []
        FakeEngine.instances.append(self)

    def create_request(self, *, options: Any = None) -> FakeRequest:
        return FakeRequest(self)

    def create_event_buffer(self, capacity: int) -> list[FakeEvent]:
        return []

    def has_pending_requests(self) -> bool:
        return bool(self.waiting or self.batch)

    def run(self, events: list[FakeEvent]) -> None:
        events.clear()
        if FakeEngine.fail_next_run:
            FakeEngine.fail_next_run = False
            raise RuntimeError("model execution failed")
        if not self.batch:
            self.batch, self.waiting = self.waiting, []
            self.batch_sizes.append(len(self.batch))
        for request in list(self.batch):
            if request.cancelled:
                events.append(FakeEvent(request, 2, reason=FinishReason.CANCELLED))
                self.batch.remove(request)
                continue
            request.generated += 1
            done = request.generated >= request.max_tokens
            events.append(
                FakeEvent(request, 3 if done else 1, request.generated, FinishReason.MAX_GENERATED_TOKENS)
            )
            if done:
                self.batch.remove(request)


@pytest.fixture(autouse=True)
def fake_og(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    module = types.SimpleNamespace(
        Engine=FakeEngine,
        RequestOptions=FakeRequestOptions,
        TurnOptions=FakeTurnOptions,
        FinishReason=FinishReason,
    )
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime_genai", module)
    FakeEngine.instances = []
    FakeEngine.fail_next_run = False
    yield


class Collector:
    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.end: TurnEnd | None = None
        self.ended = threading.Event()

    def on_end(self, end: TurnEnd) -> None:
        self.end = end
        self.ended.set()

    def wait_for_first_token(self, timeout_s: float = 5.0) -> None:
        """Block until a token arrives; fail (not hang) if the request ends or nothing comes in time."""
        deadline = time.monotonic() + timeout_s
        while not self.tokens:
            assert not self.ended.is_set(), f"ended before its first token: {self.end}"
            assert time.monotonic() < deadline, f"no token within {timeout_s} s"
            time.sleep(0.001)

    def cancel_once_streaming(self, scheduler: BatchScheduler, ticket: Any) -> None:
        """Cancel `ticket` after its first token and check that it ends cancelled."""
        self.wait_for_first_token()
        scheduler.cancel(ticket)
        assert self.ended.wait(5)
        assert self.end == TurnEnd(cancelled=True)


def submit(scheduler: EngineScheduler, max_tokens: int) -> tuple[Any, Collector]:
    collector = Collector()
    spec = TurnSpec(prompt_ids=[1, 2, 3], max_tokens=max_tokens, max_session_tokens=3 + max_tokens)
    return scheduler.submit(spec, collector.tokens.append, collector.on_end), collector


def test_the_expected_companions_share_one_batch() -> None:
    scheduler = EngineScheduler(object(), max_batch_size=4, admission_window_s=5.0, demand=lambda: 3)
    collectors = [submit(scheduler, 5)[1] for _ in range(3)]
    for collector in collectors:
        assert collector.ended.wait(5)
        assert collector.tokens == [1, 2, 3, 4, 5]
        assert collector.end == TurnEnd()
    assert FakeEngine.instances[0].batch_sizes == [3]
    assert scheduler.peak_batch_size == 3
    scheduler.close()


def test_a_request_that_takes_its_place_after_the_first_arrival_is_waited_for_too() -> None:
    reads: list[int] = []

    def demand() -> int:  # 2 places held when the first ticket is admitted, 3 from then on
        reads.append(2 if not reads else 3)
        return reads[-1]

    def read_times(count: int) -> None:
        deadline = time.monotonic() + 2.0
        while len(reads) < count and time.monotonic() < deadline:
            time.sleep(0.001)

    scheduler = EngineScheduler(object(), max_batch_size=4, admission_window_s=5.0, demand=demand)
    collectors = [submit(scheduler, 5)[1]]
    read_times(1)
    collectors.append(submit(scheduler, 5)[1])
    read_times(2)  # the second arrival reads demand again, and a third client is now holding a place
    collectors.append(submit(scheduler, 5)[1])
    assert all(collector.ended.wait(5) for collector in collectors)
    assert FakeEngine.instances[0].batch_sizes == [3]
    scheduler.close()


def test_a_lone_request_starts_at_once_and_expected_ones_wait_no_longer_than_the_window() -> None:
    lone = EngineScheduler(object(), max_batch_size=4, admission_window_s=30.0, demand=lambda: 1)
    assert submit(lone, 2)[1].ended.wait(5)
    lone.close()
    started = time.monotonic()
    waiting = EngineScheduler(object(), max_batch_size=4, admission_window_s=0.3, demand=lambda: 3)
    assert submit(waiting, 2)[1].ended.wait(5)
    assert time.monotonic() - started >= 0.3
    waiting.close()


def test_requests_arriving_during_a_batch_start_together_with_the_next() -> None:
    # The last batch's member counts as a companion to come (a closed-loop client), so they wait the window.
    scheduler = EngineScheduler(object(), max_batch_size=4, admission_window_s=0.5, demand=lambda: 1)
    first, first_collector = submit(scheduler, 10_000)
    first_collector.wait_for_first_token()
    late = [submit(scheduler, 3)[1] for _ in range(2)]
    scheduler.cancel(first)
    assert all(c.ended.wait(5) for c in late)
    assert FakeEngine.instances[0].batch_sizes == [1, 2]
    scheduler.close()


def test_cancelling_one_request_ends_it_and_leaves_the_others_whole() -> None:
    scheduler = EngineScheduler(object(), max_batch_size=4, admission_window_s=0.2)
    doomed, doomed_collector = submit(scheduler, 10_000)
    _, other = submit(scheduler, 50)
    doomed_collector.cancel_once_streaming(scheduler, doomed)
    assert other.ended.wait(5)
    assert other.tokens == list(range(1, 51))
    scheduler.close()


def test_a_request_cancelled_before_it_starts_never_reaches_the_engine() -> None:
    scheduler = EngineScheduler(object(), max_batch_size=4, admission_window_s=0.3)
    ticket, collector = submit(scheduler, 5)
    ticket.cancel()
    assert collector.ended.wait(5)
    assert collector.end == TurnEnd(cancelled=True)
    assert collector.tokens == []
    assert FakeEngine.instances[0].batch_sizes == []
    scheduler.close()


def test_a_failed_step_fails_its_requests_and_a_new_engine_serves_the_next() -> None:
    scheduler = EngineScheduler(object(), max_batch_size=4, admission_window_s=0.0)
    FakeEngine.fail_next_run = True
    _, failed = submit(scheduler, 5)
    assert failed.ended.wait(5)
    assert failed.end is not None and failed.end.error == "model execution failed"
    _, served = submit(scheduler, 3)
    assert served.ended.wait(5)
    assert served.tokens == [1, 2, 3]
    assert len(FakeEngine.instances) == 2
    scheduler.close()


def test_closing_ends_waiting_requests_and_refuses_new_ones() -> None:
    scheduler = EngineScheduler(object(), max_batch_size=4, admission_window_s=0.0)
    _, running = submit(scheduler, 10_000_000)
    scheduler.close()
    assert running.ended.wait(5)
    assert running.end == TurnEnd(cancelled=True)
    with pytest.raises(Exception, match="shut down"):
        submit(scheduler, 1)


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        EngineScheduler(object(), max_batch_size=0, admission_window_s=0.0)
    with pytest.raises(ValueError, match="admission_window_s"):
        EngineScheduler(object(), max_batch_size=1, admission_window_s=-1.0)
