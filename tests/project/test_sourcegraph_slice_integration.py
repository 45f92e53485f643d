"""The README's walkthrough on a slice of a real handbook this project did not write (the Sourcegraph one).

`hybridllm init` on ten files copied from ../shared/datasets/sourcegraph_handbook, then `hybridllm serve
--config` (a briefly trained router, a real ingest, the `openai` generator backend on the fixture upstream):
a knowledge question is routed to rag and retrieves its file, an out-of-scope one is refused in the org's
name, and nothing the project wrote or answered names the example company.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from openai import OpenAI

from services import cli
from services.core.settings import EXAMPLE_ORG_NAME
from services.evaluation.local_server import started_service
from tests.conftest import DATASETS
from tests.project.test_project_serve_integration import OUT_OF_SCOPE, _serve_env, upstream

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HANDBOOK = DATASETS / "sourcegraph_handbook" / "content"
ORG = "Sourcegraph"
# Small pages from different departments (paths relative to the handbook's content/ folder).
SLICE = (
    "departments/engineering/dev/process/pull-requests.md",
    "departments/engineering/demo-day.md",
    "departments/tech-ops/process/internal-security/passwords.md",
    "departments/tech-ops/process/internal-security/computer-standards.md",
    "departments/security/secret-sharing-policy.md",
    "departments/people-talent/buddy-program.md",
    "departments/marketing/swag.md",
    "company-info-and-process/communication/1-1.md",
    "company-info-and-process/communication/retrospectives.md",
    "departments/tech-ops/tools/Okta/main.md",
)
KNOWLEDGE_SOURCE = SLICE[0]
EXAMPLE_ORG_WORD = EXAMPLE_ORG_NAME.split()[0]  # "Larkspur": the example company, in any phrasing

__all__ = ["upstream"]  # the module-scoped fixture, shared with the tiny-corpus walkthrough


def copy_slice(target: Path) -> Path:
    for relative in SLICE:
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(HANDBOOK / relative, target / relative)
    return target


def seen_question_about_pull_requests(project: Path) -> str:
    """A knowledge question that init generated from pull-requests.md's headings: the briefly trained
    router has seen it (as the tiny-corpus walkthrough's refusal has), so this checks the wiring."""
    rows = [json.loads(line) for line in (project / "router" / "train.jsonl").read_text().splitlines()]
    return next(row["text"] for row in rows if row["label"] == "knowledge" and " PR" in row["text"])


def example_org_mentions(folder: Path) -> list[str]:
    """Files under `folder` (templates, config, README, router sources) that name the example company."""
    return [
        path.relative_to(folder).as_posix()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and EXAMPLE_ORG_WORD in path.read_text(encoding="utf-8", errors="replace")
    ]


def test_sourcegraph_slice_from_init_to_serving(tmp_path: Path, upstream: str) -> None:  # noqa: F811
    if not all((HANDBOOK / relative).is_file() for relative in SLICE):
        pytest.skip(f"the Sourcegraph handbook is not at {HANDBOOK} (expected ../shared/datasets)")
    corpus = copy_slice(tmp_path / "content")
    project = tmp_path / "sourcegraph"
    description = "Sourcegraph's company handbook"
    cli.main(["init", str(project), "--corpus", str(corpus), "--org", ORG, "--description", description])
    assert example_org_mentions(project) == []

    config = project / "config.yaml"
    edited = yaml.safe_load(config.read_text(encoding="utf-8"))  # a quick router and the fixture generator
    edited["project"]["router_max_steps"] = 60
    edited["generator"] = {"backend": "openai", "model": "fixture", "base_url": f"{upstream}/v1"}
    edited["rag"]["watch_interval_s"] = 0
    config.write_text(yaml.safe_dump(edited), encoding="utf-8")
    index_dir = project / "var" / "index"
    question = seen_question_about_pull_requests(project)

    env = _serve_env(tmp_path)
    with started_service(None, config=config, index_dir=index_dir, extra_env=env, ready_timeout_s=600) as svc:
        client = OpenAI(base_url=f"{svc.base_url}/v1", api_key="unused", max_retries=0)
        asked = {
            text: client.chat.completions.create(
                model="hybrid", messages=[{"role": "user", "content": text}], max_tokens=8
            )
            for text in (question, OUT_OF_SCOPE)
        }
    knowledge = (asked[question].model_extra or {})["hybrid"]
    assert knowledge["route"]["target"] == "rag", knowledge["route"]
    assert KNOWLEDGE_SOURCE in [source["source"] for source in knowledge["sources"]]
    refusal = asked[OUT_OF_SCOPE]
    assert (refusal.model_extra or {})["hybrid"]["route"]["target"] == "refuse"
    assert description in (refusal.choices[0].message.content or "")
    answers = [response.choices[0].message.content or "" for response in asked.values()]
    assert not [answer for answer in answers if EXAMPLE_ORG_WORD in answer]
    assert example_org_mentions(project / "templates") == []
