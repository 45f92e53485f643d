"""Progress lines for commands that configure no logging: one stderr handler on a logger, added once."""

from __future__ import annotations

import logging
import sys


def log_to_stderr(logger: logging.Logger) -> None:
    """`logger`'s INFO lines go to stderr with a timestamp; calling again adds no second handler."""
    if not any(getattr(h, "hybridllm_progress", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
        handler.hybridllm_progress = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
