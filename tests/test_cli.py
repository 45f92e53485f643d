"""The `hybridllm` command as users and scripts call it: JSON on the last line, one-line errors."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import httpx
import pytest

from services import cli
from services.cli import PLUGIN_GROUP
from services.evaluation.local_server import hybridllm_command, service_env, started_service


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
    commands = ("serve", "ingest", "route", "train-router", "soup-router", "eval", "bench", "init", "plan")
    for command in commands:
        assert command in done.stdout


@pytest.mark.unit
def test_training_off_a_terminal_logs_its_progress_once(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from training.cli import training_progress

    training = logging.getLogger("training")
    before = list(training.handlers)
    try:
        assert training_progress() is False  # pytest's captured stderr is not a terminal
        assert training_progress() is False
        logging.getLogger("training.train_router").info("step 472: val macro-F1 0.9236")
        assert capsys.readouterr().err.count("training.train_router: step 472: val macro-F1 0.9236") == 1
    finally:
        for handler in set(training.handlers) - set(before):
            training.removeHandler(handler)


def _entry(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=PLUGIN_GROUP)


@pytest.mark.unit
def test_plugins_come_from_the_entry_point_group(monkeypatch: pytest.MonkeyPatch) -> None:
    plugins = [
        _entry("train-router", "training.cli:register_train_router [train]"),
        _entry("eval.generator", "training.cli:register_eval_generator [train]"),
    ]
    monkeypatch.setattr(cli, "plugin_commands", lambda: plugins)
    parser = cli.build_parser()
    args = parser.parse_args(["train-router", "--data", "pyproject.toml", "--out", "x", "--epochs", "2"])
    assert args.epochs == 2 and args.router_config is None
    assert parser.parse_args(["eval", "generator", "--model", ".", "--data", "."]).limit == 12
    with pytest.raises(SystemExit):  # not registered: no such command
        parser.parse_args(["bench", "load"])


@pytest.mark.unit
def test_the_installed_plugins_are_the_training_and_benchmark_commands() -> None:
    names = {entry.name for entry in cli.plugin_commands()}
    assert {"train-router", "soup-router", "train-generator", "eval.generator", "bench"} <= names


@pytest.mark.unit
def test_a_plugin_missing_its_extra_fails_with_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def handler(_: argparse.Namespace) -> None:
        import hybridllm_no_such_module  # noqa: F401

    def register(subparsers: cli.Subparsers) -> argparse.ArgumentParser:
        return cli.add_command(subparsers, "needs-torch", handler, "a plugin")

    entry = _entry("needs-torch", "tests.fake:register [train]")
    monkeypatch.setattr(EntryPoint, "load", lambda self: register)
    monkeypatch.setattr(cli, "plugin_commands", lambda: [entry])
    with pytest.raises(SystemExit) as exited:
        cli.main(["needs-torch"])
    assert exited.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "hybridllm: error: this command needs 'hybridllm_no_such_module', which is not installed: "
        "pip install 'hybridllm[train]'"
    ]


@pytest.mark.unit
def test_ingest_without_the_convert_extra_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "services.rag.ingest", None)  # as if its imports were not installed
    with pytest.raises(SystemExit) as exited:
        cli.main(["ingest", str(tmp_path)])
    assert exited.value.code == 1
    assert capsys.readouterr().err.strip().endswith("pip install 'hybridllm[convert]'")


@pytest.mark.unit
def test_a_plugin_whose_package_is_missing_keeps_its_name_and_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(
        cli, "plugin_commands", lambda: [_entry("bench", "hybridllm_no_such_pkg.cli:register [bench]")]
    )
    with pytest.raises(SystemExit) as exited:
        cli.main(["bench", "load", "--rps", "3"])
    assert exited.value.code == 1
    assert capsys.readouterr().err.strip().endswith("pip install 'hybridllm[bench]'")


# The modules of the convert, train and bench extras: the serving install has none of them.
NOT_IN_THE_SERVING_INSTALL = (
    "torch",
    "matplotlib",
    "sentence_transformers",
    "peft",
    "transformers",
    "accelerate",
    "gguf",
    "onnx",
    "onnx_ir",
)
# On PYTHONPATH, sitecustomize runs at start-up: a None entry in sys.modules makes `import torch` raise
# ModuleNotFoundError and importlib.util.find_spec return None, as when the package is not installed.
BLOCKER = f"""import sys
for name in {NOT_IN_THE_SERVING_INSTALL!r}:
    sys.modules[name] = None
"""


@pytest.mark.integration
def test_serve_answers_from_a_prepared_var_without_torch_or_matplotlib(
    tmp_path: Path, handbook_index: Path, service_router: Path
) -> None:
    from services.core.settings import load_settings
    from services.llm.model_prep import prepare
    from services.rag.embedder import build_query_embedder

    # What `make run` prepares before serving: the converted generator and the embedder's ONNX export.
    settings = load_settings(
        rag={"index_dir": str(handbook_index)}, router={"model_dir": str(service_router)}
    )
    prepare(settings)
    build_query_embedder(settings.rag).warm_up()

    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER, encoding="utf-8")
    path = [str(blocker), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {"PYTHONPATH": os.pathsep.join(path), "HYBRID_ROUTER__MODEL_DIR": str(service_router)}
    probe = subprocess.run(
        [sys.executable, "-c", "import torch"],
        env=service_env(env),
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr  # the blocker is in force

    with started_service(None, index_dir=handbook_index, extra_env=env, ready_timeout_s=300) as service:
        ready = httpx.get(f"{service.base_url}/readyz", timeout=10).json()
        assert {"prompt", "rag", "hybrid"} <= set(ready["pipelines"]), ready
        question = {"role": "user", "content": "How many vacation days do I get?"}
        answer = httpx.post(
            f"{service.base_url}/v1/chat/completions",
            json={"model": "hybrid", "messages": [question], "max_tokens": 8},
            timeout=120,
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"].strip()
