"""Batched generation in cohorts: one og.Generator with a batch of requests that start together.

`CohortScheduler` is the default batch scheduler of the ONNX backend (`generator.batch_scheduler`). The
requests that arrive within the admission window (services/llm/onnx_batching.py, `BatchScheduler`) start
together as one batched `og.Generator`: their prompts are prefilled in one pass and each decode step gives
every row its next token. Each request keeps its own stream, token limit and cancellation: a row that ends
(EOS, its max_tokens, its consumer closing the stream) is answered at once and its later tokens are dropped.
The batch itself cannot shrink or take new rows (og.Generator has a fixed batch size), so requests arriving
meanwhile wait for the next cohort, which starts when the running one has no live row left. A batch shares
its search options, so only requests with the same sampling (temperature, top_p) join one cohort; requests
with an adapter, guided decoding or a seed never come here (onnx_backend.py runs them unbatched).

onnxruntime-genai builds a batch's attention mask from the model's `pad_token_id`: every position holding
that id is masked. The converted models keep their tokenizer's pad id, which for the chat models here is an
end-of-turn token (`<|im_end|>`) that every chat prompt contains, so a batch masked real prompt tokens and
changed the answers. The batched model therefore gets a pad id that the chat template never produces, and
prompts are right-padded with it: the model's GroupQueryAttention reads each row's length from the mask and
writes its new tokens after that row's own end, so each row decodes as it would alone (same greedy tokens).
A prompt that contains the pad id itself cannot share a batch (its own token would be masked).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

from services.llm.oga_native import compute_calls
from services.llm.onnx_batching import BatchScheduler, EngineTicket, TurnEnd, deliver_end, deliver_token

logger = logging.getLogger(__name__)


def pad_token_overlay(pad_id: int) -> str:
    """The genai_config overlay that makes `pad_id` the token the attention mask leaves out."""
    return json.dumps({"model": {"pad_token_id": pad_id}})


def choose_pad_id(scaffold_ids: Collection[int], candidates: Iterable[int]) -> int | None:
    """The first candidate the chat scaffold (the template's own tokens) never contains; None if none."""
    for candidate in candidates:
        if candidate not in scaffold_ids:
            return candidate
    return None


def pad_candidates(genai_config: dict[str, Any]) -> list[int]:
    """Ids to try as the batch pad, the model's own pad id first, then its BOS, then id 0."""
    model = genai_config["model"]
    ids = [model.get("pad_token_id"), model.get("bos_token_id"), 0]
    return list(dict.fromkeys(int(i) for i in ids if isinstance(i, int)))


def right_padded(prompts: Sequence[Sequence[int]], pad_id: int) -> Any:
    """The prompts as one int32 batch (rows, longest prompt), each row padded after its end."""
    import numpy as np

    if not prompts:
        raise ValueError("a batch needs at least one prompt")
    width = max(len(ids) for ids in prompts)
    batch = np.full((len(prompts), width), pad_id, dtype=np.int32)
    for row, ids in enumerate(prompts):
        batch[row, : len(ids)] = ids
    return batch


class CohortScheduler(BatchScheduler):
    """Runs admitted requests as one batched og.Generator per cohort, in the scheduler's thread."""

    def __init__(
        self,
        model: Any,
        *,
        pad_id: int,
        eos_ids: Collection[int],
        context_length: int,
        max_batch_size: int,
        admission_window_s: float,
        demand: Callable[[], int] | None = None,
        release_gil: bool = True,
        compute_lock: threading.Lock | None = None,
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, admission_window_s=admission_window_s, demand=demand)
        self._model = model  # loaded with pad_token_overlay(pad_id)
        self._release_gil = release_gil
        self._compute_lock = compute_lock or threading.Lock()  # shared with the model's unbatched requests
        self._pad_id = pad_id
        self._eos_ids = frozenset(eos_ids)
        self._context_length = context_length

    def _joins(self, first: EngineTicket, other: EngineTicket) -> bool:
        """Same sampling as the cohort's first request, and room in the context for the padded batch."""
        a, b = first.spec, other.spec
        longest = max(len(a.prompt_ids), len(b.prompt_ids))
        return (a.temperature, a.top_p) == (b.temperature, b.top_p) and longest + max(
            a.max_tokens, b.max_tokens
        ) <= self._context_length

    def _serve(self) -> None:
        while True:
            admitted = self._take_incoming(idle=True)
            if admitted is None:
                return
            live = [ticket for ticket in admitted if not _ended_if_cancelled(ticket)]
            if not live:
                continue
            self._running_count = len(live)
            self.peak_batch_size = max(self.peak_batch_size, len(live))
            open_rows: dict[int, EngineTicket] = dict(enumerate(live))
            try:
                self._run_cohort(live, open_rows)
            except Exception as exc:  # a failed run fails only its own rows; the next cohort starts afresh
                logger.exception("batched ONNX generation failed")
                for ticket in open_rows.values():
                    deliver_end(ticket, TurnEnd(error=str(exc)))
            self._running_count = 0

    def _run_cohort(self, tickets: Sequence[EngineTicket], open_rows: dict[int, EngineTicket]) -> None:
        """Prefill and decode the cohort until no row is open; `open_rows` holds the rows not yet ended."""
        import onnxruntime_genai as og

        spec = tickets[0].spec
        batch = right_padded([ticket.spec.prompt_ids for ticket in tickets], self._pad_id)
        longest_answer = max(ticket.spec.max_tokens for ticket in tickets)
        params = og.GeneratorParams(self._model)
        options: dict[str, Any] = {
            "max_length": min(batch.shape[1] + longest_answer, self._context_length),
            "batch_size": len(tickets),
        }
        if spec.temperature > 0:
            options.update(do_sample=True, temperature=spec.temperature, top_p=spec.top_p)
        else:
            options.update(do_sample=False)
        params.set_search_options(**options)
        generator = og.Generator(self._model, params)
        calls = compute_calls(generator, release_gil=self._release_gil, lock=self._compute_lock)
        calls.append_tokens(batch)  # the prefill of every row; their first tokens come with the next step
        produced = [0] * len(tickets)
        while open_rows:
            if self._take_incoming(idle=False) is None:  # shutting down
                for ticket in open_rows.values():
                    deliver_end(ticket, TurnEnd(cancelled=True))
                open_rows.clear()
                return
            for row, ticket in list(open_rows.items()):
                if _ended_if_cancelled(ticket):
                    del open_rows[row]
            if not open_rows:
                return
            if generator.is_done():  # the context is full: the remaining rows end by length
                for ticket in open_rows.values():
                    deliver_end(ticket, TurnEnd())
                open_rows.clear()
                return
            calls.generate_next_token()
            next_tokens = generator.get_next_tokens()
            for row, ticket in list(open_rows.items()):
                token = int(next_tokens[row])
                if token in self._eos_ids:
                    del open_rows[row]
                    deliver_end(ticket, TurnEnd(ended_by_model=True))
                    continue
                produced[row] += 1
                deliver_token(ticket, token)
                if produced[row] >= ticket.spec.max_tokens:
                    del open_rows[row]
                    deliver_end(ticket, TurnEnd())


def _ended_if_cancelled(ticket: EngineTicket) -> bool:
    """End a ticket whose consumer has gone (answering it at once); whether it was cancelled."""
    if ticket.cancel_requested.is_set():
        deliver_end(ticket, TurnEnd(cancelled=True))
        return True
    return False
