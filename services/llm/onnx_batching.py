"""Batched generation for the ONNX backend: the admission every batch scheduler shares, and `og.Engine`.

`BatchScheduler` holds arrivals and decides when a batch starts and who joins it; its subclasses run the
batches in one thread: `EngineScheduler` here (`generator.batch_scheduler: engine`) and `CohortScheduler`
(services/llm/onnx_cohort.py, the default). The rest of this docstring is about the Engine.

onnxruntime-genai's Engine runs several requests per decode step. Its continuous (paged) mode needs a model
built with PagedAttention, which the builder offers only for CUDA and WebGPU; on CPU it runs its static
batch scheduler: the requests waiting when a batch starts are decoded together, one token each per step,
and requests that arrive later start with the next batch, once every member of the running one is done.
So the scheduler holds arrivals until the engine is idle and then waits a short admission window for the
companions it expects, so that clients whose answers ended together are batched together again.

Each request reserves only the tokens it can reach (`max_session_tokens` = prompt + max_tokens): left at
its default the engine reserves the model's whole context per request, which makes a batch's prefill
many times slower.

The Engine API has no adapter selection, so a batch never mixes adapters: requests with a LoRA adapter
never come here and run on the backend's unbatched path, one og.Generator each (onnx_backend.py).

The Engine must be used from the thread that owns it, so every call (admission, stepping, cancellation,
closing) happens in the scheduler's thread; callers get their tokens and their end through callbacks,
which the async side turns into a stream (`stream_engine_tokens`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from services.core.errors import GenerationError

logger = logging.getLogger(__name__)

_Item = TypeVar("_Item")

_TOKEN_FLAG = 1
_FINISHED_FLAG = 2
_FAILED_FLAG = 8


def engine_config_overlay(max_batch_size: int) -> str:
    """The genai_config overlay that sets the static batch scheduler's batch size."""
    return json.dumps({"engine": {"static_batching": {"max_batch_size": max_batch_size}}})


@dataclass(frozen=True)
class TurnSpec:
    """What one request asks of the engine: its prompt, its length limits and its sampling."""

    prompt_ids: Sequence[int]
    max_tokens: int
    max_session_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0


@dataclass(frozen=True)
class TurnEnd:
    """How a turn ended: the model's end of sequence, a length limit, cancellation, or a failure."""

    ended_by_model: bool = False
    cancelled: bool = False
    error: str | None = None


@dataclass(eq=False)
class EngineTicket:
    """One submitted request. Only the scheduler thread touches `og_request`; anyone may `cancel()`."""

    spec: TurnSpec
    on_token: Callable[[int], None]
    on_end: Callable[[TurnEnd], None]
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    og_request: Any = None
    turn_id: int = 0
    cancel_sent: bool = False

    def cancel(self) -> None:
        self.cancel_requested.set()


