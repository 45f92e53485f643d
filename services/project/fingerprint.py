"""Content fingerprints that tell a later run whether its inputs changed since the last build."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path


def files_under(root: Path) -> list[Path]:
    """Every file under `root` (a folder or one file), hidden ones excluded, in a stable order."""
    if root.is_file():
        return [root]
    return sorted(
        path
        for path in root.rglob("*")
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts)
    )


def fingerprint(roots: Iterable[Path], extra: Mapping[str, object] | None = None) -> str:
    """sha256 over each file's path (relative to its root) and content, and `extra` (settings that matter)."""
    digest = hashlib.sha256(json.dumps(dict(extra or {}), sort_keys=True, default=str).encode())
    for root in roots:
        base = root.parent if root.is_file() else root
        for path in files_under(root):
            digest.update(path.relative_to(base).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()
