"""Progress of a long embedding pass: a tqdm bar on a terminal, rate-and-ETA log lines elsewhere.

Ingesting a real corpus embeds tens of thousands of texts; under `nohup`, a pipe or a served ingest (no
terminal) a bar would be carriage-return noise in a log, and nothing at all would leave a user guessing.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from tqdm import tqdm

from services.core.stderr_log import log_to_stderr

logger = logging.getLogger(__name__)

LOG_EVERY_S = 30.0


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


class EmbeddingProgress:
    """Counts embedded texts; `bar=True` draws tqdm (rate and ETA), otherwise logs a line every
    `log_every_s` seconds and one at the end."""

    def __init__(
        self,
        total: int,
        what: str,
        *,
        bar: bool,
        log_every_s: float = LOG_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._total = total
        self._what = what
        self._done = 0
        self._clock = clock
        self._log_every_s = log_every_s
        self._started = clock()
        self._last_log = self._started
        self._bar: Any = tqdm(total=total, desc=f"embedding {what}", unit=what) if bar else None

    def __enter__(self) -> EmbeddingProgress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close(finished=error is None)

    def update(self, count: int) -> None:
        self._done += count
        if self._bar is not None:
            self._bar.update(count)
            return
        now = self._clock()
        if now - self._last_log >= self._log_every_s and self._done < self._total:
            self._last_log = now
            rate = self._done / max(now - self._started, 1e-9)
            logger.info(
                "embedding %s: %d/%d (%.0f%%), %.1f %s/s, about %s left",
                self._what,
                self._done,
                self._total,
                100.0 * self._done / max(self._total, 1),
                rate,
                self._what,
                _duration((self._total - self._done) / max(rate, 1e-9)),
            )

    def close(self, *, finished: bool = True) -> None:
        if self._bar is not None:
            self._bar.close()
            return
        if finished and self._total:
            elapsed = self._clock() - self._started
            logger.info(
                "embedded %d %s in %s (%.1f %s/s)",
                self._done,
                self._what,
                _duration(elapsed),
                self._done / max(elapsed, 1e-9),
                self._what,
            )


def progress_bars_or_log_lines() -> bool:
    """For a command: True (draw bars) when stderr is a terminal; otherwise the progress lines of this module
    are logged to stderr (once set up), since a command that configures no logging would show nothing."""
    if sys.stderr.isatty():
        return True
    log_to_stderr(logger)
    return False
