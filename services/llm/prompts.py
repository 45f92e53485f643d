"""Jinja2 prompt templates with a name and a version, both reported in metrics and responses.

A template file declares `name: X  version: N` in its leading comment and defines blocks:
`system` and optionally `user` (chat templates) or `answer` (fixed replies sent without generation).
Every template, and the `system_prompt` passed to one, may use the organisation's variables
(`org_name`, `org_description`: the project settings), so no template names an organisation itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from services.core.errors import ConfigError
from services.core.settings import ProjectSettings

PACKAGED_TEMPLATES = Path(__file__).parent / "templates"
_HEADER = re.compile(r"name:\s*(?P<name>[\w-]+)\s+version:\s*(?P<version>[\w.-]+)")


@dataclass(frozen=True, slots=True)
class TemplateRef:
    name: str
    version: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}


class PromptLibrary:
    REQUIRED = ("direct", "rag", "tuned", "refusal", "no_answer")

    def __init__(self, templates_dir: Path | None = None, org: Mapping[str, str] | None = None) -> None:
        """`org`: the organisation's template variables; default the project settings' defaults."""
        self._dir = templates_dir or PACKAGED_TEMPLATES
        if not self._dir.is_dir():
            raise ConfigError(f"prompts.templates_dir not found: {self._dir}")
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(self._dir)),
            undefined=jinja2.StrictUndefined,
            autoescape=False,  # prompts are plain text, not HTML
            keep_trailing_newline=False,
        )
        self._env.globals.update(org if org is not None else ProjectSettings().template_variables())
        self._refs: dict[str, TemplateRef] = {}
        self._rendered_texts: dict[str, str] = {}
        for name in self.REQUIRED:
            path = self._dir / f"{name}.j2"
            if not path.is_file():
                raise ConfigError(f"prompt template missing: {path}")
            match = _HEADER.search(path.read_text(encoding="utf-8"))
            if match is None or match["name"] != name:
                raise ConfigError(f"prompt template {path} must declare 'name: {name}  version: N'")
            self._refs[name] = TemplateRef(name=name, version=match["version"])

    def ref(self, name: str) -> TemplateRef:
        return self._refs[name]

    def render_block(self, name: str, block: str, **variables: Any) -> str:
        template = self._env.get_template(f"{name}.j2")
        render = template.blocks.get(block)
        if render is None:
            raise ConfigError(f"prompt template {name!r} has no block {block!r}")
        if "system_prompt" in variables:  # a setting that may name the organisation through its variables
            variables["system_prompt"] = self.render_text(str(variables["system_prompt"]))
        try:
            return "".join(render(template.new_context(variables))).strip()
        except jinja2.UndefinedError as exc:
            raise ConfigError(f"prompt template {name!r}: {exc}") from exc

    def render_text(self, text: str) -> str:
        """A template string (a setting such as prompts.system_prompt) with the organisation's variables.
        Rendered once per text: the result depends only on the text and this library's fixed variables,
        and the system prompt is rendered on every request."""
        rendered = self._rendered_texts.get(text)
        if rendered is None:
            try:
                rendered = self._env.from_string(text).render()
            except jinja2.TemplateError as exc:
                raise ConfigError(f"template text {text[:60]!r}: {exc}") from exc
            self._rendered_texts[text] = rendered
        return rendered

    def has_block(self, name: str, block: str) -> bool:
        return block in self._env.get_template(f"{name}.j2").blocks
