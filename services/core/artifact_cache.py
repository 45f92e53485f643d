"""Cached build artifacts (converted models, LoRA adapters, embedder exports): built once, then checked.

A folder is built into a staged sibling and moved into place whole (services/core/atomic.py), carrying a
manifest of its files and sizes. A folder whose files no longer match (truncated, deleted) is refused with
a ConfigError that says to delete it: rebuilding silently would hide disk problems, and a rebuild can take
minutes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.core.atomic import StagedTargetExists, staged_dir
from services.core.errors import ConfigError

logger = logging.getLogger(__name__)

MANIFEST_NAME = ".hybridllm-manifest.json"


def write_manifest(folder: Path, **extra: Any) -> None:
    """Record every file and its size, so a later start can tell a complete folder from a damaged one."""
    files = {
        str(path.relative_to(folder)): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST_NAME
    }
    (folder / MANIFEST_NAME).write_text(json.dumps({"files": files, **extra}, indent=1), encoding="utf-8")


def verify_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a finished folder; ConfigError naming the first problem when the folder is damaged."""
    hint = f"delete {folder} to convert again"
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(
            f"converted model {folder} has no manifest (incomplete or foreign); {hint}"
        ) from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"converted model {folder} has a damaged manifest; {hint}") from exc
    for relative, size in manifest.get("files", {}).items():
        path = folder / relative
        if not path.is_file():
            raise ConfigError(f"converted model {folder} is missing {relative}; {hint}")
        if path.stat().st_size != size:
            raise ConfigError(
                f"converted model {folder}: {relative} is {path.stat().st_size} bytes, expected {size} "
                f"(truncated?); {hint}"
            )
    return dict(manifest)


def cached_build(target: Path, build: Callable[[Path], None], **manifest_extra: Any) -> Path:
    """Return `target` if a complete copy exists, else run `build(staging_dir)` and move the result in.

    `manifest_extra` is recorded in the manifest (what the folder was built from). When another process
    finishes the same build first, its copy is kept, after the same check.
    """
    if target.is_dir():
        verify_manifest(target)
        return target
    try:
        with staged_dir(target) as staging:
            build(staging)
            write_manifest(staging, **manifest_extra)
    except StagedTargetExists:
        logger.info("%s was built concurrently; using that copy", target)
    verify_manifest(target)
    return target
