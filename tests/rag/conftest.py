"""Shared fixtures for the RAG tests: a deterministic fake embedder (unit tests) and the real MiniLM."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from services.core.settings import RagSettings
from services.rag.chunking import whitespace_token_spans
from services.rag.embedder import SentenceTransformerEmbedder

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"

_WORD = re.compile(r"\w+")


class HashingEmbedder:
    """Bag of hashed words: texts sharing words get similar unit vectors. Counts what it embeds."""

    def __init__(self, dimensions: int = 128, model_id: str = "fake-hashing-128") -> None:
        self._dimensions = dimensions
        self._model_id = model_id
        self.embedded_texts = 0

    @property
    def dimensions(self) -> int:
        return self._dimensions

    @property
    def model_id(self) -> str:
        return self._model_id

    def warm_up(self) -> None:
        return None

    @property
    def max_seq_length(self) -> int:
        return 512

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return whitespace_token_spans(text)

    def _vector(self, text: str) -> npt.NDArray[np.float32]:
        vector = np.zeros(self._dimensions, dtype=np.float32)
        for word in _WORD.findall(text.lower()):
            slot = int(hashlib.md5(word.encode()).hexdigest(), 16) % self._dimensions
            vector[slot] += 1.0
        norm = float(np.linalg.norm(vector))
        if norm == 0:
            vector[0] = 1.0
            norm = 1.0
        return vector / norm

    def embed_documents(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.embedded_texts += len(texts)
        if not texts:
            return np.zeros((0, self._dimensions), dtype=np.float32)
        return np.stack([self._vector(text) for text in texts])

    def embed_query(self, text: str) -> npt.NDArray[np.float32]:
        return self._vector(text)


@pytest.fixture(scope="session")
def minilm() -> SentenceTransformerEmbedder:
    """The real packaged all-MiniLM-L6-v2, loaded once for the whole session."""
    embedder = SentenceTransformerEmbedder(threads=1)
    embedder.warm_up()
    return embedder


def write_handbook(root: Path) -> Path:
    """A small Markdown corpus with distinct facts per file."""
    files = {
        "benefits/time-off.md": (
            "# Time off\n\nEveryone gets 27 days of paid vacation per year.\n\n"
            "## Carry-over\n\nUp to 5 unused vacation days carry over into the next year.\n\n"
            "## Sick leave\n\nSick leave is unlimited and needs no doctor's note for the first 3 days.\n"
        ),
        "expenses/travel.md": (
            "# Travel expenses\n\nBook flights through the Wayfare portal.\n\n"
            "## Receipts\n\nSubmit receipts within 30 days of the trip in the Harbor app.\n\n"
            "## Per diem\n\nThe daily meal allowance abroad is 55 euros.\n"
        ),
        "it-security/passwords.md": (
            "# Passwords\n\nPasswords live in Lockbox, the company password manager.\n\n"
            "## Rotation\n\nService account keys rotate every 90 days.\n"
        ),
        "people/onboarding.md": (
            "# Onboarding\n\nYour laptop ships 7 business days before your start date.\n\n"
            "## Buddy\n\nEvery new joiner gets an onboarding buddy from another team for 60 days.\n"
        ),
    }
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def rag_settings(index_dir: Path, **overrides: object) -> RagSettings:
    values: dict[str, object] = {"index_dir": index_dir, "chunking": {"tokens": 64, "overlap": 8}}
    values.update(overrides)
    return RagSettings.model_validate(values)
