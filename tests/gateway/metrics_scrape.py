"""Scrape a live gateway's /metrics and read or diff the samples: the one helper the gateway tests share.

Parsing is benchmarks.harness.prom's, the one parser of exposition text.

Samples are keyed by exposition name and label set; counters are compared as deltas around the requests a
test sends, so tests do not depend on their order.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from prometheus_client.mmap_dict import MmapedDict

from benchmarks.harness.prom import Scrape as Samples
from benchmarks.harness.prom import parse_metrics as parse

__all__ = [
    "Samples", "by_process", "delta", "label_values", "parse", "sample_names", "scrape", "series", "total",
    "value",
]  # fmt: skip


def series(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The key of one series in parsed samples."""
    return (name, tuple(sorted(labels.items())))


def scrape(base_url: str) -> Samples:
    response = httpx.get(base_url + "/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return parse(response.text)


def _matching(samples: Samples, name: str, labels: dict[str, str]) -> list[float]:
    want = set(labels.items())
    return [value for (n, lbl), value in samples.items() if n == name and want <= set(lbl)]


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of `name` whose labels include `labels`; 0 when there is none."""
    return sum(_matching(samples, name, labels))


def value(samples: Samples, name: str, **labels: str) -> float:
    """Like `total`, but the series must be exported (a labelled counter appears at its first use)."""
    found = _matching(samples, name, labels)
    assert found, f"metric {name}{labels} not exported"
    return sum(found)


def delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    return total(after, name, **labels) - total(before, name, **labels)


def label_values(samples: Samples, name: str, label: str) -> set[str]:
    return {dict(lbl)[label] for (n, lbl) in samples if n == name and label in dict(lbl)}


def sample_names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def by_process(directory: Path, files: str, name: str) -> dict[str, float]:
    """Metric `name` summed per worker process, read from the workers' own files in a
    PROMETHEUS_MULTIPROC_DIR; `files` picks the kind (`counter_*.db`, `gauge_livesum_*.db`: one per pid)."""
    found: dict[str, float] = {}
    for path in sorted(directory.glob(files)):
        store = MmapedDict(str(path), read_mode=True)  # type: ignore[no-untyped-call]
        try:
            values = list(store.read_all_values())  # type: ignore[no-untyped-call]
        finally:
            store.close()  # type: ignore[no-untyped-call]
        pid = path.stem.rsplit("_", 1)[1]
        found[pid] = sum(value for key, value, _ in values if json.loads(key)[1] == name)
    return found
