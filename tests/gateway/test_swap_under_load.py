"""Index and adapter swaps under load lose no request, on one worker and on two: `hybridllm serve` with the
ONNX backend (SmolLM2, LoRA-ready) answers concurrent openai-client requests to `tuned` and `rag` while a
new index version is ingested (each worker's index watcher picks it up) and POST /admin/adapters loads
adapter version 2 (it reaches one worker; every other worker's adapter watcher loads the published
version). Every request gets 200 and a complete answer; afterwards every worker serves both new versions,
shown by a batch of requests that all report them and that each worker answered part of (each worker's
request counter, from the Prometheus multiprocess files, grew during the batch)."""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from services.core.settings import OnnxGeneratorSettings, load_settings
from services.evaluation.local_server import started_service
from services.gateway.auth import sha256_hex
from services.rag.embedder import SentenceTransformerEmbedder
from services.rag.ingest import ingest
from tests.conftest import REPO_ROOT
from tests.gateway.test_adapter_swap import data_dir_sharing_models, loras
from tests.gateway.test_multiprocess_metrics import requests_by_process
from tests.llm.test_onnx_backend import onnx_data_dir, smollm2_settings

pytestmark = pytest.mark.integration
__all__ = ["loras", "onnx_data_dir", "smollm2_settings"]  # session fixtures shared with those files

CLIENTS = 4
MAX_TOKENS = 6
CHECK_BATCH = 6
CONVERGE_S = 60.0
ADMIN = "swap-load-admin-key"
QUESTION: Any = [{"role": "user", "content": "How many vacation days do new employees get?"}]


@dataclass
class LoadLog:
    sent: int = 0
    failures: list[str] = field(default_factory=list)
    spans: list[tuple[float, float]] = field(default_factory=list)  # (start, end) of each answered request

    def in_flight_during(self, start: float, end: float) -> int:
        return sum(1 for began, ended in self.spans if began < end and ended > start)


@pytest.fixture(scope="module")
def embedder() -> SentenceTransformerEmbedder:
    model = SentenceTransformerEmbedder()
    model.warm_up()
    return model


