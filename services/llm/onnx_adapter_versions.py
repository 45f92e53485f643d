"""Versioned LoRA adapters for the ONNX backend: new versions load while requests run on the old ones.

All versions live in one `og.Adapters` container, each under its own name (`tuned#2`), because a generator
can use adapters from one container only and a name can be loaded once. onnxruntime-genai (0.15 and later,
PR #2274) serialises load, unload and the per-generator acquire/release with a mutex, and refuses to unload
an adapter a generator still holds, so loading into a container in use is safe.

A request pins the version current when it enters the backend and keeps it to its end, whatever is loaded
meanwhile. A replaced version is unloaded once no pinned request uses it; should a generator still hold it
then (the library refuses), it stays loaded and is tried again at the next release.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class AdapterPin:
    """The adapter version one request runs with: its container and its name inside it.

    `release()` ends the pin (idempotent): the request is over and its og.Generator gone.
    """

    def __init__(self, versions: AdapterVersions, name: str, loaded_as: str, container: Any) -> None:
        self.name = name
        self.loaded_as = loaded_as
        self.container = container  # og.Adapters
        self._versions = versions
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._versions.unpin(self.loaded_as)


class AdapterVersions:
    """Served adapter name -> its current version in one og.Adapters container, with per-version pins."""

    def __init__(self, container: Any) -> None:
        self._container = container
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()  # loads one at a time, so versions are numbered in load order
        self._current: dict[str, str] = {}
        self._pins: Counter[str] = Counter()
        self._retired: set[str] = set()
        self._loads = 0

    @property
    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._current)

    def current(self, name: str) -> str | None:
        """The name the current version of `name` is loaded as (None: not loaded)."""
        with self._lock:
            return self._current.get(name)

    def load(self, name: str, adapter_file: Path) -> str:
        """Load `adapter_file` as the new current version of `name`; returns the name it is loaded as."""
        with self._load_lock:
            self._loads += 1
            loaded_as = f"{name}#{self._loads}"
            self._container.load(str(adapter_file), loaded_as)  # the slow part, outside the pin lock
            with self._lock:
                replaced = self._current.get(name)
                self._current[name] = loaded_as
                if replaced is not None:
                    self._retired.add(replaced)
                self._unload_idle()
        logger.info("adapter %r: %s loaded as %s", name, adapter_file, loaded_as)
        return loaded_as

    def pin(self, name: str) -> AdapterPin:
        with self._lock:
            loaded_as = self._current[name]
            self._pins[loaded_as] += 1
        return AdapterPin(self, name, loaded_as, self._container)

    def unpin(self, loaded_as: str) -> None:
        """One request that pinned `loaded_as` is over (AdapterPin.release calls this once)."""
        with self._lock:
            self._pins[loaded_as] -= 1
            if self._pins[loaded_as] <= 0:
                del self._pins[loaded_as]
            self._unload_idle()

    def loaded(self) -> list[str]:
        """Every version still in the container (current and not yet unloaded), for tests and logs."""
        with self._lock:
            return sorted({*self._current.values(), *self._retired})

    def _unload_idle(self) -> None:
        """Unload replaced versions no request pins (called with the lock held)."""
        for loaded_as in sorted(self._retired):
            if self._pins[loaded_as] > 0:
                continue
            try:
                self._container.unload(loaded_as)
            except RuntimeError as exc:  # a generator still holds it: keep it for the next release
                logger.debug("adapter %s not unloaded yet: %s", loaded_as, exc)
                continue
            self._retired.discard(loaded_as)
            logger.info("adapter version %s unloaded (replaced, no request uses it)", loaded_as)