class BatchScheduler(ABC):
    """Admission for batched generation: requests come from any thread, one daemon thread runs the batches.

    Subclasses run the batches (`_serve`, in that thread); this class holds the arrivals and decides when a
    batch starts and which waiting requests join it.
    """

    def __init__(
        self,
        *,
        max_batch_size: int,
        admission_window_s: float,
        demand: Callable[[], int] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if admission_window_s < 0:
            raise ValueError(f"admission_window_s must be >= 0, got {admission_window_s}")
        self.max_batch_size = max_batch_size
        self._admission_window_s = admission_window_s
        self._wake = threading.Condition()
        self._incoming: list[EngineTicket] = []
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._demand = demand  # requests on their way to the engine (e.g. holding a generation place)
        self._recent_demand = 0
        self._running_count = 0
        self.peak_batch_size = 0  # the most requests that ever shared one engine step

    def submit(
        self, spec: TurnSpec, on_token: Callable[[int], None], on_end: Callable[[TurnEnd], None]
    ) -> EngineTicket:
        ticket = EngineTicket(spec, on_token, on_end)
        with self._wake:
            if self._stopping:
                raise GenerationError("the batched ONNX engine is shut down")
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="onnx-engine", daemon=True)
                self._thread.start()
            self._incoming.append(ticket)
            self._wake.notify()
        return ticket

    def cancel(self, ticket: EngineTicket) -> None:
        ticket.cancel()
        with self._wake:
            self._wake.notify()

    def close(self) -> None:
        """Stop the thread; requests still running end cancelled."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
            thread = self._thread
        if thread is not None:
            thread.join()

    @abstractmethod
    def _serve(self) -> None:
        """The scheduler thread: take batches (`_take_incoming`) and run them until it returns None."""

    def _joins(self, first: EngineTicket, other: EngineTicket) -> bool:
        """Whether `other` may share a batch that `first` starts (every ticket may, unless overridden)."""
        return True

    def _take_incoming(self, *, idle: bool) -> list[EngineTicket] | None:
        """The next batch, once the engine is idle; None when stopping.

        While a batch runs, new tickets wait here (the engine would not start them before the batch ends
        anyway) and only cancellations are served. An idle engine blocks for the first ticket, then waits
        up to the admission window for as many companions as are known to be coming: the requests holding
        a generation place (`demand`) or, failing that, the requests seen during the last batch, so clients
        whose answers ended together start their next requests together.
        """
        with self._wake:
            if self._stopping:
                self._end_incoming(TurnEnd(cancelled=True), lambda ticket: True)
                return None
            if not idle:
                self._end_incoming(TurnEnd(cancelled=True), lambda ticket: ticket.cancel_requested.is_set())
                self._recent_demand = max(self._recent_demand, self._running_count + len(self._incoming))
                return []
            while not self._incoming and not self._stopping:
                self._wake.wait()
            deadline = time.monotonic() + self._admission_window_s
            # Demand is read again at each arrival: a request that took its place after the first one
            # arrived (its event loop was still submitting) is waited for too.
            while len(self._incoming) < self._admission_target() and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wake.wait(left)
            if self._stopping:
                self._end_incoming(TurnEnd(cancelled=True), lambda ticket: True)
                return None
            first = self._incoming[0]
            admitted = [first, *[t for t in self._incoming[1:] if self._joins(first, t)]]
            admitted = admitted[: self.max_batch_size]
            self._incoming = [ticket for ticket in self._incoming if ticket not in admitted]
            self._recent_demand = len(admitted) + len(self._incoming)
            return admitted

    def _admission_target(self) -> int:
        """How many tickets an idle engine waits for: the companions known to be coming (1 to batch size)."""
        expected = max(self._recent_demand, self._demand() if self._demand is not None else 0)
        return min(self.max_batch_size, max(expected, 1))

    def _end_incoming(self, end: TurnEnd, which: Callable[[EngineTicket], bool]) -> None:
        """End the waiting tickets `which` selects (called with the lock held)."""
        ending = [ticket for ticket in self._incoming if which(ticket)]
        self._incoming = [ticket for ticket in self._incoming if not which(ticket)]
        for ticket in ending:
            deliver_end(ticket, end)


class EngineScheduler(BatchScheduler):
    """Owns one `og.Engine` in a daemon thread; requests are submitted from any thread."""

    def __init__(
        self,
        model: Any,
        *,
        max_batch_size: int,
        admission_window_s: float,
        demand: Callable[[], int] | None = None,
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, admission_window_s=admission_window_s, demand=demand)
        self._model = model

    # ------------------------------------------------------------------ the engine thread

    def _serve(self) -> None:
        import onnxruntime_genai as og

        engine = og.Engine(self._model)
        events = engine.create_event_buffer(4 * self.max_batch_size + 16)
        running: dict[int, EngineTicket] = {}  # id(og request) -> ticket
        while True:
            admitted = self._take_incoming(idle=not running)
            if admitted is None:
                break
            for ticket in admitted:
                self._begin(engine, ticket, running)
            self._send_cancellations(running)
            if not engine.has_pending_requests():
                for ticket in running.values():  # cannot happen while the engine keeps its contract
                    deliver_end(ticket, TurnEnd(error="the engine dropped the request"))
                running.clear()
                continue
            self._running_count = len(running)
            self.peak_batch_size = max(self.peak_batch_size, len(running))
            try:
                engine.run(events)
                self._dispatch(events, running)
            except Exception as exc:  # the engine is unhealthy now: fail its requests, start a new one
                logger.exception("batched ONNX engine step failed")
                for ticket in running.values():
                    deliver_end(ticket, TurnEnd(error=str(exc)))
                running.clear()
                engine = og.Engine(self._model)
                events = engine.create_event_buffer(4 * self.max_batch_size + 16)
        for ticket in running.values():
            deliver_end(ticket, TurnEnd(cancelled=True))

    def _begin(self, engine: Any, ticket: EngineTicket, running: dict[int, EngineTicket]) -> None:
        import numpy as np
        import onnxruntime_genai as og

        if ticket.cancel_requested.is_set():  # gone before it started
            deliver_end(ticket, TurnEnd(cancelled=True))
            return
        spec = ticket.spec
        try:
            request_options = og.RequestOptions()
            request_options.set_max_session_tokens(spec.max_session_tokens)
            request = engine.create_request(options=request_options)
            turn = og.TurnOptions(request)
            turn.set_max_generated_tokens(spec.max_tokens)
            if spec.temperature > 0:
                turn.set_do_sample(True)
                turn.set_temperature(spec.temperature)
                turn.set_top_p(spec.top_p)
            else:
                turn.set_do_sample(False)
            ticket.turn_id = request.begin_turn(np.asarray(spec.prompt_ids, dtype=np.int32), turn)
        except Exception as exc:
            deliver_end(ticket, TurnEnd(error=str(exc)))
            return
        ticket.og_request = request
        running[id(request)] = ticket

    @staticmethod
    def _send_cancellations(running: dict[int, EngineTicket]) -> None:
        for ticket in running.values():
            if ticket.cancel_requested.is_set() and not ticket.cancel_sent:
                ticket.og_request.cancel_turn(ticket.turn_id)  # its CANCELLED event comes with the next run
                ticket.cancel_sent = True

    @staticmethod
    def _dispatch(events: Any, running: dict[int, EngineTicket]) -> None:
        import onnxruntime_genai as og

        for index in range(len(events)):
            event = events[index]
            request = event.request
            ticket = running.get(id(request))
            if ticket is None:
                continue
            flags = int(event.flags)
            if flags & _TOKEN_FLAG:
                deliver_token(ticket, int(event.token))
            if flags & (_FINISHED_FLAG | _FAILED_FLAG):
                reason = event.finish_reason
                if flags & _FAILED_FLAG or reason == og.FinishReason.FAILED:
                    end = TurnEnd(error=f"engine error {event.error_code}")
                else:
                    end = TurnEnd(
                        ended_by_model=reason == og.FinishReason.EOS,
                        cancelled=reason == og.FinishReason.CANCELLED,
                    )
                del running[id(request)]
                request.close()
                deliver_end(ticket, end)


def _deliver(callback: Callable[[_Item], None], item: _Item) -> None:
    try:
        callback(item)
    except RuntimeError:  # the consumer's event loop is gone; the request is ending anyway
        pass


def deliver_end(ticket: EngineTicket, end: TurnEnd) -> None:
    _deliver(ticket.on_end, end)


def deliver_token(ticket: EngineTicket, token: int) -> None:
    _deliver(ticket.on_token, token)


@dataclass
class EngineTurnResult:
    """Filled while a request streams: its token ids and how its turn ended."""

    token_ids: list[int] = field(default_factory=list)
    end: TurnEnd | None = None


async def stream_engine_tokens(
    scheduler: BatchScheduler, spec: TurnSpec, result: EngineTurnResult
) -> AsyncGenerator[int, None]:
    """Submit one turn and yield its token ids as the engine produces them.

    Closing the generator early cancels the turn and waits until the engine has let it go, so the caller's
    concurrency slot is released only when the request no longer takes part in any step.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[int | TurnEnd] = asyncio.Queue()
    ticket = scheduler.submit(
        spec,
        on_token=lambda token: _put_threadsafe(loop, queue, token),
        on_end=lambda end: _put_threadsafe(loop, queue, end),
    )
    try:
        while True:
            item = await queue.get()
            if isinstance(item, TurnEnd):
                result.end = item
                if item.error is not None:
                    raise GenerationError(f"ONNX generation failed: {item.error}")
                return
            result.token_ids.append(item)
            yield item
    finally:
        if result.end is None:
            scheduler.cancel(ticket)
            await asyncio.shield(_wait_for_end(queue, result))


def _put_threadsafe(
    loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[int | TurnEnd], item: int | TurnEnd
) -> None:
    loop.call_soon_threadsafe(queue.put_nowait, item)


async def _wait_for_end(queue: asyncio.Queue[int | TurnEnd], result: EngineTurnResult) -> None:
    while result.end is None:
        item = await queue.get()
        if isinstance(item, TurnEnd):
            result.end = item
