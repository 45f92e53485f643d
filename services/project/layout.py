"""Where everything lives in a project folder (`hybridllm init` writes it; serve and eval read it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

CONFIG_NAME = "config.yaml"
ROUTER_LABELS = ("knowledge", "direct", "out_of_scope")


@dataclass(frozen=True, slots=True)
class ProjectLayout:
    root: Path

    @classmethod
    def of_config(cls, config_file: Path) -> ProjectLayout:
        return cls(config_file.resolve().parent)

    @property
    def config(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def readme(self) -> Path:
        return self.root / "README.md"

    @property
    def templates(self) -> Path:
        return self.root / "templates"

    @property
    def router_source(self) -> Path:
        """The editable router examples, one `<label>.txt` per label, and `compose/` frames."""
        return self.root / "router" / "source"

    @property
    def router_data(self) -> Path:
        """train/val/test.jsonl and manifest.json, built from the corpus and router_source."""
        return self.root / "router"

    @property
    def data_dir(self) -> Path:
        return self.root / "var"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    @property
    def router_model(self) -> Path:
        return self.data_dir / "router"


def is_project_config(config_file: Path) -> bool:
    """A config file belongs to a project folder when it has a `project` section."""
    raw = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    return isinstance(raw, dict) and "project" in raw
