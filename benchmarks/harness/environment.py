"""What a benchmark result depends on besides the code: package versions, the commit, the CPU and its load.

Greedy ONNX answers and every latency move with onnxruntime, torch or transformers releases and with the
CPU's vector units, so each results JSON carries `environment()` and each report opens with
`environment_markdown()` of it: a figure names the stack it was measured on.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.core.cpus import available_cpu_count

# The installed distributions that shape a result (names as pip knows them); the project itself is reported
# separately, with its commit.
RESULT_PACKAGES: tuple[str, ...] = (
    "onnxruntime", "onnxruntime-genai", "torch", "transformers", "faiss-cpu", "bm25s",
    "sentence-transformers", "peft", "numpy",
)  # fmt: skip
PROJECT = "hybridllm"
CPUINFO = Path("/proc/cpuinfo")
# The vector and matrix extensions that ONNX Runtime, FAISS and torch kernels dispatch on (x86 and Arm).
_FLAG_PREFIXES = ("avx512", "amx")
_FLAGS = frozenset({"avx2", "fma", "avx_vnni", "asimd", "sve", "sve2"})
_REPO_ROOT = Path(__file__).resolve().parents[2]


def package_versions(names: Sequence[str] = RESULT_PACKAGES) -> dict[str, str | None]:
    """{name: installed version}, None for a package that is not installed."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(repo: Path = _REPO_ROOT) -> dict[str, Any] | None:
    """{"commit": sha, "dirty": uncommitted changes to tracked files}; None outside a git checkout."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo, capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": sha, "dirty": bool(status.strip())}


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """The CPU model and its result-relevant flags from /proc/cpuinfo text (x86 `flags`, Arm `Features`)."""
    model: str | None = None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and model is None:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = {f for f in value.split() if f in _FLAGS or f.startswith(_FLAG_PREFIXES)}
    return {"model": model, "flags": sorted(flags)}


def cpu_description(cpuinfo: Path = CPUINFO) -> dict[str, Any]:
    """Model, flags, the cores this process may use (affinity and cgroup quota) and the host's cores."""
    try:
        described = parse_cpuinfo(cpuinfo.read_text(encoding="utf-8", errors="replace"))
    except OSError:  # not Linux
        described = {"model": None, "flags": []}
    described["model"] = described["model"] or platform.processor() or platform.machine()
    return {**described, "usable_cores": available_cpu_count(), "host_cores": os.cpu_count()}


def _load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def environment() -> dict[str, Any]:
    """The record every results JSON carries under "environment"."""
    project_version = package_versions([PROJECT])[PROJECT]
    return {
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "project": {"name": PROJECT, "version": project_version, "git": git_commit()},
        "packages": package_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_description(),
        "load_average": _load_average(),
    }


def environment_markdown(env: Mapping[str, Any] | None) -> str:
    """The report header line for an environment record: versions, commit, CPU, cores and load."""
    if not env:
        return "Environment: not recorded with these results."
    project = env["project"]
    git = project.get("git")
    revision = f" at {git['commit'][:10]}{' with uncommitted changes' if git['dirty'] else ''}" if git else ""
    packages = ", ".join(
        f"{name} {version}" if version else f"{name} absent" for name, version in env["packages"].items()
    )
    cpu = env["cpu"]
    flags = " ".join(cpu["flags"]) or "no vector flags found"
    load = env.get("load_average")
    load_text = (
        f"load average {' / '.join(f'{v:.2f}' for v in load)} (1/5/15 min)" if load else "load unknown"
    )
    return (
        f"Environment ({env['recorded_at']}): {project['name']} {project['version']}{revision}; {packages}; "
        f"Python {env['python']}. CPU: {cpu['model']} ({flags}), {cpu['usable_cores']} usable of "
        f"{cpu['host_cores']} cores, {load_text}."
    )


__all__ = [
    "RESULT_PACKAGES",
    "cpu_description",
    "environment",
    "environment_markdown",
    "git_commit",
    "package_versions",
    "parse_cpuinfo",
]
