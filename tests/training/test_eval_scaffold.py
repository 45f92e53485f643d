"""`hybridllm eval scaffold`: draft rows from a corpus's headings, marked as drafts, never with answers."""

import json
from importlib.metadata import EntryPoint

import pytest

import services.cli
from services.cli import PLUGIN_GROUP, main
from services.core.errors import InvalidRequest
from services.evaluation.scoring import load_eval_items
from training.eval_scaffold import first_sentences, scaffold_rows

pytestmark = pytest.mark.unit

LEAVE = """# Parental Leave

Parents get 16 weeks of paid leave. Tell your manager early.

## How to apply for leave

Submit the form in Workday at least 30 days before. HR confirms within a week.

**Can I split my leave into two parts?**

Yes, in up to two blocks.
"""
LAPTOP = """# Laptop Refresh

```
# not a heading
```

Laptops are replaced every **three years**. Ask [IT](https://it.example) for a new one.
"""


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "docs"
    (root / "it").mkdir(parents=True)
    (root / "leave.md").write_text(LEAVE)
    (root / "it" / "laptops.md").write_text(LAPTOP)
    return root


def test_first_sentences_take_the_body_after_each_heading(corpus):
    assert first_sentences(corpus / "leave.md") == {
        "Parental Leave": "Parents get 16 weeks of paid leave.",
        "How to apply for leave": "Submit the form in Workday at least 30 days before.",
    }
    assert first_sentences(corpus / "it" / "laptops.md") == {
        "Laptop Refresh": "Laptops are replaced every three years."
    }


def test_every_row_is_a_draft_with_a_note_and_no_ground_truth(corpus):
    rows = scaffold_rows(corpus, n=10, n_direct=2, n_oos=3, seed=1)
    assert all(r["draft"] is True and r["note"] and r["answer_substrings"] == [] for r in rows)
    rag = [r for r in rows if r["route"] == "rag"]
    assert {f for r in rag for f in r["gold_files"]} == {"leave.md", "it/laptops.md"}
    assert "Can I split my leave into two parts?" in {r["question"] for r in rag}
    suggestions = {r["suggested_answer"] for r in rag}
    assert "Laptops are replaced every three years." in suggestions
    assert [r["route"] for r in rows].count("direct") == 2 and [r["route"] for r in rows].count(
        "out_of_scope"
    ) == 3
    assert len({r["id"] for r in rows}) == len(rows)
    assert all(r["gold_files"] == [] and "suggested_answer" not in r for r in rows if r["route"] != "rag")


def test_the_same_seed_gives_the_same_rows_and_n_caps_them(corpus):
    assert scaffold_rows(corpus, n=2, n_direct=1, n_oos=1, seed=7) == scaffold_rows(
        corpus, n=2, n_direct=1, n_oos=1, seed=7
    )
    rag = scaffold_rows(corpus, n=2, n_direct=0, n_oos=0, seed=7)
    assert len(rag) == 2 and {r["gold_files"][0] for r in rag} == {"leave.md", "it/laptops.md"}


def test_scaffold_output_is_refused_by_eval_until_checked(corpus, tmp_path):
    out = tmp_path / "questions.jsonl"
    out.write_text(
        "".join(json.dumps(r) + "\n" for r in scaffold_rows(corpus, n=3, n_direct=1, n_oos=1, seed=1))
    )
    with pytest.raises(InvalidRequest, match="'draft-rag-001' is still a draft"):
        load_eval_items(out)
    assert len(load_eval_items(out, allow_drafts=True)) == 5


def test_a_folder_without_markdown_is_one_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("plain text")
    with pytest.raises(ValueError, match="no markdown files under"):
        scaffold_rows(tmp_path, n=3, n_direct=0, n_oos=0, seed=1)


@pytest.fixture
def scaffold_plugin(monkeypatch):
    entry = EntryPoint("eval.scaffold", "training.eval_scaffold:register_eval_scaffold", PLUGIN_GROUP)
    monkeypatch.setattr(services.cli, "plugin_commands", lambda: [entry])


def test_the_command_writes_drafts_and_keeps_an_existing_file(scaffold_plugin, corpus, tmp_path, capsys):
    out = tmp_path / "eval" / "questions.jsonl"
    main(["eval", "scaffold", "--corpus", str(corpus), "--out", str(out), "--n", "3", "--seed", "5"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["rows"] == 13 and summary["rag"] == 3 and summary["draft"] is True
    written = out.read_text()
    with pytest.raises(SystemExit):
        main(["eval", "scaffold", "--corpus", str(corpus), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--force" in err and out.read_text() == written
    main(["eval", "scaffold", "--corpus", str(corpus), "--out", str(out), "--n", "1", "--force"])
    assert len(out.read_text().splitlines()) == 11
