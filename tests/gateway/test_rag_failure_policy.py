"""`rag.on_failure` end to end: a live gateway whose retrieval breaks after start (the query embedder
starts raising) answers `rag` requests through `prompt` with `hybrid.degraded` set (`degrade`), or with an
OpenAI-shaped 503 (`fail`). Everything else is real: the handbook index, FAISS, the ONNX embedder until it
breaks, the openai backend against a fixture upstream."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.core.settings import Settings, load_settings
from services.gateway.app import create_app, default_builder
from services.gateway.metrics import ServiceMetrics
from services.pipelines.factory import ServiceComponents
from services.rag import embedder as embedder_module
from tests.conftest import MODEL_CACHE, serve_in_thread
from tests.gateway.fault_upstream import FaultUpstreamServer, fault_upstream

pytestmark = pytest.mark.integration

QUESTION = [{"role": "user", "content": "How many vacation days do new employees get?"}]


class BreakableEmbedder:
    """The real query embedder until `broken` is set; then every query raises, as a crashed model would."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.broken = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def embed_query(self, text: str) -> Any:
        if self.broken:
            raise RuntimeError("injected embedder failure")
        return self.inner.embed_query(text)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultUpstreamServer]:
    with fault_upstream() as server:
        yield server


def _settings(index_dir: Path, upstream: FaultUpstreamServer, on_failure: str, tmp: Path) -> Settings:
    return load_settings(
        data_dir=str(MODEL_CACHE),
        default_pipeline="prompt",
        generator={"backend": "openai", "model": "fixture", "base_url": upstream.base_url, "max_retries": 0},
        rag={"index_dir": str(index_dir), "watch_interval_s": 0, "on_failure": on_failure},
        router={"model_dir": str(tmp / "no-router")},
    )


@pytest.fixture(params=["degrade", "fail"])
def served(
    request: pytest.FixtureRequest,
    handbook_index: Path,
    upstream: FaultUpstreamServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[str, str, BreakableEmbedder]]:
    """(policy, base URL, the embedder switch), through the app's builder seam."""
    made: list[BreakableEmbedder] = []
    real_build = embedder_module.build_query_embedder

    def build_breakable(settings: Any) -> BreakableEmbedder:
        made.append(BreakableEmbedder(real_build(settings)))
        return made[-1]

    def builder(settings: Settings, metrics: ServiceMetrics) -> ServiceComponents:
        with monkeypatch.context() as patch:
            patch.setattr("services.pipelines.factory.build_query_embedder", build_breakable)
            return default_builder(settings, metrics)

    app = create_app(_settings(handbook_index, upstream, request.param, tmp_path), builder=builder)
    with serve_in_thread(app) as url:
        assert len(made) == 1, "the factory did not build the query embedder through the seam"
        yield request.param, url, made[0]


def _rag_chat(url: str, stream: bool = False) -> httpx.Response:
    body = {"model": "rag", "messages": QUESTION, "max_tokens": 8, "stream": stream}
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=30)


def test_broken_retrieval_follows_the_policy(served: tuple[str, str, BreakableEmbedder]) -> None:
    policy, url, embedder = served
    healthy = _rag_chat(url)
    assert healthy.status_code == 200, healthy.text
    hybrid = healthy.json()["hybrid"]
    assert hybrid["index_version"] and hybrid["sources"], hybrid
    assert "degraded" not in hybrid

    embedder.broken = True
    if policy == "degrade":
        for stream in (False, True):
            resp = _rag_chat(url, stream=stream)
            assert resp.status_code == 200, resp.text
            if stream:  # the final chunk carries the extension
                assert resp.text.rstrip().endswith("data: [DONE]")
                assert re.search(r'"degraded":\s*"rag unavailable', resp.text), resp.text[-500:]
                continue
            body = resp.json()
            assert body["choices"][0]["message"]["content"]
            hybrid = body["hybrid"]
            assert "rag unavailable" in hybrid["degraded"] and "prompt" in hybrid["degraded"], hybrid
            assert hybrid["sources"] == [] and hybrid["index_version"] is None
    else:
        for stream in (False, True):
            resp = _rag_chat(url, stream=stream)
            assert resp.status_code == 503, resp.text
            error = resp.json()["error"]
            assert error["type"] == "server_error"
            assert "retrieval failed" in error["message"], error

    embedder.broken = False  # the failure was per request: a recovered embedder serves rag again
    recovered = _rag_chat(url)
    assert recovered.status_code == 200 and "degraded" not in recovered.json()["hybrid"]
