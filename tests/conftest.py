"""Shared fixtures: paths, the shared model cache, and a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from services.core.ports import free_port

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASETS = REPO_ROOT.parent / "shared" / "datasets"
# Converted models are cached here (as `make run` does), so a test session converts at most once.
MODEL_CACHE = REPO_ROOT / "var"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    if not DATASETS.is_dir():
        pytest.skip(f"shared data sets not found at {DATASETS} (expected ../shared/datasets)")
    return DATASETS


@contextmanager
def serve_in_thread(app: object, *, ready_path: str = "/readyz", timeout_s: float = 300.0) -> Iterator[str]:
    """Run `app` under a real uvicorn server in a background thread; yields its base URL."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if not thread.is_alive():
                raise RuntimeError("server thread exited during start-up")
            try:
                if httpx.get(base_url + ready_path, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"server not ready after {timeout_s} s")
            time.sleep(0.2)
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


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
