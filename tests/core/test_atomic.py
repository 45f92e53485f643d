"""atomic_write, atomic_writer, staged_dir: the old file or folder, or the complete new one, nothing else."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from services.core import atomic
from services.core.atomic import StagedTargetExists, atomic_write, atomic_writer, staged_dir

pytestmark = pytest.mark.unit


class Crash(Exception):
    """Stands for the process dying half way: raised where a real crash would stop the write."""


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_atomic_write_writes_text_and_bytes_readable_by_others(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "notes.txt"
    atomic_write(path, "héllo\nworld\n")
    assert path.read_bytes() == "héllo\nworld\n".encode()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    atomic_write(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert _names(path.parent) == ["notes.txt"]


def test_a_crash_mid_write_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    atomic_write(path, "old\n")
    with pytest.raises(Crash), atomic_writer(path) as handle:
        handle.write("new, half")
        handle.flush()
        raise Crash
    assert path.read_text(encoding="utf-8") == "old\n"
    assert _names(tmp_path) == ["rows.jsonl"]


def test_a_failed_rename_leaves_the_old_file_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "CURRENT"
    atomic_write(path, "v1\n")

    def refuse(source: object, target: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="No space"):
        atomic_write(path, "v2\n")
    assert path.read_text(encoding="utf-8") == "v1\n"
    assert _names(tmp_path) == ["CURRENT"]


def test_staged_dir_moves_a_complete_folder_in(tmp_path: Path) -> None:
    target = tmp_path / "models" / "thing"
    with staged_dir(target) as staging:
        assert staging.parent == target.parent and staging != target
        assert not target.exists()  # nothing is visible until the block ends
        (staging / "nested").mkdir()
        (staging / "nested" / "weights.bin").write_bytes(b"w" * 10)
    assert (target / "nested" / "weights.bin").read_bytes() == b"w" * 10
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert _names(target.parent) == ["thing"]


def test_a_crash_mid_build_leaves_no_folder_and_no_staging(tmp_path: Path) -> None:
    target = tmp_path / "thing"
    with pytest.raises(Crash), staged_dir(target) as staging:
        (staging / "half.bin").write_bytes(b"half")
        raise Crash
    assert _names(tmp_path) == []


def test_an_existing_folder_is_kept_without_replace(tmp_path: Path) -> None:
    target = tmp_path / "thing"
    target.mkdir()
    (target / "theirs.bin").write_bytes(b"theirs")
    with pytest.raises(StagedTargetExists), staged_dir(target) as staging:
        (staging / "mine.bin").write_bytes(b"mine")
    assert _names(target) == ["theirs.bin"]
    assert _names(tmp_path) == ["thing"]


def test_replace_swaps_an_existing_folder_and_removes_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "adapter"
    with staged_dir(target) as staging:
        (staging / "v1.bin").write_bytes(b"1")
    with staged_dir(target, replace=True) as staging:
        (staging / "v2.bin").write_bytes(b"2")
    assert _names(target) == ["v2.bin"]
    assert _names(tmp_path) == ["adapter"]  # no staging or moved-aside folder left


def test_a_crash_mid_build_with_replace_leaves_the_old_folder_intact(tmp_path: Path) -> None:
    target = tmp_path / "adapter"
    with staged_dir(target) as staging:
        (staging / "v1.bin").write_bytes(b"1")
    with pytest.raises(Crash), staged_dir(target, replace=True) as staging:
        (staging / "v2.bin").write_bytes(b"2")
        raise Crash
    assert _names(target) == ["v1.bin"]
    assert _names(tmp_path) == ["adapter"]


def test_a_failed_swap_puts_the_old_folder_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "adapter"
    with staged_dir(target) as staging:
        (staging / "v1.bin").write_bytes(b"1")
    real_replace = os.replace

    def refuse_the_new_folder(source: str | Path, destination: str | Path) -> None:
        if Path(source).name.startswith(atomic.STAGING_PREFIX):
            raise OSError(5, "I/O error")
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", refuse_the_new_folder)
    with pytest.raises(OSError, match="I/O error"), staged_dir(target, replace=True) as staging:
        (staging / "v2.bin").write_bytes(b"2")
    assert _names(target) == ["v1.bin"]
    assert _names(tmp_path) == ["adapter"]


def test_a_staged_folder_may_hold_links_that_point_nowhere(tmp_path: Path) -> None:
    target = tmp_path / "snapshot"
    with staged_dir(target) as staging:
        (staging / "weights.bin").write_bytes(b"w")
        (staging / "dangling").symlink_to(tmp_path / "elsewhere")
    assert (target / "dangling").is_symlink() and (target / "weights.bin").read_bytes() == b"w"
