"""Is a folder usable as a project's corpus? One clear reason when it is not."""

from __future__ import annotations

from pathlib import Path

from services.core.errors import ConfigError
from services.rag.loaders import SUFFIX_KINDS, UnreadableFile, candidate_files, read_document

SUPPORTED = "markdown, HTML, PDF or text"


def check_corpus(corpus: Path) -> list[Path]:
    """The supported files of `corpus`, each read once; ConfigError naming the problem otherwise."""
    if not corpus.is_dir():
        raise ConfigError(f"corpus folder not found: {corpus}")
    files = candidate_files(corpus)
    if not files:
        raise ConfigError(f"corpus folder {corpus} is empty")
    supported = [path for path in files if path.suffix.lower() in SUFFIX_KINDS]
    if not supported:
        raise ConfigError(f"corpus folder {corpus} has no {SUPPORTED} files ({len(files)} other files)")
    unreadable: list[str] = []
    for path in supported:
        relative = path.relative_to(corpus).as_posix()
        try:
            read_document(path, relative)
        except (UnreadableFile, OSError):
            unreadable.append(relative)
    if unreadable:
        shown = ", ".join(unreadable[:5]) + (
            f" and {len(unreadable) - 5} more" if len(unreadable) > 5 else ""
        )
        raise ConfigError(f"unreadable files in corpus {corpus}: {shown}")
    return supported
