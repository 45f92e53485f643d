"""The environment record every results JSON carries, and its report header line."""

import importlib.metadata
import re

import pytest

from benchmarks.harness.environment import (
    RESULT_PACKAGES,
    environment,
    environment_markdown,
    git_commit,
    package_versions,
    parse_cpuinfo,
)
from services.core.cpus import available_cpu_count

pytestmark = pytest.mark.unit

X86_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: fpu sse4_2 avx avx2 fma f16c avx512f avx512_vnni amx_tile amx_int8 avx_vnni
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: fpu sse4_2 avx avx2 fma
"""
ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes sve sve2 bf16
CPU implementer\t: 0x41
"""


def test_record_names_the_installed_versions_commit_cpu_and_load():
    env = environment()
    assert set(env) == {"recorded_at", "project", "packages", "python", "platform", "cpu", "load_average"}
    assert list(env["packages"]) == list(RESULT_PACKAGES)
    for name, version in env["packages"].items():
        try:
            assert version == importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            assert version is None
    assert env["packages"]["onnxruntime"] is not None  # a core dependency: installed wherever tests run
    assert env["project"]["version"] == importlib.metadata.version("hybridllm")
    assert re.fullmatch(r"[0-9a-f]{40}", env["project"]["git"]["commit"])
    assert isinstance(env["project"]["git"]["dirty"], bool)
    assert env["cpu"]["usable_cores"] == available_cpu_count()
    assert env["cpu"]["model"]
    assert len(env["load_average"]) == 3


def test_a_missing_package_is_reported_absent(monkeypatch):
    real_version = importlib.metadata.version

    def version(name: str) -> str:
        if name == "peft":
            raise importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    assert package_versions(["peft", "numpy"]) == {"peft": None, "numpy": real_version("numpy")}
    env = environment()
    assert env["packages"]["peft"] is None
    assert "peft absent" in environment_markdown(env)


def test_cpu_flags_parser_keeps_the_vector_units_of_the_first_processor():
    x86 = parse_cpuinfo(X86_CPUINFO)
    assert x86 == {
        "model": "Intel(R) Xeon(R) Platinum 8488C",
        "flags": ["amx_int8", "amx_tile", "avx2", "avx512_vnni", "avx512f", "avx_vnni", "fma"],
    }
    assert parse_cpuinfo(ARM_CPUINFO) == {"model": None, "flags": ["asimd", "sve", "sve2"]}
    assert parse_cpuinfo("") == {"model": None, "flags": []}


def test_no_commit_outside_a_git_checkout(tmp_path):
    assert git_commit(tmp_path) is None


def test_header_line_names_versions_commit_cpu_cores_and_load():
    env = {
        "recorded_at": "2026-12-03T21:00:00+00:00",
        "project": {"name": "hybridllm", "version": "0.1.0", "git": {"commit": "a" * 40, "dirty": True}},
        "packages": {"onnxruntime": "1.32.0", "peft": None},
        "python": "3.11.7",
        "platform": "Linux",
        "cpu": {"model": "Some CPU", "flags": ["avx2", "fma"], "usable_cores": 2, "host_cores": 8},
        "load_average": [1.5, 1.0, 0.5],
    }
    line = environment_markdown(env)
    assert "hybridllm 0.1.0 at aaaaaaaaaa with uncommitted changes" in line
    assert "onnxruntime 1.32.0, peft absent" in line
    assert "Some CPU (avx2 fma), 2 usable of 8 cores" in line
    assert "load average 1.50 / 1.00 / 0.50" in line
    assert environment_markdown(None) == "Environment: not recorded with these results."
