"""Latency statistics and goodput over per-request records (vLLM `bench serve` conventions).

TTFT: seconds from sending the request to the first content token. TPOT: (e2e - TTFT) / (output tokens - 1),
per request. ITL: the gaps between consecutive content chunks, pooled over requests. Goodput: requests per
second that met every SLO given (`ttft:500 tpot:50 e2e:3000`, milliseconds).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PERCENTILES: tuple[int, ...] = (50, 90, 95, 99)
SLO_METRICS: tuple[str, ...] = ("ttft", "tpot", "e2e")


@dataclass(slots=True)
class RequestRecord:
    """What one request measured at the client. Times in seconds; `ttft_s` is None when it failed."""

    pipeline: str
    item_id: str
    start_s: float
    e2e_s: float
    ok: bool
    ttft_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    output_tokens: int = 0
    prompt_tokens: int = 0
    answer: str = ""
    error: str = ""
    hybrid: dict[str, Any] = field(default_factory=dict)

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first; None when there is no second token to time."""
        if not self.ok or self.ttft_s is None or self.output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)


def percentile(values: Sequence[float], q: float) -> float:
    """The percentile rule of every bench: numpy.percentile's default (linear); NaN for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    if not values:
        return math.nan
    return float(np.percentile(values, q))


def summarize_ms(values_s: Iterable[float]) -> dict[str, float]:
    """mean, p50, p90, p95, p99 and max in milliseconds (NaN-free: an empty list gives an empty dict)."""
    values = [v * 1000.0 for v in values_s]
    if not values:
        return {}
    summary = {"mean": sum(values) / len(values)}
    for q in PERCENTILES:
        summary[f"p{q}"] = percentile(values, q)
    summary["max"] = max(values)
    return summary


def parse_goodput(specs: Sequence[str]) -> dict[str, float]:
    """`["ttft:500", "e2e:3000"]` -> {"ttft": 0.5, "e2e": 3.0} (seconds)."""
    slos: dict[str, float] = {}
    for spec in specs:
        name, sep, value = spec.partition(":")
        name = name.strip().lower()
        if not sep or name not in SLO_METRICS:
            raise ValueError(f"goodput SLO must be one of {'/'.join(SLO_METRICS)}:MS, got {spec!r}")
        try:
            ms = float(value)
        except ValueError as exc:
            raise ValueError(f"goodput SLO value must be milliseconds, got {spec!r}") from exc
        if ms <= 0:
            raise ValueError(f"goodput SLO must be > 0 ms, got {spec!r}")
        slos[name] = ms / 1000.0
    return slos


def meets_slos(record: RequestRecord, slos: Mapping[str, float]) -> bool:
    """A failed request never meets an SLO; a request with one output token has no TPOT to violate."""
    if not record.ok:
        return False
    observed = {"ttft": record.ttft_s, "tpot": record.tpot_s, "e2e": record.e2e_s}
    for name, limit in slos.items():
        value = observed[name]
        if value is None:
            if name == "tpot":
                continue
            return False
        if value > limit:
            return False
    return True


def summarize_records(
    records: Sequence[RequestRecord], duration_s: float, slos: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """The serving numbers of one run: counts, throughput, TTFT / TPOT / ITL / E2E summaries, goodput."""
    if duration_s <= 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    ok = [r for r in records if r.ok]
    output_tokens = sum(r.output_tokens for r in ok)
    summary: dict[str, Any] = {
        "completed": len(ok),
        "failed": len(records) - len(ok),
        "duration_s": duration_s,
        "request_throughput": len(ok) / duration_s,
        "output_throughput": output_tokens / duration_s,
        "total_output_tokens": output_tokens,
        "total_prompt_tokens": sum(r.prompt_tokens for r in ok),
        "ttft_ms": summarize_ms(r.ttft_s for r in ok if r.ttft_s is not None),
        "tpot_ms": summarize_ms(t for r in ok if (t := r.tpot_s) is not None),
        "itl_ms": summarize_ms(gap for r in ok for gap in r.itl_s),
        "e2e_ms": summarize_ms(r.e2e_s for r in ok),
    }
    if slos:
        good = sum(1 for r in records if meets_slos(r, slos))
        summary["goodput"] = {
            "slos_ms": {name: limit * 1000.0 for name, limit in slos.items()},
            "good_requests": good,
            "request_goodput": good / duration_s,
            "good_fraction": good / len(records) if records else 0.0,
        }
    errors: dict[str, int] = {}
    for r in records:
        if not r.ok:
            key = r.error.split(":", 1)[0][:80] or "unknown"
            errors[key] = errors.get(key, 0) + 1
    if errors:
        summary["errors"] = errors
    return summary
