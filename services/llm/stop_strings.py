"""Stop strings over streamed text: emit only what can no longer become the start of a stop string."""

from __future__ import annotations

from collections.abc import Sequence


class StopStringMatcher:
    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._pending = ""
        self.stopped = False

    def feed(self, text: str) -> tuple[str, bool]:
        """Add generated text; return (text safe to emit, whether a stop string was hit)."""
        if self.stopped:
            return "", True
        if not self._stops:
            return text, False
        self._pending += text
        first_hit = min((idx for idx in (self._pending.find(s) for s in self._stops) if idx >= 0), default=-1)
        if first_hit >= 0:
            emit = self._pending[:first_hit]
            self._pending = ""
            self.stopped = True
            return emit, True
        # Hold back the longest suffix that is a prefix of some stop string: it may complete next time.
        hold = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(self._pending)), 0, -1):
                if self._pending.endswith(stop[:length]):
                    hold = max(hold, length)
                    break
        emit = self._pending[: len(self._pending) - hold]
        self._pending = self._pending[len(self._pending) - hold :]
        return emit, False

    def flush(self) -> str:
        """At the end of generation the held-back tail is ordinary text."""
        rest, self._pending = self._pending, ""
        return "" if self.stopped else rest
