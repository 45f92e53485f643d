"""Reading a training recipe (a YAML file of dataclass fields) with command-line overrides on top."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from services.core.errors import ConfigError


def read_recipe(
    source: Path, fields_of: type, *, what: str, overrides: Mapping[str, Any], tuples: Iterable[str] = ()
) -> dict[str, Any]:
    """The recipe's values, non-None `overrides` applied, list values of `tuples` as tuples.

    ConfigError names the file when it is unreadable, not a mapping, or has keys `fields_of` does not have.
    """
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {what} {source}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {source} must hold a mapping")
    values = {**raw, **{k: v for k, v in overrides.items() if v is not None}}
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(fields_of)})
    if unknown:
        raise ConfigError(f"{what} {source}: unknown keys {unknown}")
    for key in tuples:
        if key in values:
            values[key] = tuple(values[key])
    return values
