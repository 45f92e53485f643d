"""Before a project is served: train its router and ingest its corpus when missing or out of date.

Each step compares a fingerprint of its inputs with the one its output recorded (the router's
metrics.json, the index version's manifest.json), so a second run reuses everything.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from services.core.errors import ConfigError, IndexCorrupted
from services.core.settings import Settings
from services.project import router_hook
from services.project.fingerprint import fingerprint
from services.project.layout import ProjectLayout
from services.rag.index_store import VERSIONS_DIR, read_current, read_manifest

logger = logging.getLogger(__name__)

# The key of the index manifest that records which corpus and indexing settings built it.
INDEX_FINGERPRINT_KEY = "project_corpus_sha256"
ROUTER_MODEL_FILE = "labels.json"
CONVERT_HINT = "pip install 'hybridllm[convert]'"


def index_fingerprint(settings: Settings) -> str:
    """The corpus files' contents and the settings that change what ingesting them produces."""
    rag = settings.rag
    indexing = {"embedder": rag.embedder, "chunking": rag.chunking.model_dump(), "store": rag.vector_store}
    return fingerprint([settings.project.corpus], indexing)


def indexed_fingerprint(index_dir: Path) -> str | None:
    """What the served index version recorded, or None when there is none."""
    version = read_current(index_dir)
    if version is None:
        return None
    try:
        value = read_manifest(index_dir / VERSIONS_DIR / version).get(INDEX_FINGERPRINT_KEY)
    except IndexCorrupted:
        return None  # a broken version is rebuilt, not served
    return str(value) if value is not None else None


def prepare_index(settings: Settings, *, progress: bool) -> str:
    """Ingest the corpus into rag.index_dir unless the current version was built from the same inputs."""
    wanted = index_fingerprint(settings)
    if indexed_fingerprint(Path(settings.rag.index_dir)) == wanted:
        return "reused"
    logger.info("ingesting %s into %s", settings.project.corpus, settings.rag.index_dir)
    try:
        from services.rag.ingest import ingest

        extra = {INDEX_FINGERPRINT_KEY: wanted}
        ingest([settings.project.corpus], settings.rag, progress=progress, manifest_extra=extra)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"ingesting the corpus needs {exc.name!r}: {CONVERT_HINT}") from exc
    return "ingested"


def prepare_router(layout: ProjectLayout, settings: Settings, *, progress: bool) -> str:
    """Rebuild the router data and retrain when their inputs changed (needs the training extra)."""
    model_dir = Path(settings.router.model_dir)
    hook = router_hook.load_project_router()
    if hook is None:
        if (model_dir / ROUTER_MODEL_FILE).is_file():
            logger.warning(
                "router not checked for changes: training is not installed (%s)", router_hook.TRAIN_HINT
            )
            return "reused"
        raise ConfigError(
            f"the project's router at {model_dir} is not trained: {router_hook.TRAIN_HINT}, then serve again"
        )
    rebuilt = hook.build_data(layout, settings.project)
    trained = hook.train(layout, settings.project, model_dir, progress=progress)
    return "trained" if trained else ("data rebuilt" if rebuilt else "reused")


def prepare_project(layout: ProjectLayout, settings: Settings, *, progress: bool) -> dict[str, Any]:
    """Router first (the faster to fail), then the index; what each step did."""
    router = prepare_router(layout, settings, progress=progress)
    index = prepare_index(settings, progress=progress)
    return {"project": str(layout.root), "router": router, "index": index}
