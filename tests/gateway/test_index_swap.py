"""An index swap under load loses no request: concurrent /v1/retrieve and `rag` chat requests against a
live gateway while new versions of the index are ingested and reloaded (POST /admin/reload-index). Every
request must succeed, each client must see the versions in order (a request uses one snapshot, never a
half-swapped index), and the served version must change. Real parts: ingest, FAISS, the embedder, the
openai backend against a fixture upstream."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.core.settings import Settings, load_settings
from services.gateway.app import create_app
from services.gateway.auth import sha256_hex
from services.rag.embedder import SentenceTransformerEmbedder
from services.rag.ingest import ingest
from tests.conftest import MODEL_CACHE, REPO_ROOT, serve_in_thread
from tests.gateway.fault_upstream import FaultUpstreamServer, fault_upstream

pytestmark = pytest.mark.integration

CLIENTS = 8
SWAPS = 2
ADMIN = "swap-admin-key"
QUESTION = "How many vacation days do new employees get?"


@dataclass
class ClientLog:
    versions: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    sent: int = 0


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultUpstreamServer]:
    with fault_upstream() as server:
        yield server


@pytest.fixture(scope="module")
def embedder() -> SentenceTransformerEmbedder:
    model = SentenceTransformerEmbedder()
    model.warm_up()
    return model


def _settings(index_dir: Path, upstream: FaultUpstreamServer, tmp: Path) -> Settings:
    return load_settings(
        data_dir=str(MODEL_CACHE),
        default_pipeline="prompt",
        generator={
            "backend": "openai",
            "model": "fixture",
            "base_url": upstream.base_url,
            "max_retries": 0,
            "max_concurrency": CLIENTS,
            "max_queue": CLIENTS * 4,
        },  # fmt: skip
        # torch for queries too: no ONNX export into this test's temporary folder
        rag={"index_dir": str(index_dir), "watch_interval_s": 0, "embedder_engine": "torch"},
        router={"model_dir": str(tmp / "no-router")},
        auth={"admin_key_sha256": [sha256_hex(ADMIN)]},
    )


async def _client(
    client: httpx.AsyncClient, url: str, number: int, log: ClientLog, stop: asyncio.Event
) -> None:
    """Alternates retrieval and rag chat until told to stop; logs each answer's index version in order."""
    while not stop.is_set():
        log.sent += 1
        try:
            if (log.sent + number) % 2:
                resp = await client.post(url + "/v1/retrieve", json={"query": QUESTION, "top_k": 3})
                version = resp.json().get("index_version") if resp.status_code == 200 else None
            else:
                body = {"model": "rag", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 8}
                resp = await client.post(url + "/v1/chat/completions", json=body)
                version = resp.json()["hybrid"]["index_version"] if resp.status_code == 200 else None
        except httpx.HTTPError as exc:
            log.failures.append(repr(exc))
            continue
        if resp.status_code != 200 or not version:
            log.failures.append(f"{resp.status_code}: {resp.text[:200]}")
        else:
            log.versions.append(version)


async def test_swaps_under_load_lose_no_request(
    upstream: FaultUpstreamServer, embedder: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(REPO_ROOT / "corpus" / "handbook" / "benefits", corpus)
    settings = _settings(tmp_path / "index", upstream, tmp_path)
    first = ingest([corpus], settings.rag, embedder=embedder, progress=False).version
    admin = {"Authorization": f"Bearer {ADMIN}"}

    with serve_in_thread(create_app(settings)) as url:
        logs = [ClientLog() for _ in range(CLIENTS)]
        stop = asyncio.Event()
        reloads: list[dict[str, Any]] = []
        async with httpx.AsyncClient(timeout=30) as client:
            clients = [asyncio.create_task(_client(client, url, n, logs[n], stop)) for n in range(CLIENTS)]
            await asyncio.sleep(0.5)
            for swap in range(SWAPS):
                # A changed corpus: one new document per swap, so each ingest writes a new version.
                (corpus / f"swap-{swap}.md").write_text(
                    f"# Swap {swap}\n\nNew employees get {20 + swap} vacation days in swap {swap}.\n"
                )
                await asyncio.to_thread(ingest, [corpus], settings.rag, embedder=embedder, progress=False)
                resp = await client.post(url + "/admin/reload-index", headers=admin)
                assert resp.status_code == 200, resp.text
                reloads.append(resp.json())
                await asyncio.sleep(0.5)
            stop.set()
            await asyncio.gather(*clients)

    failures = [f for log in logs for f in log.failures]
    sent = sum(log.sent for log in logs)
    assert failures == [], f"{len(failures)} of {sent} requests failed: {failures[:3]}"
    assert all(r["reloaded"] for r in reloads), reloads
    served = [first] + [r["version"] for r in reloads]
    assert len(set(served)) == SWAPS + 1, served
    seen = [v for log in logs for v in log.versions]
    assert seen.count(first) > 0 and seen.count(served[-1]) > 0, "the swap was not observed under load"
    for log in logs:  # each client sees versions in serving order: never an old one after a new one
        order = [served.index(v) for v in log.versions]
        assert order == sorted(order), order
