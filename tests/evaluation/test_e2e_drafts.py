"""Rows that `hybridllm eval scaffold` marks as drafts are refused until checked (or --allow-drafts)."""

import json

import pytest

from services.cli import main
from services.core.errors import InvalidRequest
from services.evaluation.scoring import load_eval_items

pytestmark = pytest.mark.unit

CHECKED = {"id": "ok-1", "route": "direct", "question": "hi there", "gold_files": [], "answer_substrings": []}
DRAFT = {**CHECKED, "id": "draft-7", "question": "how do I file expenses?", "route": "rag", "draft": True}


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_draft_row_is_refused_naming_the_first_draft(tmp_path):
    data = _write(tmp_path / "q.jsonl", [CHECKED, DRAFT, {**DRAFT, "id": "draft-8"}])
    with pytest.raises(InvalidRequest, match=r"q.jsonl:2: item 'draft-7' is still a draft.*--allow-drafts"):
        load_eval_items(data)


def test_drafts_load_when_allowed_and_a_false_flag_is_no_draft(tmp_path):
    data = _write(tmp_path / "q.jsonl", [CHECKED, DRAFT])
    assert [i.item_id for i in load_eval_items(data, allow_drafts=True)] == ["ok-1", "draft-7"]
    checked = _write(tmp_path / "checked.jsonl", [{**DRAFT, "draft": False}])
    assert load_eval_items(checked)[0].item_id == "draft-7"


def test_eval_e2e_refuses_drafts_in_one_line_before_starting_anything(tmp_path, capsys):
    data = _write(tmp_path / "q.jsonl", [DRAFT])
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "e2e", "--data", str(data)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'draft-7' is still a draft" in err


def test_eval_e2e_with_a_config_but_no_index_or_corpus_names_what_to_pass(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    index_dir = tmp_path / "var" / "index"
    config.write_text(f"rag:\n  index_dir: {index_dir}\nproject:\n  corpus: no-such-folder\n")
    data = _write(tmp_path / "q.jsonl", [CHECKED])
    with pytest.raises(SystemExit):
        main(["eval", "e2e", "--config", str(config), "--data", str(data)])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds no index" in err and "--corpus" in err
    assert "no-such-folder" in err
