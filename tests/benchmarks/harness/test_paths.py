"""Paths as committed reports print them: never this machine's layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.harness.paths import REPO_ROOT, repo_path

pytestmark = pytest.mark.unit


def test_paths_in_and_beside_the_repository_are_relative_to_it() -> None:
    assert repo_path(REPO_ROOT / "var" / "router") == "var/router"
    assert repo_path(REPO_ROOT.parent / "shared" / "datasets") == "../shared/datasets"


def test_a_path_elsewhere_keeps_only_its_last_part(tmp_path: Path) -> None:
    if tmp_path.resolve().is_relative_to(REPO_ROOT.parent):
        pytest.skip("the temporary folder sits beside the repository here")
    assert repo_path(tmp_path / "index") == "<outside the repository>/index"
