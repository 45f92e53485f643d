"""The `hybridllm` command as users and scripts call it: JSON on the last line, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from services.evaluation.local_server import hybridllm_command


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*hybridllm_command(), *args], capture_output=True, text=True, timeout=300, cwd=cwd, check=False
    )


@pytest.mark.unit
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("ingest", "/definitely/not/here"), "/definitely/not/here"),
        (("serve", "--port", "99999"), "99999"),
        (("train-router", "--data", "missing.jsonl", "--out", "x"), "missing.jsonl"),
        (("train-router", "--data", "pyproject.toml", "--teacher", "/no/t", "--out", "x"), "/no/t"),
        (("soup-router", "--member", "/no/run", "--data", "x.jsonl", "--out", "x"), "/no/run"),
        (("eval", "router", "--model", "/no/model", "--data", "x.jsonl"), "/no/model"),
        (("route", "hello", "--model", "/no/router"), "/no/router"),
        (("eval", "retrieval", "--beir", "/no/beir"), "/no/beir"),
    ],
)
def test_bad_input_is_one_line_naming_the_value(args: tuple[str, ...], needle: str) -> None:
    done = _run(*args)
    assert done.returncode != 0
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    assert needle in lines[-1]
    assert "Traceback" not in done.stderr


@pytest.mark.unit
def test_bad_setting_in_config_file_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("rag:\n  top_k: -3\n")
    done = _run("ingest", str(tmp_path), "--config", str(config))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("hybridllm: error: invalid setting rag.top_k")


@pytest.mark.integration
def test_ingest_prints_a_json_report_and_empty_input_is_an_error(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Leave\n\n## Vacation\n\nEveryone gets 27 days of paid vacation.\n")
    (docs / "b.txt").write_text("The office opens at 08:30 on weekdays.\n")
    index = tmp_path / "index"
    done = _run("ingest", str(docs), "--index", str(index))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["files"] == 2 and report["chunks"] >= 2 and report["embedded"] == report["chunks"]
    again = json.loads(_run("ingest", str(docs), "--index", str(index)).stdout.strip().splitlines()[-1])
    assert again["embedded"] == 0 and again["reused_embeddings"] == report["chunks"]

    empty = tmp_path / "empty"
    empty.mkdir()
    failed = _run("ingest", str(empty), "--index", str(tmp_path / "i2"))
    assert failed.returncode != 0
    assert "Traceback" not in failed.stderr
    assert len(failed.stderr.strip().splitlines()[-1]) < 300


@pytest.mark.unit
def test_help_lists_the_contract_commands() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "--help"], capture_output=True, text=True, check=False
    )
    for command in ("serve", "ingest", "route", "train-router", "soup-router", "eval", "bench"):
        assert command in done.stdout


@pytest.mark.unit
def test_training_off_a_terminal_logs_its_progress_once(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from services.cli import _training_progress

    training = logging.getLogger("training")
    before = list(training.handlers)
    try:
        assert _training_progress() is False  # pytest's captured stderr is not a terminal
        assert _training_progress() is False
        logging.getLogger("training.train_router").info("step 472: val macro-F1 0.9236")
        assert capsys.readouterr().err.count("training.train_router: step 472: val macro-F1 0.9236") == 1
    finally:
        for handler in set(training.handlers) - set(before):
            training.removeHandler(handler)
