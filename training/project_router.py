"""A project's router data and training: the `hybridllm.project` hook (services/project/router_hook.py).

The data comes from the project's corpus (knowledge questions from its headings and FAQ entries, the
organisation's name scrubbed to "the company") and its editable `router/source/`, which starts with the
packaged hand-written examples (no example names a company) and an empty knowledge.txt for the user's own.
The packaged knowledge examples, generic workplace questions, go to knowledge.workplace.txt: headings alone
read unlike the questions users ask, so a router trained on them refuses or misroutes real questions.
The example handbook's generated questions never reach another organisation's router.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from services.core.atomic import atomic_write
from services.core.errors import ConfigError
from services.core.settings import ProjectSettings
from services.project.fingerprint import fingerprint
from services.project.layout import ProjectLayout
from services.rag.loaders import load_corpus
from training.build_router_data import DEFAULT_SOURCE, ORIGIN_CORPUS, build_dataset, read_lines

logger = logging.getLogger("training.project_router")

# Where each label's packaged hand-written examples go in a project's router/source/.
PACKAGED_EXAMPLES = {
    "direct": "direct.txt",
    "out_of_scope": "out_of_scope.txt",
    "knowledge": "knowledge.workplace.txt",
}
KNOWLEDGE_HEADER = """\
# Your own `knowledge` examples: questions whose answer is in your documents, one per line
# ('#' starts a comment). Questions generated from the documents' headings and FAQ entries are added
# when the router data is built; a line here wins over a generated duplicate of it.
# knowledge.workplace.txt beside this file holds packaged generic workplace questions (leave, expenses,
# IT, ...): edit it, or delete it if your documents are not about a workplace.
"""
# The key in the router data manifest and in the trained router's metrics.json that records its inputs.
INPUTS_KEY = "project_inputs_sha256"
DATA_KEY = "project_data_sha256"


class TrainingProjectRouter:
    """Implements services.project.router_hook.ProjectRouter with build_router_data and train_router."""

    def write_sources(self, layout: ProjectLayout) -> None:
        source = layout.router_source
        (source / "compose").mkdir(parents=True, exist_ok=True)
        for label, name in PACKAGED_EXAMPLES.items():
            shutil.copyfile(DEFAULT_SOURCE / f"{label}.txt", source / name)
            for frame in sorted((DEFAULT_SOURCE / "compose").glob(f"{label}.*.txt")):
                shutil.copyfile(frame, source / "compose" / frame.name)
        knowledge = source / "knowledge.txt"
        if not knowledge.exists():
            atomic_write(knowledge, KNOWLEDGE_HEADER)

    def build_data(self, layout: ProjectLayout, project: ProjectSettings) -> bool:
        inputs = fingerprint([layout.router_source, project.corpus], {"org_name": project.org_name})
        manifest_path = layout.router_data / "manifest.json"
        if _recorded(manifest_path, INPUTS_KEY) == inputs and (layout.router_data / "train.jsonl").is_file():
            return False
        logger.info("building router data from %s and %s", project.corpus, layout.router_source)
        with tempfile.TemporaryDirectory(prefix="hybridllm-router-corpus-") as mirror:
            manifest = build_dataset(
                layout.router_source,
                layout.router_data,
                corpus=markdown_mirror(project.corpus, Path(mirror)),
                company=[project.org_name],
            )
        if not _corpus_questions(manifest) and not read_lines(layout.router_source / "knowledge.txt"):
            raise ConfigError(
                f"no knowledge questions: the documents in {project.corpus} have no headings; "
                f"add your own to {layout.router_source / 'knowledge.txt'}"
            )
        recorded = {**manifest, "corpus": str(project.corpus), INPUTS_KEY: inputs}
        atomic_write(manifest_path, json.dumps(recorded, indent=2) + "\n")
        return True

    def train(
        self, layout: ProjectLayout, project: ProjectSettings, model_dir: Path, *, progress: bool
    ) -> bool:
        from training.cli import training_progress
        from training.train_router import train_router

        train, val = layout.router_data / "train.jsonl", layout.router_data / "val.jsonl"
        recipe = {"recipe": project.router_recipe, "max_steps": project.router_max_steps}
        wanted = fingerprint([train, val], recipe)
        metrics_path = model_dir / "metrics.json"
        if (model_dir / "labels.json").is_file():
            recorded = _recorded(metrics_path, DATA_KEY)
            if recorded == wanted:
                return False
            if recorded is None:  # never overwrite a router this project did not train (var/router, ...)
                raise ConfigError(
                    f"router.model_dir {model_dir} holds a router not trained for this project; "
                    "point router.model_dir at a folder of its own (default: the project's var/router), "
                    "or delete it"
                )
        bars = training_progress()  # off a terminal, the training loggers' lines instead of a bar
        logger.info("training the router into %s (a few minutes on 2 cores; progress below)", model_dir)
        train_router(
            train,
            model_dir,
            eval_file=val,
            config=project.router_recipe,
            max_steps=project.router_max_steps,
            progress=progress and bars,
        )
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        atomic_write(metrics_path, json.dumps({**metrics, DATA_KEY: wanted}, indent=2) + "\n")
        return True


def markdown_mirror(corpus: Path, mirror: Path) -> Path:
    """Each readable document of `corpus` as markdown under `mirror` (HTML headings become `#` lines), so
    questions come from the headings of every supported format, not only markdown files."""
    for document in load_corpus([corpus]).documents:
        path = mirror / f"{document.source}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        title = f"# {document.title}\n\n" if document.title else ""
        path.write_text(title + document.text, encoding="utf-8")
    return mirror


def _corpus_questions(manifest: dict[str, Any]) -> int:
    """How many knowledge questions the build generated from the documents."""
    return int(manifest["by_origin"][ORIGIN_CORPUS]["knowledge"])


def _recorded(path: Path, key: str) -> Any:
    """`key` of the JSON object in `path`, or None when there is no such file or key."""
    try:
        return json.loads(path.read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError, AttributeError):
        return None


PROJECT_ROUTER = TrainingProjectRouter()
