"""The cores a process may use: affinity capped by the cgroup quota; the generator's default threads."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.core import cpus
from services.core.settings import load_settings

pytestmark = pytest.mark.unit


def test_cgroup_v2_quota_is_read(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")
    assert cpus.cgroup_cpu_limit(cpu_max, tmp_path / "none", tmp_path / "none") == 1.5
    cpu_max.write_text("max 100000\n")
    assert cpus.cgroup_cpu_limit(cpu_max, tmp_path / "none", tmp_path / "none") is None


def test_cgroup_v1_quota_is_read_when_v2_is_absent(tmp_path: Path) -> None:
    (tmp_path / "quota").write_text("200000")
    (tmp_path / "period").write_text("100000")
    assert cpus.cgroup_cpu_limit(tmp_path / "none", tmp_path / "quota", tmp_path / "period") == 2.0
    (tmp_path / "quota").write_text("-1")
    assert cpus.cgroup_cpu_limit(tmp_path / "none", tmp_path / "quota", tmp_path / "period") is None


def test_the_quota_caps_the_affinity_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpus, "_affinity_count", lambda: 64)
    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda: 1.5)
    assert cpus.available_cpu_count() == 2
    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda: None)
    assert cpus.available_cpu_count() == 64


def test_the_generator_default_is_the_usable_cores_never_the_library_default() -> None:
    # threads 0 (the library's default) halved decode speed on 2 cores: the default must be a real count.
    threads = load_settings().generator.threads
    assert threads == cpus.available_cpu_count() and threads > 0
