import json
from collections import Counter
from pathlib import Path

import pytest

from services.core.errors import ConfigError
from services.router.examples import is_clinc_file, load_clinc, load_csv, load_router_data, stratified_split

pytestmark = pytest.mark.unit


def test_csv_loader_reads_named_columns(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("query,intent,extra\nhello there,direct,x\nwhat is our pto policy,knowledge,y\n")
    assert load_csv(path, text_col="query", label_col="intent") == [
        ("hello there", "direct"),
        ("what is our pto policy", "knowledge"),
    ]
    with pytest.raises(ConfigError, match="no column"):
        load_csv(path, text_col="text", label_col="intent")


def test_fake_clinc_file_is_read_with_oos_in_every_split(tmp_path: Path) -> None:
    fake = {
        "train": [["wake me at 7", "alarm"], ["what's my balance", "balance"]],
        "oos_train": [["how tall is everest", "oos"]],
        "val": [["set an alarm", "alarm"]],
        "oos_val": [["tell me a joke about cats", "oos"]],
        "test": [["balance please", "balance"]],
        "oos_test": [["who won the cup", "oos"], ["recipe for soup", "oos"]],
    }
    path = tmp_path / "data_full.json"
    path.write_text(json.dumps(fake))
    assert is_clinc_file(path)
    splits = load_clinc(path)
    assert splits.train[-1] == ("how tall is everest", "oos")
    assert len(splits.val) == 2 and len(splits.test) == 3
    assert splits.labels == ["alarm", "balance", "oos"]
    assert load_router_data(path).test == splits.test


def test_clinc_file_missing_a_list_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "data_full.json"
    path.write_text(json.dumps({"train": [], "oos_train": []}))
    with pytest.raises(ConfigError, match="'val'"):
        load_clinc(path)


def test_stratified_split_is_seeded_and_keeps_every_label() -> None:
    examples = [(f"t{i}", "a") for i in range(20)] + [(f"u{i}", "b") for i in range(10)]
    kept, held = stratified_split(examples, 0.2, seed=1)
    assert Counter(label for _, label in held) == {"a": 4, "b": 2}
    assert len(kept) + len(held) == 30
    assert stratified_split(examples, 0.2, seed=1) == (kept, held)


def test_jsonl_with_a_bad_line_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "hi", "label": "direct"}\n{"text": "", "label": "direct"}\n')
    with pytest.raises(ConfigError, match="d.jsonl:2"):
        load_router_data(path)
