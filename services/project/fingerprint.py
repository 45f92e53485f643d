"""Content fingerprints that tell a later run whether its inputs changed since the last build."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from services.rag.loaders import candidate_files


def fingerprint(roots: Iterable[Path], extra: Mapping[str, object] | None = None) -> str:
    """sha256 over each file's path (relative to its root) and content, and `extra` (settings that matter)."""
    digest = hashlib.sha256(json.dumps(dict(extra or {}), sort_keys=True, default=str).encode())
    for root in roots:
        base = root.parent if root.is_file() else root
        for path in candidate_files(root):
            digest.update(path.relative_to(base).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()
