"""Cached build artifacts (converted models, LoRA adapters, embedder exports): built once, then checked.

A folder is built into a staged sibling and moved into place whole (services/core/atomic.py), carrying a
manifest of its files, their sizes and sha256 digests. Sizes are checked on every use (cheap); digests
where a caller asks for them (the folders a server loads, at start), since a flipped byte in a weight file
leaves its size alone and would serve wrong answers silently.

A damaged folder found by `cached_build` is moved aside (`<name>.damaged-<UTC time>`, kept for inspection)
and built again, with a warning naming both: a crash or a bad disk must not leave a server that can never
start, and nothing is deleted. Where the build cannot run (a serving-only install without the `convert`
extra), the error names the damage and the fix.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.core.atomic import StagedTargetExists, staged_dir
from services.core.errors import ConfigError

logger = logging.getLogger(__name__)

MANIFEST_NAME = ".hybridllm-manifest.json"
DAMAGED_MARK = ".damaged-"
_HASH_CHUNK_BYTES = 1 << 20


class DamagedArtifact(ConfigError):
    """A cached folder whose files no longer match its manifest (missing, truncated, changed bytes)."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: Path, **extra: Any) -> None:
    """Record every file with its size and digest: what a start checks the folder against."""
    paths = [p for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST_NAME]
    files = {str(p.relative_to(folder)): p.stat().st_size for p in paths}
    digests = {str(p.relative_to(folder)): file_sha256(p) for p in paths}
    manifest = {"files": files, "sha256": digests, **extra}
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1), encoding="utf-8")


def verify_manifest(folder: Path, *, checksums: bool = False) -> dict[str, Any]:
    """The manifest of a finished folder; DamagedArtifact naming the first problem when the folder is damaged.

    `checksums` also compares every file's sha256 (folders written before digests were recorded are
    checked by size only).
    """
    hint = f"delete {folder} to convert again"
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DamagedArtifact(
            f"converted model {folder} has no manifest (incomplete or foreign); {hint}"
        ) from exc
    except json.JSONDecodeError as exc:
        raise DamagedArtifact(f"converted model {folder} has a damaged manifest; {hint}") from exc
    for relative, size in manifest.get("files", {}).items():
        path = folder / relative
        if not path.is_file():
            raise DamagedArtifact(f"converted model {folder} is missing {relative}; {hint}")
        if path.stat().st_size != size:
            raise DamagedArtifact(
                f"converted model {folder}: {relative} is {path.stat().st_size} bytes, expected {size} "
                f"(truncated?); {hint}"
            )
    if checksums:
        for relative, want in manifest.get("sha256", {}).items():
            got = file_sha256(folder / relative)
            if got != want:
                raise DamagedArtifact(
                    f"converted model {folder}: {relative} has sha256 {got[:12]}, expected {want[:12]} "
                    f"(changed on disk); {hint}"
                )
    return dict(manifest)


def quarantine(folder: Path) -> Path | None:
    """Move a damaged folder aside for inspection; None when another process already did."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    aside = folder.with_name(f"{folder.name}{DAMAGED_MARK}{stamp}")
    try:
        os.replace(folder, aside)
    except FileNotFoundError:
        return None
    return aside


def cached_build(
    target: Path, build: Callable[[Path], None], *, checksums: bool = False, **manifest_extra: Any
) -> Path:
    """Return `target` if a complete copy exists, else run `build(staging_dir)` and move the result in.

    `manifest_extra` is recorded in the manifest (what the folder was built from). When another process
    finishes the same build first, its copy is kept, after the same check. A damaged copy is moved aside
    and built again (see the module docstring); `checksums` verifies digests, not only sizes.
    """
    damage: DamagedArtifact | None = None
    if target.is_dir():
        try:
            verify_manifest(target, checksums=checksums)
            return target
        except DamagedArtifact as exc:
            damage = exc
            aside = quarantine(target)
            logger.warning(
                "%s; moved it to %s and building it again", exc.message, aside or "(already moved)"
            )
    try:
        with staged_dir(target) as staging:
            build(staging)
            write_manifest(staging, **manifest_extra)
    except StagedTargetExists:
        logger.info("%s was built concurrently; using that copy", target)
    except ImportError as exc:
        if damage is None:
            raise
        raise ConfigError(
            f"{damage.message.split(';')[0]}; it was moved aside, and rebuilding needs the `convert` extra "
            f"(pip install 'hybridllm[convert]'): {exc}"
        ) from exc
    verify_manifest(target)
    return target
