"""A steady closed-loop load in background threads that records every request's outcome over time, for
fault benches: which status codes (or connection failures) clients saw before, during and after a fault."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

CONNECTION_FAILED = "connection failed"


@dataclass(frozen=True, slots=True)
class Outcome:
    at_s: float  # since the load started
    status: str  # "200", "503", ... or CONNECTION_FAILED
    latency_ms: float
    retry_after: str | None
    index_version: str | None


class SteadyLoad:
    """`concurrency` threads, each sending `body()` to `url` until stopped, `pause_s` apart."""

    def __init__(
        self,
        url: str,
        body: Callable[[int], Mapping[str, Any]],
        *,
        concurrency: int = 2,
        pause_s: float = 0.05,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self._url = url
        self._body = body
        self._concurrency = concurrency
        self._pause_s = pause_s
        self._headers = dict(headers or {})
        self._timeout_s = timeout_s
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._origin = 0.0
        self.outcomes: list[Outcome] = []

    def elapsed_s(self) -> float:
        return time.perf_counter() - self._origin

    def __enter__(self) -> SteadyLoad:
        self._origin = time.perf_counter()
        for worker in range(self._concurrency):
            thread = threading.Thread(target=self._run, args=(worker,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self._timeout_s + 5)

    def _run(self, worker: int) -> None:
        n = worker
        with httpx.Client(timeout=self._timeout_s, headers=self._headers) as client:
            while not self._stop.is_set():
                sent = time.perf_counter()
                try:
                    resp = client.post(self._url, json=dict(self._body(n)))
                    status, retry_after = str(resp.status_code), resp.headers.get("retry-after")
                    version = _index_version(resp) if resp.status_code == 200 else None
                except httpx.HTTPError:
                    status, retry_after, version = CONNECTION_FAILED, None, None
                done = time.perf_counter()
                outcome = Outcome(sent - self._origin, status, (done - sent) * 1000.0, retry_after, version)
                with self._lock:
                    self.outcomes.append(outcome)
                n += self._concurrency
                self._stop.wait(self._pause_s)

    def statuses(self, since_s: float = 0.0, until_s: float = float("inf")) -> dict[str, int]:
        with self._lock:
            picked = [o.status for o in self.outcomes if since_s <= o.at_s < until_s]
        return dict(sorted(collections.Counter(picked).items()))

    def first_ok_after(self, at_s: float) -> float | None:
        """When the first request sent after `at_s` succeeded (its send time), or None."""
        with self._lock:
            times = [o.at_s for o in self.outcomes if o.at_s >= at_s and o.status == "200"]
        return min(times) if times else None


def _index_version(resp: httpx.Response) -> str | None:
    try:
        version = resp.json().get("hybrid", {}).get("index_version")
    except ValueError:
        return None
    return str(version) if version is not None else None
