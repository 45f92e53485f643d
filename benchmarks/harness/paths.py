"""Where the repository and the committed benchmark results are, for every bench."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS_ROOT = REPO_ROOT / "benchmarks" / "results"


def repo_path(path: Path | str) -> str:
    """A path as a committed report may print it: relative to the repository (`../shared/...` for what sits
    beside it); anywhere else (a temporary folder) only its last part, so no machine's layout is recorded."""
    resolved = Path(path).resolve()
    if resolved.is_relative_to(REPO_ROOT.parent):
        return os.path.relpath(resolved, REPO_ROOT)
    return f"<outside the repository>/{resolved.name}"
