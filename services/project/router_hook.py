"""Router data and training for a project, provided by the training plugin.

services/ never imports training/: the training extra registers an object in the entry-point group
`hybridllm.project` under the name `router`, and the base install, which has none, says what to install.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol

from services.core.errors import ConfigError
from services.core.settings import ProjectSettings
from services.project.layout import ProjectLayout

HOOK_GROUP = "hybridllm.project"
HOOK_NAME = "router"
TRAIN_HINT = "pip install 'hybridllm[train]'"


class ProjectRouter(Protocol):
    def write_sources(self, layout: ProjectLayout) -> None:
        """Copy the packaged examples of every label into layout.router_source for editing."""

    def build_data(self, layout: ProjectLayout, project: ProjectSettings) -> bool:
        """(Re)build the router data when the corpus or the sources changed; True when it did."""

    def train(
        self, layout: ProjectLayout, project: ProjectSettings, model_dir: Path, *, progress: bool
    ) -> bool:
        """Train into `model_dir` when its recorded data fingerprint differs; True when it did."""


def load_project_router() -> ProjectRouter | None:
    """The training plugin's ProjectRouter, or None when the training extra is not installed."""
    for entry in entry_points(group=HOOK_GROUP, name=HOOK_NAME):
        try:
            hook: ProjectRouter = entry.load()
        except ImportError:
            return None
        return hook
    return None


def require_project_router() -> ProjectRouter:
    hook = load_project_router()
    if hook is None:
        raise ConfigError(f"building a project's router needs the training extra: {TRAIN_HINT}")
    return hook
