"""Shared fixtures: paths, the shared model cache; serve_in_thread runs a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.harness.in_thread import serve_in_thread
from tests.redis_server import RedisServer, running_redis

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASETS = REPO_ROOT.parent / "shared" / "datasets"
# Converted models are cached here (as `make run` does), so a test session converts at most once.
MODEL_CACHE = REPO_ROOT / "var"

__all__ = ["DATASETS", "MODEL_CACHE", "REPO_ROOT", "serve_in_thread"]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    if not DATASETS.is_dir():
        pytest.skip(f"shared data sets not found at {DATASETS} (expected ../shared/datasets)")
    return DATASETS


@pytest.fixture(scope="session")
def handbook_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default corpus ingested once per session with the real embedder and FAISS."""
    from services.core.settings import load_settings
    from services.rag.ingest import ingest

    index_dir = tmp_path_factory.mktemp("handbook-index")
    settings = load_settings(rag={"index_dir": str(index_dir)})
    ingest([REPO_ROOT / "corpus" / "handbook"], settings.rag, progress=False)
    return index_dir


@pytest.fixture(scope="session")
def service_router(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The service's router, trained on the project's routing data with a bounded number of steps."""
    from training.train_router import train_router

    out = tmp_path_factory.mktemp("router") / "model"
    data = REPO_ROOT / "corpus" / "router"
    train_router(data / "train.jsonl", out, eval_file=data / "val.jsonl", max_steps=240, progress=False)
    return out


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session; tests that need a clean store use `redis_url`."""
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test."""
    redis_server.flush()
    return redis_server.url
