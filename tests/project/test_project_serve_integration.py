"""From a folder of documents to a served project: `hybridllm init`, then `hybridllm serve --config`.

The real workflow on a tiny corpus written here: router data from its headings, a real (briefly trained)
router, a real ingest, a real `hybridllm serve` process with the `openai` generator backend against the
fixture upstream, and the `openai` client. A second serve reuses the router and the index.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from openai import OpenAI

from benchmarks.harness.fixture_upstream import FixtureBehaviour, running_fixture_upstream
from services import cli
from services.evaluation.local_server import started_service
from services.project.router_hook import HOOK_GROUP, HOOK_NAME
from services.rag.index_store import read_current
from tests.project.conftest import write_corpus

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ORG = "Acme Corp"
# Verbatim from the packaged out-of-scope examples the project copies: the briefly trained router has seen it.
OUT_OF_SCOPE = "how much ibuprofen can I take for my back pain"


def hook_distribution(folder: Path) -> Path:
    """A dist-info that registers the training plugin's router hook, for `hybridllm serve` subprocesses
    (the venv's installed metadata may predate the entry point in pyproject.toml)."""
    info = folder / "hybridllm_project_hook-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hybridllm-project-hook\nVersion: 0\n")
    entry = f"[{HOOK_GROUP}]\n{HOOK_NAME} = training.project_router:PROJECT_ROUTER\n"
    (info / "entry_points.txt").write_text(entry)
    return folder


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with running_fixture_upstream(FixtureBehaviour(delay_s=0.005, tokens=8)) as url:
        yield url


def _serve_env(tmp_path: Path) -> dict[str, str]:
    import os

    path = [str(hook_distribution(tmp_path / "hook")), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(path), "HYBRID_OBSERVABILITY__LOG_JSON": "false"}


@pytest.mark.usefixtures("with_router_hook")
def test_init_then_serve_answers_for_the_org_and_a_second_serve_reuses_everything(
    tmp_path: Path, upstream: str
) -> None:
    corpus = write_corpus(tmp_path / "docs")
    project = tmp_path / "acme"
    cli.main(
        ["init", str(project), "--corpus", str(corpus), "--org", ORG, "--description", "Acme's handbook"]
    )
    config = project / "config.yaml"
    edited = yaml.safe_load(config.read_text(encoding="utf-8"))  # a user's own edits: generator, quick router
    edited["project"]["router_max_steps"] = 60
    edited["generator"] = {"backend": "openai", "model": "fixture", "base_url": f"{upstream}/v1"}
    edited["rag"]["watch_interval_s"] = 0
    config.write_text(yaml.safe_dump(edited), encoding="utf-8")
    env = _serve_env(tmp_path)
    index_dir, router_dir = project / "var" / "index", project / "var" / "router"

    with started_service(None, config=config, index_dir=index_dir, extra_env=env, ready_timeout_s=600) as svc:
        client = OpenAI(base_url=f"{svc.base_url}/v1", api_key="unused", max_retries=0)
        refused = client.chat.completions.create(
            model="hybrid", messages=[{"role": "user", "content": OUT_OF_SCOPE}], max_tokens=8
        )
        answered = client.chat.completions.create(
            model="rag", messages=[{"role": "user", "content": "What is the per diem abroad?"}], max_tokens=8
        )
    hybrid = (refused.model_extra or {})["hybrid"]
    assert hybrid["route"]["target"] == "refuse", hybrid
    assert "Acme's handbook" in (refused.choices[0].message.content or "")
    sources = [s["source"] for s in (answered.model_extra or {})["hybrid"]["sources"]]
    assert "travel.md" in sources

    version = read_current(index_dir)
    metrics = (router_dir / "metrics.json").read_text()
    stamps = {p: p.stat().st_mtime_ns for p in (router_dir / "model.onnx", router_dir / "metrics.json")}
    with started_service(None, config=config, index_dir=index_dir, extra_env=env, ready_timeout_s=300) as svc:
        client = OpenAI(base_url=f"{svc.base_url}/v1", api_key="unused", max_retries=0)
        again = client.chat.completions.create(
            model="hybrid", messages=[{"role": "user", "content": OUT_OF_SCOPE}], max_tokens=8
        )
    assert "Acme's handbook" in (again.choices[0].message.content or "")
    assert read_current(index_dir) == version  # no re-ingest: the same index version is served
    assert (router_dir / "metrics.json").read_text() == metrics  # no retraining
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert json.loads(metrics)["project_data_sha256"]
