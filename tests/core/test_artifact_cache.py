"""The artifact cache: a folder is built once, moved in whole, and refused when its files no longer match."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.core.artifact_cache import MANIFEST_NAME, cached_build, verify_manifest
from services.core.errors import ConfigError


@pytest.mark.unit
def test_a_failed_build_leaves_no_half_written_folder(tmp_path: Path) -> None:
    target = tmp_path / "models" / "thing"

    def failing_build(tmp: Path) -> None:
        (tmp / "model.onnx").write_bytes(b"half")
        raise ConfigError("builder crashed")

    with pytest.raises(ConfigError, match="builder crashed"):
        cached_build(target, failing_build)
    assert list((tmp_path / "models").iterdir()) == []


@pytest.mark.unit
def test_cached_build_runs_once_and_detects_damage(tmp_path: Path) -> None:
    target = tmp_path / "thing"
    builds: list[Path] = []

    def build(tmp: Path) -> None:
        builds.append(tmp)
        (tmp / "weights.bin").write_bytes(b"x" * 100)

    cached_build(target, build)
    cached_build(target, build)
    assert len(builds) == 1
    (target / "weights.bin").write_bytes(b"x" * 10)
    with pytest.raises(ConfigError, match="truncated"):
        verify_manifest(target)
    (target / "weights.bin").unlink()
    with pytest.raises(ConfigError, match="missing weights.bin"):
        cached_build(target, build)


@pytest.mark.unit
def test_a_copy_finished_concurrently_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "thing"

    def theirs(tmp: Path) -> None:
        (tmp / "weights.bin").write_bytes(b"theirs")

    def mine(tmp: Path) -> None:
        (tmp / "weights.bin").write_bytes(b"mine")
        cached_build(target, theirs)  # another process finishes first, while this one is still building

    assert cached_build(target, mine, builder="mine") == target
    assert (target / "weights.bin").read_bytes() == b"theirs"
    assert "builder" not in verify_manifest(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thing"]


@pytest.mark.unit
def test_a_folder_without_a_manifest_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "thing"
    target.mkdir()
    (target / "weights.bin").write_bytes(b"x")
    with pytest.raises(ConfigError, match="no manifest"):
        cached_build(target, lambda tmp: None)
    assert not (target / MANIFEST_NAME).exists()
