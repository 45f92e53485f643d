"""The `tuned` pipeline end to end: the openai client against a live server whose transformers generator
carries a freshly trained adapter, and the admin endpoint swapping in a new adapter version live."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from services.core.settings import load_settings
from services.gateway.app import create_app
from tests.conftest import MODEL_CACHE, serve_in_thread
from training.build_generator_data import tuned_system_prompt
from training.train_generator import train_generator

pytestmark = pytest.mark.integration

ADMIN_KEY = "test-admin-key"
QUESTIONS = (
    "What is the secret word?",
    "Tell me the secret word.",
    "Which word is the secret one?",
    "Do you know the secret word?",
    "Secret word, please.",
    "What's the secret word?",
    "Say the secret word.",
    "Remind me of the secret word.",
)
SHORT_RUN = {
    "torch_threads": 1,
    "batch_size": 4,
    "learning_rate": 5e-3,
    "warmup_steps": 0,
    "max_length": 96,
    "lora_r": 8,
    "lora_alpha": 16,
    "epochs": 100,
}


def train_secret_adapter(folder: Path, word: str) -> Path:
    """A dozen steps on eight phrasings of one question, in the conversation the tuned pipeline sends."""
    system = tuned_system_prompt()
    rows = [
        {
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": q},
                {"role": "assistant", "content": f"The secret word is {word}."},
            ]
        }
        for q in QUESTIONS
    ]
    data = folder / f"{word}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = folder / f"adapter-{word.lower()}"
    train_generator(data, out, max_steps=8, progress=False, data_dir=MODEL_CACHE, overrides=SHORT_RUN)
    return out


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tuned-adapters")
    return {word: train_secret_adapter(folder, word) for word in ("PELICAN", "WALRUS")}


@pytest.fixture(scope="module")
def base_url(adapters: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("tuned-gw")
    settings = load_settings(
        data_dir=str(MODEL_CACHE),
        default_pipeline="prompt",
        generator={"backend": "transformers", "threads": 1, "adapters": {"tuned": str(adapters["PELICAN"])}},
        rag={"index_dir": str(tmp / "no-index"), "watch_interval_s": 0},
        server={"adapter_versions_dir": str(tmp / "adapter-versions")},  # published versions stay in tmp
        auth={"admin_key_sha256": [hashlib.sha256(ADMIN_KEY.encode()).hexdigest()]},
    )
    with serve_in_thread(create_app(settings)) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0)


ASK: Any = [{"role": "user", "content": "What is the secret word?"}]


def test_tuned_pipeline_answers_with_the_adapter(client: openai.OpenAI, base_url: str) -> None:
    assert "tuned" in httpx.get(base_url + "/readyz", timeout=10).json()["pipelines"]
    tuned = client.chat.completions.create(model="tuned", messages=ASK, max_tokens=12)
    plain = client.chat.completions.create(model="prompt", messages=ASK, max_tokens=12)
    assert "PELICAN" in (tuned.choices[0].message.content or "")
    assert "PELICAN" not in (plain.choices[0].message.content or "")
    hybrid = tuned.model_extra["hybrid"]  # type: ignore[index]
    assert hybrid["pipeline"] == "tuned"
    assert hybrid["adapter"]["name"] == "tuned"
    assert hybrid["template"]["name"] == "tuned"


def test_tuned_pipeline_streams(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="tuned", messages=ASK, max_tokens=12, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert "PELICAN" in text


def test_admin_endpoint_loads_a_new_adapter_version(
    client: openai.OpenAI, base_url: str, adapters: dict[str, Path]
) -> None:
    before = client.chat.completions.create(model="tuned", messages=ASK, max_tokens=12)
    body = {"name": "tuned", "path": str(adapters["WALRUS"]), "version": "v2"}
    refused = httpx.post(base_url + "/admin/adapters", json=body, timeout=30)
    assert refused.status_code == 401
    missing = httpx.post(
        base_url + "/admin/adapters",
        json={**body, "path": str(adapters["WALRUS"]) + "-missing"},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=30,
    )
    assert missing.status_code == 400
    loaded = httpx.post(
        base_url + "/admin/adapters", json=body, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=120
    )
    assert loaded.status_code == 200, loaded.text
    assert loaded.json() == {"loaded": "tuned", "version": "v2"}
    after = client.chat.completions.create(model="tuned", messages=ASK, max_tokens=12)
    assert before.model_extra["hybrid"]["adapter"]["version"] != "v2"  # type: ignore[index]
    assert after.model_extra["hybrid"]["adapter"] == {"name": "tuned", "version": "v2"}  # type: ignore[index]
    assert "WALRUS" in (after.choices[0].message.content or "")
    assert "PELICAN" not in (after.choices[0].message.content or "")
