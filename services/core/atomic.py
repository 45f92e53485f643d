"""Atomic writes: a file or a folder is either the old one or the complete new one, even across a crash.

Both build beside the target (same folder, so the final rename never crosses a file system), fsync what
they wrote, rename it into place and fsync the parent, so the rename itself survives a power cut.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO, Any, Literal, overload

FILE_MODE = 0o644  # mkstemp makes private files; results are read by other users and processes
DIR_MODE = 0o755  # mkdtemp makes private folders; likewise
STAGING_PREFIX = ".tmp-"  # staged_dir's build folder: `.tmp-<target name>-<random>`
ASIDE_PREFIX = ".old-"  # where staged_dir(replace=True) parks the folder it replaces


class StagedTargetExists(FileExistsError):
    """`staged_dir(target, replace=False)` found `target` already there (another process finished first)."""


def fsync_path(path: Path) -> None:
    """fsync one file or folder (a folder's fsync makes the names in it durable)."""
    descriptor = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_tree(root: Path) -> None:
    """fsync every regular file and folder under `root` and `root` itself, children before their folder."""
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            path = Path(folder, name)
            if stat.S_ISREG(path.lstat().st_mode):  # not links (their target is not ours), never a FIFO
                fsync_path(path)
        fsync_path(Path(folder))


@overload
def atomic_writer(path: Path, mode: Literal["w"] = "w") -> AbstractContextManager[IO[str]]: ...
@overload
def atomic_writer(path: Path, mode: Literal["wb"]) -> AbstractContextManager[IO[bytes]]: ...
def atomic_writer(path: Path, mode: Literal["w", "wb"] = "w") -> AbstractContextManager[IO[Any]]:
    """A handle on a temporary file beside `path` that replaces `path` when the block ends without error.

    For content written piece by piece (JSONL rows, concatenated parts); `atomic_write` for one value.
    Text is UTF-8 with "\\n" line ends. On an exception the temporary file is removed and `path` is left
    as it was.
    """
    return _atomic_writer(path, mode)


@contextmanager
def _atomic_writer(path: Path, mode: Literal["w", "wb"]) -> Iterator[IO[Any]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    temporary = Path(temporary_name)
    try:
        handle: IO[Any] = (
            os.fdopen(descriptor, "w", encoding="utf-8", newline="\n")
            if mode == "w"
            else os.fdopen(descriptor, "wb")
        )
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        temporary.chmod(FILE_MODE)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def atomic_write(path: Path, data: str | bytes) -> None:
    """Replace `path` with `data` (str as UTF-8) in one step: readers see the old content or the new."""
    if isinstance(data, str):
        with atomic_writer(path, "w") as text_handle:
            text_handle.write(data)
    else:
        with atomic_writer(path, "wb") as binary_handle:
            binary_handle.write(data)


@contextmanager
def staged_dir(target: Path, *, replace: bool = False) -> Iterator[Path]:
    """A temporary sibling of `target` to build into; it becomes `target` when the block ends without error.

    On an exception the sibling is removed and `target` is left as it was. When `target` already exists:
    `replace=True` swaps it out (moved aside, then removed: a short window in which `target` is missing,
    never half-written, since a folder cannot be renamed onto a non-empty one); `replace=False` keeps it
    and raises StagedTargetExists, for caches where a concurrent builder may have finished first.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{target.name}-", dir=target.parent))
    try:
        staging.chmod(DIR_MODE)
        yield staging
        fsync_tree(staging)
        if replace and target.exists():
            _swap_in(staging, target)
        else:
            _move_in(staging, target)
        fsync_path(target.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_in(staging: Path, target: Path) -> None:
    try:
        os.replace(staging, target)  # also replaces an empty folder
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise StagedTargetExists(errno.EEXIST, "already exists", str(target)) from exc
        raise


def _swap_in(staging: Path, target: Path) -> None:
    aside = Path(tempfile.mkdtemp(prefix=f"{ASIDE_PREFIX}{target.name}-", dir=target.parent))
    try:
        os.replace(target, aside / target.name)
        try:
            os.replace(staging, target)
        except BaseException:
            os.replace(aside / target.name, target)  # put the old folder back where it served from
            raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)