def write_config(tmp: Path, data_dir: Path, index_dir: Path, tuned: Path, workers: int) -> Path:
    config = {
        "data_dir": str(data_dir),
        "default_pipeline": "prompt",
        "server": {"workers": workers, "adapter_watch_interval_s": 0.5},
        "generator": {
            "backend": "onnx",
            "model": "smollm2",
            "onnx_precision": "int8",
            "threads": 1,
            "max_concurrency": 2,
            "max_queue": 64,
            "adapters": {"tuned": str(tuned)},
        },
        # torch for queries as for ingest: no embedder export into this test's folders
        "rag": {"index_dir": str(index_dir), "watch_interval_s": 0.5, "embedder_engine": "torch"},
        "router": {"model_dir": str(tmp / "no-router")},
        "auth": {"admin_key_sha256": [sha256_hex(ADMIN)]},
        "observability": {"log_level": "WARNING"},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


async def keep_asking(client: openai.AsyncOpenAI, number: int, log: LoadLog, stop: asyncio.Event) -> None:
    """Alternates `tuned` and `rag` until told to stop; a failure is any error or an incomplete answer."""
    while not stop.is_set():
        log.sent += 1
        model = "tuned" if (log.sent + number) % 2 else "rag"
        began = time.monotonic()
        try:
            answer = await client.chat.completions.create(
                model=model, messages=QUESTION, max_tokens=MAX_TOKENS
            )
        except openai.OpenAIError as exc:
            log.failures.append(f"{model}: {exc!r}")
            continue
        log.spans.append((began, time.monotonic()))
        choice = answer.choices[0]
        if not choice.message.content or choice.finish_reason not in ("stop", "length"):
            log.failures.append(f"{model}: incomplete answer {answer.model_dump_json()[:200]}")


async def one_answer(url: str, model: str) -> dict[str, Any]:
    """One request on a connection of its own, so the kernel may hand it to any worker."""
    body = {"model": model, "messages": QUESTION, "max_tokens": MAX_TOKENS}
    async with httpx.AsyncClient(timeout=120) as client:
        resp = await client.post(url + "/v1/chat/completions", json=body, headers={"connection": "close"})
    assert resp.status_code == 200, resp.text
    hybrid: dict[str, Any] = resp.json()["hybrid"]
    return hybrid


async def every_worker_serves(url: str, metrics_dir: Path, workers: int, model: str, wanted: Any) -> None:
    """Send batches until every worker has answered part of a batch that was all `wanted` (or time runs out).

    The kernel may hand a whole batch's connections to one worker, so the workers proven to serve `wanted`
    are collected over the batches.
    """
    key = "adapter" if model == "tuned" else "index_version"
    deadline = asyncio.get_running_loop().time() + CONVERGE_S
    seen: list[Any] = []
    before: dict[str, float] = {}
    serving_wanted: set[str] = set()
    while asyncio.get_running_loop().time() < deadline:
        before = requests_by_process(metrics_dir)
        batch = await asyncio.gather(*(one_answer(url, model) for _ in range(CHECK_BATCH)))
        after = requests_by_process(metrics_dir)
        seen = [hybrid[key] for hybrid in batch]
        if all(value == wanted for value in seen):
            serving_wanted |= {pid for pid, count in after.items() if count > before.get(pid, 0.0)}
        if len(serving_wanted) == workers:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(
        f"{model}: workers never all served {wanted}; last batch {seen}, counts {before}, "
        f"proven {sorted(serving_wanted)}"
    )


@pytest.mark.parametrize("workers", [1, 2])
async def test_index_and_adapter_swaps_under_load_lose_no_request(
    workers: int,
    loras: dict[str, Path],
    onnx_data_dir: Path,
    smollm2_settings: OnnxGeneratorSettings,
    embedder: SentenceTransformerEmbedder,
    tmp_path: Path,
) -> None:
    corpus, index_dir, metrics_dir = tmp_path / "corpus", tmp_path / "index", tmp_path / "prom"
    shutil.copytree(REPO_ROOT / "corpus" / "handbook" / "benefits", corpus)
    rag = load_settings(rag={"index_dir": str(index_dir), "embedder_engine": "torch"}).rag
    first_index = ingest([corpus], rag, embedder=embedder, progress=False).version
    data_dir = data_dir_sharing_models(tmp_path, onnx_data_dir)
    config = write_config(tmp_path, data_dir, index_dir, loras["v1"], workers)
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}

    with started_service(
        None, config=config, index_dir=index_dir, extra_env=env, ready_timeout_s=300
    ) as service:
        url = service.base_url
        logs = [LoadLog() for _ in range(CLIENTS)]
        stop = asyncio.Event()
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
        load = [asyncio.create_task(keep_asking(client, n, logs[n], stop)) for n in range(CLIENTS)]
        await asyncio.sleep(1.0)
        (corpus / "swap.md").write_text("# Swap\n\nNew employees get 31 vacation days after the swap.\n")
        ingest_began = time.monotonic()
        new_index = (
            await asyncio.to_thread(ingest, [corpus], rag, embedder=embedder, progress=False)
        ).version
        swap_began = time.monotonic()
        async with httpx.AsyncClient(timeout=300) as http:
            body = {"name": "tuned", "path": str(loras["v2"]), "version": "v2"}
            loaded = await http.post(
                url + "/admin/adapters", json=body, headers={"Authorization": f"Bearer {ADMIN}"}
            )
        swap_ended = time.monotonic()
        assert loaded.status_code == 200, loaded.text
        await asyncio.sleep(1.0)  # load keeps running across the other workers' swaps
        stop.set()
        await asyncio.gather(*load)

        failures = [failure for log in logs for failure in log.failures]
        sent = sum(log.sent for log in logs)
        assert failures == [], f"{len(failures)} of {sent} requests failed: {failures[:3]}"
        # Requests were in flight while the new index was written and while the adapter swapped.
        assert sum(log.in_flight_during(ingest_began, swap_began) for log in logs) > 0
        assert sum(log.in_flight_during(swap_began, swap_ended) for log in logs) > 0
        assert new_index != first_index
        await every_worker_serves(url, metrics_dir, workers, "tuned", {"name": "tuned", "version": "v2"})
        await every_worker_serves(url, metrics_dir, workers, "rag", new_index)
