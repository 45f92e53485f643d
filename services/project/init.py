"""`hybridllm init`: write a project folder for one organisation's documents."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from services.core.atomic import atomic_write
from services.core.errors import ConfigError
from services.core.settings import ProjectSettings
from services.llm.prompts import PACKAGED_TEMPLATES
from services.project.corpus_check import check_corpus
from services.project.layout import ProjectLayout
from services.project.readme import PROJECT_README
from services.project.router_hook import ProjectRouter, require_project_router

CONFIG_HEADER = (
    "# hybridllm settings for this project (hybridllm serve --config config.yaml).\n"
    "# Relative paths are relative to this file's folder, because the file has a `project` section.\n"
)


def project_config(layout: ProjectLayout, project: ProjectSettings) -> dict[str, Any]:
    """The config.yaml of a new project: its organisation and corpus, and paths inside the folder."""
    corpus = project.corpus.resolve()
    shown = corpus.relative_to(layout.root) if corpus.is_relative_to(layout.root) else corpus
    return {
        "project": {
            "corpus": str(shown),
            "org_name": project.org_name,
            "org_description": project.org_description,
        },
        "data_dir": "var",
        "rag": {"index_dir": "var/index", "corpus_dirs": [str(shown)]},
        "router": {"model_dir": "var/router"},
        "prompts": {"templates_dir": "templates"},
    }


def render_org(text: str, project: ProjectSettings) -> str:
    """A packaged template with the organisation's variables written in, so the user edits plain text."""
    for name, value in project.template_variables().items():
        text = text.replace("{{ " + name + " }}", value)
    return text


def write_templates(layout: ProjectLayout, project: ProjectSettings) -> list[str]:
    layout.templates.mkdir(parents=True, exist_ok=True)
    written = []
    for template in sorted(PACKAGED_TEMPLATES.glob("*.j2")):
        atomic_write(
            layout.templates / template.name, render_org(template.read_text(encoding="utf-8"), project)
        )
        written.append(template.name)
    return written


def _refuse_existing(root: Path, force: bool) -> None:
    if root.exists() and not root.is_dir():
        raise ConfigError(f"project folder {root} exists and is not a folder")
    if root.is_dir() and any(root.iterdir()) and not force:
        raise ConfigError(f"project folder {root} already exists: pass --force to write over it")


def init_project(
    root: Path,
    corpus: Path,
    org_name: str | None,
    description: str | None,
    *,
    force: bool,
    router: ProjectRouter | None = None,
) -> dict[str, Any]:
    """Write the project folder `root` for `corpus`; ConfigError with one line on bad input.

    `router` builds the router data: by default the training plugin's (services/project/router_hook.py).
    """
    if not org_name or not org_name.strip():
        raise ConfigError("--org is required: the organisation's name, e.g. --org 'Acme Corp'")
    _refuse_existing(root, force)
    files = check_corpus(corpus)
    router = router or require_project_router()
    org_name = org_name.strip()
    project = ProjectSettings(
        corpus=corpus.resolve(),
        org_name=org_name,
        org_description=(description or "").strip() or f"{org_name}'s documents",
    )
    layout = ProjectLayout(root.resolve())
    layout.root.mkdir(parents=True, exist_ok=True)
    if force and layout.router_source.exists():
        shutil.rmtree(layout.router_source)  # --force starts the editable sources afresh
    config = yaml.safe_dump(project_config(layout, project), sort_keys=False, allow_unicode=True)
    atomic_write(layout.config, CONFIG_HEADER + config)
    templates = write_templates(layout, project)
    router.write_sources(layout)
    router.build_data(layout, project)
    readme = PROJECT_README.format(org_name=org_name, corpus=project.corpus, root=root)
    atomic_write(layout.readme, readme)
    return {
        "project": str(layout.root),
        "config": str(layout.config),
        "corpus_files": len(files),
        "templates": templates,
        "router_data": str(layout.router_data),
        "next": f"hybridllm serve --config {layout.config}",
    }
