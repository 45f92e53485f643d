"""The own-documents bench's pieces that run without a handbook: its configs, counts, report and command."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks import cli
from benchmarks.system import own_documents
from services.core.settings import EXAMPLE_ORG_NAME, ProjectSettings, load_settings
from services.project.init import project_config
from services.project.layout import ProjectLayout


def _project(tmp_path: Path) -> ProjectLayout:
    layout = ProjectLayout(tmp_path / "sourcegraph")
    corpus = tmp_path / "content"
    corpus.mkdir()
    layout.templates.mkdir(parents=True)
    project = ProjectSettings(corpus=corpus, org_name="Sourcegraph", org_description="Sourcegraph's handbook")
    layout.config.write_text(yaml.safe_dump(project_config(layout, project)), encoding="utf-8")
    return layout


def test_the_default_router_config_serves_the_projects_index_and_org_without_preparing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = _project(tmp_path)
    router = tmp_path / "default-router"
    config, env = own_documents.default_router_config(layout, router, tmp_path / "other.yaml")

    assert "project" not in yaml.safe_load(config.read_text(encoding="utf-8"))  # serve will not retrain it
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(config)
    assert settings.router.model_dir == router
    assert settings.rag.index_dir == layout.index_dir
    assert settings.prompts.templates_dir == layout.templates
    assert settings.data_dir == layout.data_dir
    assert (settings.project.org_name, settings.project.org_description) == (
        "Sourcegraph",
        "Sourcegraph's handbook",
    )


def test_project_files_and_answers_that_name_the_example_company_are_counted(tmp_path: Path) -> None:
    layout = _project(tmp_path)
    (layout.templates / "refusal.j2").write_text("I answer questions about Sourcegraph's handbook.")
    assert own_documents.example_org_files(layout) == []
    (layout.templates / "rag.j2").write_text(f"You work for {EXAMPLE_ORG_NAME}.")
    assert own_documents.example_org_files(layout) == ["templates/rag.j2"]

    items = [
        {"target": "rag", "answer": f"{EXAMPLE_ORG_NAME} pays $100."},
        {"target": "rag", "answer": "Sourcegraph pays $100."},
        {"target": "prompt", "answer": ""},
    ]
    run = own_documents.scored({"n": 3, "errors": 0, "route_accuracy": 2 / 3, "items": items})
    assert run["routes"] == {"prompt": 1, "rag": 2}
    assert run["example_org_answers"] == 1
    assert run["route_accuracy"] == pytest.approx(2 / 3)


def _result(reused: bool) -> dict[str, Any]:
    run = {"n": 60, "errors": 0, "route_accuracy": 0.9, "hit@5": 0.8, "answer_contains": 0.5,
           "routes": {"rag": 54, "prompt": 6}, "example_org_answers": 0}  # fmt: skip
    return {
        "handbook": "content",
        "corpus_files": 883,
        "eval": "corpus/eval/sourcegraph_eval.jsonl",
        "steps_s": {name: 60.0 for name in own_documents.STEP_LABELS},
        "prepare": {"router": "trained", "index": "ingested", "second_serve_reused_everything": reused},
        "router_data_counts": {"train": {"knowledge": 300, "direct": 700, "out_of_scope": 350}},
        "router_recipe": "packaged default",
        "router_max_steps": None,
        "runs": {"project_router": run, "default_router": {**run, "route_accuracy": 0.7}},
        "router_dev": {
            "data": "corpus/router/generalization_sourcegraph.jsonl",
            "routers": {
                "project_router": dict(
                    zip(own_documents.ROUTER_METRICS, (124, 0.94, 0.95, 0.93, 0.92), strict=True)
                ),
                "default_router": dict(
                    zip(own_documents.ROUTER_METRICS, (124, 0.6, 0.6, 1.0, 0.6), strict=True)
                ),
            },
        },
        "example_org_files": [],
    }


def test_the_report_has_every_step_and_both_routers_side_by_side() -> None:
    report = own_documents.report_markdown(_result(reused=True))

    assert all(label in report for label in own_documents.STEP_LABELS.values())
    assert (
        "| trained by `init` on the handbook | 60 | 0 | 0.900 | 0.800 | 0.500 | rag 54, prompt 6 | 0 |"
        in report
    )
    assert "| 0.700 |" in report
    assert "| trained by `init` on the handbook | 124 | 0.940 | 0.950 | 0.930 | 0.920 |" in report
    assert "reused the index version and the router: yes" in report
    assert "router: NO" in own_documents.report_markdown(_result(reused=False))
    assert "Environment: not recorded" in report


def test_a_missing_handbook_is_one_line_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        own_documents.main(["--handbook", str(tmp_path / "absent")])
    assert exited.value.code == 2
    assert f"--handbook {tmp_path / 'absent'} is not a folder" in capsys.readouterr().err


def test_hybridllm_bench_own_documents_dispatches_here(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    monkeypatch.setattr(own_documents, "main", lambda argv: seen.append(list(argv)) or 0)
    with pytest.raises(SystemExit) as exited:
        cli.bench_command(argparse.Namespace(kind="own-documents", rest=["--work", "w"]))
    assert (exited.value.code, seen) == (0, [["--work", "w"]])
