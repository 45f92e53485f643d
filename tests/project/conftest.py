"""A tiny corpus written by the test, and the training plugin's router hook made visible."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.project import router_hook
from training.project_router import PROJECT_ROUTER

TINY_CORPUS = {
    "travel.md": "# Travel policy\n\n## Booking flights\n\nBook flights through the travel desk at least "
    "two weeks ahead.\n\n## Per diem\n\nThe per diem abroad is 60 euros a day.\n",
    "equipment.md": "# Equipment\n\n## Laptop refresh\n\nLaptops are replaced every three years.\n\n"
    "**Can I keep my old laptop?**\n\nYes, after the data on it is wiped by IT.\n",
    "onboarding.md": "# Onboarding\n\n## First week\n\nNew hires meet their buddy on day one.\n",
    "holidays.md": "# Public holidays\n\n## Office closures\n\nThe office closes between Christmas and "
    "New Year.\n",
    "security/badges.html": "<html><head><title>Badges</title></head><body><h1>Building badges</h1>"
    "<p>Report a lost badge to reception within one day.</p></body></html>",
}


def write_corpus(root: Path) -> Path:
    for name, text in TINY_CORPUS.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "docs")


@pytest.fixture
def with_router_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hook the training extra registers (an entry point the venv's metadata may not list yet)."""
    monkeypatch.setattr(router_hook, "load_project_router", lambda: PROJECT_ROUTER)
