"""A hot adapter swap on the ONNX backend through the real HTTP server: POST /admin/adapters loads version 2
of the `tuned` adapter while a stream on version 1 runs. The stream finishes on version 1 (its text equals a
version-1-only greedy run) and says so in `hybrid.adapter`; later requests get version 2. Real parts: the
SmolLM2 ONNX model built LoRA-ready, tiny random peft LoRAs on the same base, uvicorn, the openai client."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from services.core.settings import OnnxGeneratorSettings, Settings, load_settings
from services.gateway.app import create_app
from services.gateway.auth import sha256_hex
from services.llm.model_prep import prepare_hf_model, prepare_onnx_model
from services.llm.onnx_backend import OnnxGenerator
from tests.conftest import serve_in_thread
from tests.llm.test_onnx_backend import make_random_lora, onnx_data_dir, smollm2_settings

pytestmark = pytest.mark.integration
__all__ = ["onnx_data_dir", "smollm2_settings"]  # session fixtures shared with tests/llm/test_onnx_backend.py

ADMIN = "adapter-swap-admin-key"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}
STORY: Any = [{"role": "user", "content": "Write a long story about a lighthouse keeper and her cat."}]
# Long enough that the stream is still decoding when the swap (a conversion and a load) has finished.
STREAM_TOKENS = 160
SHORT_TOKENS = 16


def data_dir_sharing_models(tmp: Path, onnx_data_dir: Path) -> Path:
    """A data dir of its own (its adapter versions stay in this test) whose converted models are the
    session's, so the LoRA-ready model is built once per session."""
    data_dir = tmp / "data"
    data_dir.mkdir()
    shared_models = onnx_data_dir / "models"
    shared_models.mkdir(parents=True, exist_ok=True)
    os.symlink(shared_models, data_dir / "models")
    return data_dir


@pytest.fixture(scope="session")
def loras(
    tmp_path_factory: pytest.TempPathFactory, smollm2_settings: OnnxGeneratorSettings, onnx_data_dir: Path
) -> dict[str, Path]:
    """Version 1 and 2 of `tuned` (same modules, other weights), and one on other modules; the LoRA-ready
    base model for version 1's modules is built here, once."""
    hf_dir = prepare_hf_model(smollm2_settings, onnx_data_dir)
    root = tmp_path_factory.mktemp("swap-loras")
    found = {
        "v1": make_random_lora(hf_dir, root / "tuned-v1", seed=0),
        "v2": make_random_lora(hf_dir, root / "tuned-v2", seed=1),
        "other-modules": make_random_lora(hf_dir, root / "k-only", seed=2, target_modules=("k_proj",)),
    }
    prepare_onnx_model(
        smollm2_settings.model_copy(update={"adapters": {"tuned": str(found["v1"])}}), onnx_data_dir
    )
    return found


def onnx_gateway_settings(data_dir: Path, tuned: Path, tmp: Path, **sections: Any) -> Settings:
    return load_settings(
        data_dir=str(data_dir),
        default_pipeline="prompt",
        generator={
            "backend": "onnx",
            "model": "smollm2",
            "onnx_precision": "int8",
            "threads": 2,
            "max_concurrency": 2,  # batched engine for base requests; adapter requests run beside it
            "adapters": {"tuned": str(tuned)},
        },
        rag={"index_dir": str(tmp / "no-index"), "watch_interval_s": 0},
        router={"model_dir": str(tmp / "no-router")},
        auth={"admin_key_sha256": [sha256_hex(ADMIN)]},
        **sections,
    )


def adapter_of(response: Any) -> Any:
    return response.model_extra["hybrid"]["adapter"]


async def test_a_stream_on_v1_finishes_on_v1_while_v2_loads(
    loras: dict[str, Path], onnx_data_dir: Path, tmp_path: Path
) -> None:
    data_dir = data_dir_sharing_models(tmp_path, onnx_data_dir)
    app = create_app(onnx_gateway_settings(data_dir, loras["v1"], tmp_path))
    with serve_in_thread(app, timeout_s=600) as url:
        backend = app.state.gateway.components.primary
        assert isinstance(backend, OnnxGenerator)
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=300)
        v1_only = await client.chat.completions.create(
            model="tuned", messages=STORY, max_tokens=STREAM_TOKENS
        )
        v1_short = await client.chat.completions.create(
            model="tuned", messages=STORY, max_tokens=SHORT_TOKENS
        )
        assert adapter_of(v1_only) == {"name": "tuned", "version": "initial"}

        stream = await client.chat.completions.create(
            model="tuned", messages=STORY, max_tokens=STREAM_TOKENS, stream=True
        )
        chunks = aiter(stream)
        pieces: list[str] = []
        while not pieces:  # the first text: the stream is decoding with version 1 pinned
            chunk = await anext(chunks)
            pieces += [c.delta.content for c in chunk.choices if c.delta.content]
        async with httpx.AsyncClient(timeout=300) as http:
            body = {"name": "tuned", "path": str(loras["v2"]), "version": "v2"}
            loaded = await http.post(url + "/admin/adapters", json=body, headers=ADMIN_HEADERS)
            assert loaded.status_code == 200, loaded.text
            assert loaded.json() == {"loaded": "tuned", "version": "v2"}
            in_memory = backend.loaded_adapter_versions
            refused = await http.post(
                url + "/admin/adapters",
                json={"name": "tuned", "path": str(loras["other-modules"]), "version": "v3"},
                headers=ADMIN_HEADERS,
            )
        assert len(in_memory) == 2, f"the stream ended before the swap finished: {in_memory}"
        last: Any = None
        async for chunk in chunks:
            pieces += [c.delta.content for c in chunk.choices if c.delta.content]
            last = chunk
        assert "".join(pieces) == v1_only.choices[0].message.content
        assert last is not None and adapter_of(last) == {"name": "tuned", "version": "initial"}

        v2 = await client.chat.completions.create(model="tuned", messages=STORY, max_tokens=SHORT_TOKENS)
        assert adapter_of(v2) == {"name": "tuned", "version": "v2"}
        assert v2.choices[0].message.content != v1_short.choices[0].message.content
        # Version 1 was unloaded once the stream that pinned it ended.
        now_in_memory = backend.loaded_adapter_versions
        assert len(now_in_memory) == 1 and now_in_memory[0] in in_memory, (in_memory, now_in_memory)

        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["param"] == "path" and "['k_proj']" in error["message"], error
        versions = data_dir / "adapter-versions" / "tuned"
        assert sorted(p.name.split("-")[0] for p in versions.iterdir()) == ["CURRENT", "v2"]
