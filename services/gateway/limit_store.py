"""Where per-key limit state lives: one Protocol, a memory store (per worker) and a Redis store (shared).

A store both keeps the state and decides, in one step, whether a request is admitted: with Redis that
step is one atomic script, so two replicas can never both take the last unit of a bucket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

SECONDS_PER_DAY = 86_400.0

# Which limit refused a request, in the order they are checked.
LimitName = Literal["tokens_per_day", "usd_per_day", "tokens_per_minute", "requests_per_minute"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """The limit a request is over, the seconds until it may pass, and (daily budgets) what was used."""

    limit: LimitName
    retry_after_s: float
    used: float = 0.0


class LimitStoreError(Exception):
    """The store could not answer (unreachable, timed out, refused the command)."""


class LimitStore(Protocol):
    async def admit(self, key_id: str) -> Refusal | None:
        """Count one request for `key_id` and return None, or return why it must wait (nothing counted)."""
        ...

    async def record(self, key_id: str, tokens: int, usd: float) -> None:
        """Debit what a finished request used (prompt + completion tokens, cost from the ledger)."""
        ...

    async def aclose(self) -> None:
        """Release connections; called once when the server stops."""
        ...
