"""The artifact cache: a folder is built once, moved in whole, and refused when its files no longer match."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.core.artifact_cache import (
    DAMAGED_MARK,
    MANIFEST_NAME,
    DamagedArtifact,
    cached_build,
    verify_manifest,
)
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
        verify_manifest(target)


@pytest.mark.unit
def test_a_damaged_copy_is_moved_aside_and_built_again(tmp_path: Path) -> None:
    target = tmp_path / "thing"
    builds: list[bytes] = []

    def build(tmp: Path) -> None:
        builds.append(b"w")
        (tmp / "weights.bin").write_bytes(b"x" * 100)

    cached_build(target, build, checksums=True)
    (target / "weights.bin").write_bytes(b"y" * 100)  # same size, other bytes
    verify_manifest(target)  # sizes alone cannot tell
    with pytest.raises(DamagedArtifact, match="sha256"):
        verify_manifest(target, checksums=True)
    assert cached_build(target, build, checksums=True) == target
    assert len(builds) == 2 and (target / "weights.bin").read_bytes() == b"x" * 100
    aside = [p for p in tmp_path.iterdir() if p.name.startswith(f"thing{DAMAGED_MARK}")]
    assert len(aside) == 1 and (aside[0] / "weights.bin").read_bytes() == b"y" * 100


@pytest.mark.unit
def test_a_damaged_copy_that_cannot_be_rebuilt_names_the_extra(tmp_path: Path) -> None:
    target = tmp_path / "thing"
    cached_build(target, lambda tmp: (tmp / "weights.bin").write_bytes(b"x" * 100))
    (target / "weights.bin").write_bytes(b"x")

    def build_without_torch(tmp: Path) -> None:
        raise ImportError("No module named 'torch'")

    with pytest.raises(ConfigError, match=r"hybridllm\[convert\]") as raised:
        cached_build(target, build_without_torch)
    assert "truncated" in raised.value.message and "moved aside" in raised.value.message


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
def test_a_folder_without_a_manifest_is_kept_aside_not_trusted(tmp_path: Path) -> None:
    target = tmp_path / "thing"
    target.mkdir()
    (target / "weights.bin").write_bytes(b"x")
    with pytest.raises(DamagedArtifact, match="no manifest"):
        verify_manifest(target)
    cached_build(target, lambda tmp: (tmp / "weights.bin").write_bytes(b"built"))
    assert (target / "weights.bin").read_bytes() == b"built"
    (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith(f"thing{DAMAGED_MARK}")]
    assert (aside / "weights.bin").read_bytes() == b"x" and not (aside / MANIFEST_NAME).exists()
