"""Labelled router examples: JSONL, CSV with named columns, and CLINC150's `data_full.json`, read as-is.

Training reads its splits here; `hybridllm eval router` reads the examples it scores.

Examples are (text, label) pairs. `load_router_data` returns the train/val/test `RouterSplits`: a validation
split is held out (stratified by label, seeded) when the source has none and no eval file is given.
"""

from __future__ import annotations

import csv
import json
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.core.errors import ConfigError

Example = tuple[str, str]

# CLINC150 ships its out-of-scope queries in separate `oos_*` lists with the label "oos".
CLINC_SPLITS: dict[str, tuple[str, str]] = {
    "train": ("train", "oos_train"),
    "val": ("val", "oos_val"),
    "test": ("test", "oos_test"),
}


@dataclass(frozen=True, slots=True)
class RouterSplits:
    train: list[Example]
    val: list[Example]
    test: list[Example]
    source: str

    @property
    def labels(self) -> list[str]:
        """Sorted label set of the training split (the classifier's output order)."""
        return sorted({label for _, label in self.train})


def is_clinc_file(path: Path) -> bool:
    """CLINC150's layout: one JSON object (not JSONL) with `train` and `oos_train` lists."""
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(raw, dict) and "train" in raw and "oos_train" in raw


def load_clinc(path: Path) -> RouterSplits:
    """Read `data_full.json`: train+oos_train, val+oos_val, test+oos_test."""
    try:
        raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read CLINC150 file {path}: {exc}") from exc
    splits: dict[str, list[Example]] = {}
    for name, (in_scope, oos) in CLINC_SPLITS.items():
        rows: list[Example] = []
        for key in (in_scope, oos):
            if key not in raw:
                raise ConfigError(f"CLINC150 file {path} has no {key!r} list")
            for item in raw[key]:
                if not isinstance(item, list) or len(item) != 2:
                    raise ConfigError(f"CLINC150 file {path}: {key} holds {item!r}, expected [text, label]")
                rows.append((str(item[0]), str(item[1])))
        splits[name] = rows
    return RouterSplits(train=splits["train"], val=splits["val"], test=splits["test"], source=str(path))


def load_jsonl(path: Path, *, text_col: str = "text", label_col: str = "label") -> list[Example]:
    rows: list[Example] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read router data {path}: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
        rows.append(_example(record, text_col, label_col, f"{path}:{number}"))
    return rows


def load_csv(path: Path, *, text_col: str = "text", label_col: str = "label") -> list[Example]:
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            missing = [col for col in (text_col, label_col) if col not in columns]
            if missing:
                raise ConfigError(f"{path}: no column(s) {missing}; columns are {columns}")
            return [
                _example(record, text_col, label_col, f"{path}:{number}")
                for number, record in enumerate(reader, start=2)
            ]
    except OSError as exc:
        raise ConfigError(f"cannot read router data {path}: {exc}") from exc


def _example(record: Any, text_col: str, label_col: str, where: str) -> Example:
    if not isinstance(record, dict):
        raise ConfigError(f"{where}: expected an object with {text_col!r} and {label_col!r}")
    text, label = record.get(text_col), record.get(label_col)
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{where}: {text_col!r} must be a non-empty string, got {text!r}")
    if label is None or str(label).strip() == "":
        raise ConfigError(f"{where}: {label_col!r} is missing")
    return text, str(label).strip()


def load_examples(path: Path, *, text_col: str = "text", label_col: str = "label") -> list[Example]:
    """One flat file of examples (JSONL or CSV), chosen by suffix."""
    if not path.is_file():
        raise ConfigError(f"router data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return load_csv(path, text_col=text_col, label_col=label_col)
    if suffix in {".jsonl", ".ndjson", ".json"}:
        return load_jsonl(path, text_col=text_col, label_col=label_col)
    raise ConfigError(f"router data {path}: unsupported format {suffix!r} (use .jsonl, .csv or CLINC .json)")


def stratified_split(
    examples: Sequence[Example], fraction: float, *, seed: int
) -> tuple[list[Example], list[Example]]:
    """Hold out `fraction` of every label (at least one example where a label has two or more)."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    by_label: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        by_label[example[1]].append(example)
    rng = random.Random(seed)
    kept: list[Example] = []
    held: list[Example] = []
    for label in sorted(by_label):
        group = list(by_label[label])
        rng.shuffle(group)
        n_held = round(len(group) * fraction) if len(group) > 1 else 0
        n_held = max(n_held, 1) if len(group) > 1 else 0
        held.extend(group[:n_held])
        kept.extend(group[n_held:])
    rng.shuffle(kept)
    rng.shuffle(held)
    return kept, held


def load_router_data(
    data: Path,
    *,
    text_col: str = "text",
    label_col: str = "label",
    eval_file: Path | None = None,
    val_fraction: float = 0.15,
    seed: int = 13,
) -> RouterSplits:
    """Train/val(/test) splits from CLINC150, or from one file (+ an optional eval file).

    For a flat file, a sibling `val.jsonl`/`test.jsonl` is NOT guessed: pass `eval_file`, otherwise
    `val_fraction` of the data is held out. The test split is then empty.
    """
    if is_clinc_file(data):
        splits = load_clinc(data)
        if eval_file is not None:
            return RouterSplits(
                train=splits.train,
                val=load_examples(eval_file, text_col=text_col, label_col=label_col),
                test=splits.test,
                source=splits.source,
            )
        return splits
    examples = load_examples(data, text_col=text_col, label_col=label_col)
    if not examples:
        raise ConfigError(f"router data {data} holds no examples")
    if eval_file is not None:
        val = load_examples(eval_file, text_col=text_col, label_col=label_col)
        return RouterSplits(train=examples, val=val, test=[], source=str(data))
    train, val = stratified_split(examples, val_fraction, seed=seed)
    return RouterSplits(train=train, val=val, test=[], source=str(data))
