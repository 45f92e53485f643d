"""Reuse of prompt prefixes already held in an `og.Generator`'s KV cache.

onnxruntime-genai 0.18 cannot copy or share a KV cache between generators, but one generator can be
rewound (`rewind_to`) to a length it already holds and go on from there. So finished generators are kept
with the prompt they prefilled. A request takes one that shares a prefix with its prompt, rewinds it to
that prefix and prefills only the rest. Requests of one pipeline share its rendered system prompt, and a
conversation's next turn starts with the previous turn's prompt.

Only prefilled tokens are reused, and at least MIN_PREFILLED_TOKENS are prefilled again: ONNX Runtime's
int8 MatMul computes a single row (a decode step) with other rounding than several (a prefill), so an
answer's KV, or a one-token prefill, would change later greedy tokens. With both rules the tokens are the
ones a fresh generator gives (tests/llm/test_onnx_backend.py, benchmarks/results/ttft.md).

A kept generator's KV buffer is `tokens` long for its whole life, so a request whose prompt and answer
could outgrow it runs on a fresh generator instead; `slots` bounds how many are kept. Generators are only
shared between requests with the same key (the sampling options fixed when a generator is made).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

MIN_PREFILLED_TOKENS = 2


@dataclass(eq=False)
class PrefixSlot:
    """One kept generator, the key it was made for, and the prompt whose KV it holds."""

    generator: Any
    key: Hashable
    held: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class PrefixLease:
    """A generator lent to one request, rewound to `reused` tokens of its prompt."""

    slot: PrefixSlot
    reused: int

    @property
    def generator(self) -> Any:
        return self.slot.generator


def shared_prefix_length(held: Sequence[int], prompt: Sequence[int]) -> int:
    """How many leading tokens `held` and `prompt` have in common."""
    length = 0
    for held_token, prompt_token in zip(held, prompt, strict=False):
        if held_token != prompt_token:
            break
        length += 1
    return length


class PrefixCache:
    """At most `slots` generators with `tokens`-long KV buffers; each is lent to one request at a time."""

    def __init__(self, slots: int, tokens: int) -> None:
        self.slots = slots
        self.tokens = tokens
        self._idle: list[PrefixSlot] = []  # least recently used first
        self._lent = 0
        self._lock = threading.Lock()

    def fits(self, session_tokens: int) -> bool:
        """Whether a request reaching `session_tokens` (prompt and answer) can run on a kept generator."""
        return self.slots > 0 and session_tokens <= self.tokens

    def take(self, key: Hashable, prompt_ids: Sequence[int], create: Callable[[], Any]) -> PrefixLease | None:
        """A generator for `prompt_ids`, rewound to the prefix it shares with them; None: every slot is lent.

        `create` makes a generator with a `tokens`-long buffer for `key`; it is called outside the lock.
        """
        with self._lock:
            slot, reused = self._choose(key, prompt_ids)
            if slot is None and self._lent + len(self._idle) >= self.slots:
                if not self._idle:
                    return None
                self._idle.pop(0)  # the least recently used generator of another key makes room
            if slot is not None:
                self._idle.remove(slot)
            self._lent += 1
        try:
            if slot is None:
                slot = PrefixSlot(create(), key)
            reused = max(0, min(reused, len(prompt_ids) - MIN_PREFILLED_TOKENS))
            slot.generator.rewind_to(reused)
        except BaseException:
            with self._lock:
                self._lent -= 1
            raise
        slot.held = list(prompt_ids)  # once the request's prefill is done; if it fails, the slot is dropped
        return PrefixLease(slot, reused)

    def _choose(self, key: Hashable, prompt_ids: Sequence[int]) -> tuple[PrefixSlot | None, int]:
        """The idle generator of `key` to rewind for `prompt_ids`, and the prefix they share.

        One whose whole prompt starts this one (the same prompt again, or a conversation's next turn)
        loses nothing and is taken at once. Otherwise a free slot gets a new generator, so that each kept
        prompt stays for its next turn (the price: the first `slots` different prompts after a start reuse
        nothing); when all are made, the one sharing the longest prefix is rewound, on ties the least
        recently used (a prompt just served is the likeliest to get a next turn).
        """
        best: PrefixSlot | None = None
        best_length = -1
        for slot in self._idle:
            if slot.key != key:
                continue
            length = shared_prefix_length(slot.held, prompt_ids)
            if length == len(slot.held):
                return slot, length
            if length > best_length:  # the idle list runs from the least recently used
                best, best_length = slot, length
        if best is None or self._lent + len(self._idle) < self.slots:
            return None, 0
        return best, best_length

    def give_back(self, lease: PrefixLease, *, intact: bool) -> None:
        """Keep the lent generator for later requests; `intact` False (it failed mid-step) drops it."""
        slot = lease.slot
        with self._lock:
            self._lent -= 1
            if intact:
                self._idle.append(slot)
            while self._idle and self._lent + len(self._idle) > self.slots:
                self._idle.pop(0)

    def clear(self) -> None:
        """Drop every idle generator (the model is going away); lent ones are dropped when given back."""
        with self._lock:
            self._idle.clear()
            self.slots = 0
