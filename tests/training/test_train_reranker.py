"""The reranker's training: data loading and the split by file (plain values), and a small real training of
the packaged MiniLM through `hybridllm train-reranker` whose folder services/rag/rerank.py then loads
offline and uses to reorder candidates."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest

from services import cli
from services.core.packaged import minilm_dir
from services.rag.rerank import Candidates, CrossEncoderReranker, build_reranker
from training.train_reranker import (
    RankingExample,
    RerankerConfig,
    load_examples,
    sha256_file,
    split_by_source,
)

# Topics of a tiny handbook: each query's positive is its own topic's passage; the others are negatives.
TOPICS = {
    "benefits/vacation.md": ("How many vacation days do I get?", "Everyone gets 25 days of paid vacation."),
    "benefits/sick.md": ("How many sick days are there?", "You have 12 paid sick days each year."),
    "expenses/travel.md": ("Where do I book a flight?", "Book every flight through Waypoint."),
    "it/laptops.md": ("When is my laptop replaced?", "Laptops are replaced every 36 months."),
    "people/buddy.md": ("Do new joiners get a buddy?", "Each new joiner has a buddy for 60 days."),
    "expenses/meals.md": ("What is the meal allowance?", "The meal allowance is 40 USD a day."),
}


def _rows() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for source, (query, passage) in TOPICS.items():
        others = [p for s, (_, p) in TOPICS.items() if s != source]
        rows.append(
            {
                "query": query,
                "source": source,
                "positive": passage,
                "hard_negatives": others[:2],
                "random_negatives": others[2:3],
            }
        )
    return rows


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.unit
def test_examples_take_hard_negatives_first_and_skip_queries_without_negatives(tmp_path: Path) -> None:
    rows = _rows()
    rows.append(
        {"query": "q?", "source": "x.md", "positive": "p", "hard_negatives": [], "random_negatives": []}
    )
    examples = load_examples(_write(tmp_path / "queries.jsonl", rows), negatives=2)
    assert len(examples) == len(TOPICS)
    first = examples[0]
    assert first.candidates == (rows[0]["positive"], *rows[0]["hard_negatives"])  # type: ignore[misc]


@pytest.mark.unit
def test_a_broken_row_names_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "queries.jsonl", _rows())
    path.write_text(path.read_text() + '{"query": "q?"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=f"queries.jsonl:{len(TOPICS) + 1}: not a reranker data row"):
        load_examples(path, negatives=2)


@pytest.mark.unit
def test_validation_holds_whole_files() -> None:
    examples = [RankingExample(f"q{i}", f"file{i % 5}.md", ("p", "n")) for i in range(20)]
    train, val = split_by_source(examples, 0.2, seed=3)
    assert val and train
    assert not {e.source for e in train} & {e.source for e in val}
    assert len(train) + len(val) == 20


@pytest.mark.unit
def test_config_names_the_bad_value() -> None:
    with pytest.raises(ValueError, match="negatives must be >= 1, got 0"):
        RerankerConfig(negatives=0)
    with pytest.raises(ValueError, match="val_fraction must be in \\[0, 1\\), got 1.5"):
        RerankerConfig(val_fraction=1.5)


@pytest.fixture
def train_reranker_plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`hybridllm train-reranker` registered as its entry point would be once installed."""
    entry = EntryPoint(
        name="train-reranker", value="training.cli:register_train_reranker [train]", group=cli.PLUGIN_GROUP
    )
    monkeypatch.setattr(cli, "plugin_commands", lambda: [entry])
    training = logging.getLogger("training")
    before = list(training.handlers)
    yield
    for handler in set(training.handlers) - set(before):
        training.removeHandler(handler)


@pytest.mark.integration
@pytest.mark.usefixtures("train_reranker_plugin")
def test_train_reranker_writes_a_folder_the_service_reranker_loads_and_uses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _write(tmp_path / "data" / "queries.jsonl", _rows())
    (tmp_path / "data" / "manifest.json").write_text('{"index_version": "v1", "generator": "fake"}')
    out = tmp_path / "reranker"
    args = ["train-reranker", "--data", str(tmp_path / "data"), "--out", str(out), "--max-steps", "12"]
    args += ["--epochs", "10"]
    args += ["--batch-queries", "4", "--negatives", "3", "--max-length", "48", "--learning-rate", "2e-4"]
    args += ["--val-fraction", "0.2", "--torch-threads", "1"]
    cli.main(args)

    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    metrics = json.loads((out / "metrics.json").read_text())
    assert printed["steps"] == metrics["steps"] == 12
    assert metrics["data_sha256"] == sha256_file(data)
    assert metrics["data_index_version"] == "v1" and metrics["data_generator"] == "fake"
    assert metrics["train_queries"] + metrics["val_queries"] == len(TOPICS) and metrics["val_queries"] >= 1
    assert metrics["history"][-1]["loss"] < metrics["history"][0]["loss"]
    # the folder is complete and alone: the staging folder was renamed into place
    assert {"config.json", "model.safetensors", "tokenizer.json", "metrics.json"} <= {
        p.name for p in out.iterdir()
    }
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    # the real service reranker, from the local folder (HF_HUB_OFFLINE=1 in tests)
    reranker = build_reranker(str(out))
    assert isinstance(reranker, CrossEncoderReranker)
    reranker.warm_up()
    vacation_query, vacation = TOPICS["benefits/vacation.md"]
    passages = [p for _, p in TOPICS.values()]
    wrong_first = [*passages[1:], vacation]  # fused order with the right passage last
    vectors = np.eye(len(wrong_first), 8, dtype=np.float32)
    order = reranker.rerank(Candidates(vacation_query, vectors[0], wrong_first, vectors), top_k=3)
    assert len(order) == 3 and len(set(order)) == 3
    assert order[0] == len(wrong_first) - 1, [wrong_first[i] for i in order]


@pytest.mark.integration
@pytest.mark.usefixtures("train_reranker_plugin")
def test_train_reranker_bad_option_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _write(tmp_path / "queries.jsonl", _rows())
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train-reranker", "--data", str(data), "--out", str(tmp_path / "r"), "--negatives", "0"])
    assert exit_info.value.code != 0
    error = capsys.readouterr().err.strip()
    assert error == "hybridllm: error: negatives must be >= 1, got 0"
    assert not (tmp_path / "r").exists()


@pytest.mark.unit
def test_the_packaged_minilm_is_the_default_base() -> None:
    assert RerankerConfig().base == "packaged:all-MiniLM-L6-v2"
    assert (minilm_dir() / "config.json").is_file()
