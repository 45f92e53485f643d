"""Adapter versions shared by every worker: published in a folder, loaded by each worker's watcher.

POST /admin/adapters reaches one worker. That worker copies the adapter into
`<versions dir>/<name>/<version>-<digest>/` (atomically; the digest of its files keeps a retrained
adapter posted under an old version label apart from the first), loads it, and then names that folder in
`<name>/CURRENT` (written atomically). Every worker's watcher reads the CURRENT files and loads a folder it
does not serve yet, so all workers, and replicas sharing the folder, converge within one watch interval;
a worker that starts later loads the current versions before it reports ready. The versions dir is
`server.adapter_versions_dir`, by default `<data_dir>/adapter-versions` (`<data_dir>/adapters/` is where
training writes adapters).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from services.core.atomic import StagedTargetExists, atomic_write, staged_dir
from services.core.errors import InvalidRequest, NotReady
from services.core.protocols import AdapterLoader
from services.core.settings import Settings
from services.gateway.state import GatewayState

logger = logging.getLogger(__name__)

CURRENT_FILE = "CURRENT"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_DIGEST_CHARS = 12


@dataclass(frozen=True, slots=True)
class PublishedVersion:
    version: str  # the label clients see in `hybrid.adapter.version`
    folder: Path


class AdapterVersionStore:
    """`<root>/<name>/<version>-<digest>/` folders, and `<root>/<name>/CURRENT` naming the one to serve."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def stage(self, name: str, version: str, source: Path) -> tuple[Path, bool]:
        """Copy `source` in as `version` of `name`; returns its folder and whether this call created it."""
        _check_component("name", name)
        _check_component("version", version)
        target = self.root / name / f"{version}-{_digest(source)[:_DIGEST_CHARS]}"
        if target.is_dir():  # the same files under the same label: published before
            return target, False
        try:
            with staged_dir(target) as staging:
                shutil.copytree(source, staging, dirs_exist_ok=True)
        except StagedTargetExists:  # another worker published the same files meanwhile
            return target, False
        return target, True

    def discard(self, folder: Path) -> None:
        """Remove a staged folder that failed to load, unless it became current meanwhile."""
        name = folder.parent.name
        published = self.current().get(name)
        if published is None or published.folder != folder:
            shutil.rmtree(folder, ignore_errors=True)

    def make_current(self, folder: Path) -> None:
        atomic_write(folder.parent / CURRENT_FILE, folder.name + "\n")

    def current(self) -> dict[str, PublishedVersion]:
        """adapter name -> the version every worker is to serve."""
        published: dict[str, PublishedVersion] = {}
        if not self.root.is_dir():
            return published
        for pointer in sorted(self.root.glob(f"*/{CURRENT_FILE}")):
            folder_name = pointer.read_text(encoding="utf-8").strip()
            folder = pointer.parent / folder_name
            if "-" in folder_name and _SAFE_NAME.match(folder_name) and folder.is_dir():
                published[pointer.parent.name] = PublishedVersion(folder_name.rsplit("-", 1)[0], folder)
            else:
                logger.warning("ignoring %s: it names no published version (%r)", pointer, folder_name)
        return published


def versions_dir(settings: Settings) -> Path:
    configured = settings.server.adapter_versions_dir
    return configured if configured is not None else settings.data_dir / "adapter-versions"


def _check_component(field: str, value: str) -> None:
    if not _SAFE_NAME.match(value):
        raise InvalidRequest(
            f"{field}: {value!r} must be 1-64 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
            param=field,
        )


def _digest(folder: Path) -> str:
    """A digest of a folder's files: their relative names and bytes."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


class AdapterVersionSync:
    """One worker's side: publishes the versions posted to it and loads those other workers published."""

    def __init__(self, state: GatewayState, loader: AdapterLoader, store: AdapterVersionStore) -> None:
        self._state = state
        self._loader = loader
        self._store = store
        self._served: dict[str, Path] = {}  # adapter name -> the published folder this worker serves
        self._refused: set[Path] = set()  # published folders this worker failed to load: tried once
        self._lock = asyncio.Lock()  # a publish and a check never interleave their loads

    async def publish(self, name: str, version: str, source: Path) -> None:
        """Publish `source` as `version` of `name`, load it here, then make it every worker's current one."""
        async with self._lock:
            folder, created = await asyncio.to_thread(self._store.stage, name, version, source)
            try:
                await asyncio.to_thread(self._loader.load_adapter, name, folder)
            except BaseException:
                if created:
                    await asyncio.to_thread(self._store.discard, folder)
                raise
            self._serve(name, version, folder)
            await asyncio.to_thread(self._store.make_current, folder)

    async def check(self) -> None:
        """Load every published current version this worker does not serve yet."""
        async with self._lock:
            await self._load_published()

    async def _load_published(self) -> None:
        for name, published in (await asyncio.to_thread(self._store.current)).items():
            if self._served.get(name) == published.folder or published.folder in self._refused:
                continue
            try:
                await asyncio.to_thread(self._loader.load_adapter, name, published.folder)
            except NotReady as exc:  # the generator is not up yet (vLLM starting): the next check retries
                logger.warning(
                    "adapter %r: cannot load published version %s yet: %s", name, published.folder, exc
                )
                continue
            except Exception:  # logged once; the worker keeps serving the version it has
                self._refused.add(published.folder)
                logger.exception("adapter %r: cannot load published version %s", name, published.folder)
                continue
            self._serve(name, published.version, published.folder)
            logger.info("adapter %r: now serving published version %r", name, published.version)

    async def watch(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.check()
            except Exception:  # an unreadable CURRENT file must not stop the watcher
                logger.exception("adapter version check failed")

    def _serve(self, name: str, version: str, folder: Path) -> None:
        self._served[name] = folder
        self._state.adapter_versions[name] = version
