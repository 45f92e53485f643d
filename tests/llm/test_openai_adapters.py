"""Run-time adapter loading on the `openai` backend against a fake vLLM: pinning, idempotence, error mapping.

The fake speaks vLLM's runtime LoRA API as vLLM 0.32 does (services/llm/openai_adapters.py cites where):
a second load of a name is a 400 "already been loaded", a folder it cannot find a 404 with an error body,
an adapter its engine cannot load a 500, and without VLLM_ALLOW_RUNTIME_LORA_UPDATING the route is absent
(FastAPI's plain 404). Its chat answers are the module name each request asked for.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse, StreamingResponse

from services.core.errors import GenerationError, InvalidRequest, NotReady
from services.core.ports import free_port
from services.core.settings import OpenAIGeneratorSettings, load_settings
from services.core.types import ChatMessage, GenerationParams
from services.gateway.app import create_app
from services.gateway.auth import sha256_hex
from services.llm.openai_adapters import RUNTIME_LORA_ENV, server_root, versioned_module_name
from services.llm.openai_backend import OpenAICompatibleGenerator
from tests.conftest import serve_in_thread

pytestmark = pytest.mark.integration  # a real uvicorn server on 127.0.0.1; fast
ADMIN = "openai-adapter-admin-key"
QUESTION = [ChatMessage(role="user", content="Hello?")]
TUNED = GenerationParams(max_tokens=8, temperature=0.0, adapter="tuned")


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


class FakeVllm:
    """vLLM's chat and runtime LoRA routes; `gate` holds streams after their first chunk while cleared."""

    def __init__(self, runtime_loading: bool = True) -> None:
        self.modules: dict[str, str] = {"tuned": "/served/at/start"}
        self.load_calls: list[str] = []
        self.chat_models: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self.app = FastAPI()
        self.app.get("/health")(self._health)
        self.app.post("/v1/chat/completions")(self._chat)
        if runtime_loading:
            self.app.post("/v1/load_lora_adapter")(self._load)

    async def _health(self) -> dict[str, str]:
        return {}

    async def _load(self, body: dict[str, Any]) -> JSONResponse:
        name, path = body["lora_name"], body["lora_path"]
        self.load_calls.append(name)
        if name in self.modules:
            return _error(400, f"The lora adapter '{name}' has already been loaded.", "InvalidUserInput")
        if not Path(path).is_dir():
            return _error(404, f"Loading lora {name} failed: No adapter found for {path}", "NotFoundError")
        if not (Path(path) / "adapter_config.json").is_file():
            return _error(500, "adapter_config.json not found", "InternalServerError")
        self.modules[name] = path
        return JSONResponse(f"Success: LoRA adapter '{name}' added successfully.")

    async def _chat(self, body: dict[str, Any]) -> Any:
        model = body["model"]
        self.chat_models.append(model)
        if model != "base" and model not in self.modules:
            return _error(404, f"The model `{model}` does not exist.", "NotFoundError")
        if not body.get("stream"):
            return {
                "choices": [{"message": {"content": model}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1},
            }
        return StreamingResponse(self._chunks(model), media_type="text/event-stream")

    async def _chunks(self, model: str) -> AsyncIterator[str]:
        yield _sse({"choices": [{"delta": {"content": model}, "finish_reason": None}]})
        await asyncio.to_thread(self.gate.wait, 10)
        yield _sse({"choices": [{"delta": {"content": "|" + model}, "finish_reason": "stop"}]})
        yield _sse({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
        yield "data: [DONE]\n\n"


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"


@pytest.fixture
def fake_vllm() -> Iterator[tuple[FakeVllm, str]]:
    fake = FakeVllm()
    with serve_in_thread(fake.app, ready_path="/health") as url:
        yield fake, url


def adapter_folder(root: Path, name: str, content: str = "{}") -> Path:
    """A published-looking version folder `<version>-<digest>` with a peft config."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(content)
    return folder


def generator_for(url: str) -> OpenAICompatibleGenerator:
    settings = OpenAIGeneratorSettings(
        base_url=f"{url}/v1", model="base", adapters={"tuned": "tuned"}, max_concurrency=2, max_retries=0
    )
    return OpenAICompatibleGenerator(settings)


def test_server_root_drops_the_openai_api_path() -> None:
    assert server_root("http://vllm:8000/v1") == "http://vllm:8000"
    assert server_root("http://vllm:8000/v1/") == "http://vllm:8000"
    assert server_root("http://vllm:8000") == "http://vllm:8000"


async def test_a_request_keeps_the_module_current_when_it_entered(
    fake_vllm: tuple[FakeVllm, str], tmp_path: Path
) -> None:
    fake, url = fake_vllm
    generator = generator_for(url)
    v2 = adapter_folder(tmp_path, "v2-0123456789ab")
    module = versioned_module_name("tuned", v2)
    assert module == "tuned-v2-0123456789ab"
    fake.gate.clear()  # the stream on version 1 waits after its first chunk
    stream = generator.stream(QUESTION, TUNED)
    first = await anext(stream)
    await asyncio.to_thread(generator.load_adapter, "tuned", v2)
    after = await generator.complete(QUESTION, TUNED)  # entered after the load: the new module
    fake.gate.set()
    rest = [delta.text async for delta in stream]
    assert first.text + "".join(rest) == "tuned|tuned"  # entered before the load: the old module throughout
    assert after.text == module
    assert fake.chat_models == ["tuned", module]
    assert fake.modules[module] == str(v2.resolve())  # vLLM was given the absolute path
    base = await generator.complete(QUESTION, GenerationParams(max_tokens=8))
    assert base.text == "base"
    await generator.aclose()


async def test_a_new_adapter_name_becomes_servable(fake_vllm: tuple[FakeVllm, str], tmp_path: Path) -> None:
    fake, url = fake_vllm
    generator = generator_for(url)
    with pytest.raises(InvalidRequest, match="unknown adapter 'support'"):
        await generator.complete(QUESTION, GenerationParams(max_tokens=8, adapter="support"))
    folder = adapter_folder(tmp_path, "v1-aaaaaaaaaaaa")
    await asyncio.to_thread(generator.load_adapter, "support", folder)
    answer = await generator.complete(QUESTION, GenerationParams(max_tokens=8, adapter="support"))
    assert answer.text == "support-v1-aaaaaaaaaaaa"
    assert set(generator.adapters) == {"tuned", "support"}
    await generator.aclose()


async def test_every_worker_loads_the_same_version_once_on_vllm(
    fake_vllm: tuple[FakeVllm, str], tmp_path: Path
) -> None:
    """Two workers (each with its own backend) load one published folder: vLLM's "already loaded" for the
    second counts as success, and both route to the one module."""
    fake, url = fake_vllm
    workers = [generator_for(url), generator_for(url)]
    v2 = adapter_folder(tmp_path, "v2-0123456789ab")
    for worker in workers:
        await asyncio.to_thread(worker.load_adapter, "tuned", v2)
    await asyncio.to_thread(workers[0].load_adapter, "tuned", v2)  # a retried publish: still fine
    assert fake.load_calls == ["tuned-v2-0123456789ab"] * 3
    assert sorted(fake.modules) == ["tuned", "tuned-v2-0123456789ab"]
    answers = [(await worker.complete(QUESTION, TUNED)).text for worker in workers]
    assert answers == ["tuned-v2-0123456789ab"] * 2
    for worker in workers:
        await worker.aclose()


async def test_a_module_a_restarted_vllm_forgot_is_registered_again(
    fake_vllm: tuple[FakeVllm, str], tmp_path: Path
) -> None:
    fake, url = fake_vllm
    generator = generator_for(url)
    v2 = adapter_folder(tmp_path, "v2-0123456789ab")
    await asyncio.to_thread(generator.load_adapter, "tuned", v2)
    del fake.modules["tuned-v2-0123456789ab"]  # vLLM restarted: only its --lora-modules are back
    assert (await generator.complete(QUESTION, TUNED)).text == "tuned-v2-0123456789ab"
    assert fake.load_calls == ["tuned-v2-0123456789ab"] * 2
    assert fake.chat_models == ["tuned-v2-0123456789ab"] * 2  # the 404, then the retry
    del fake.modules["tuned-v2-0123456789ab"]
    (v2 / "adapter_config.json").unlink()  # and now it cannot be registered again
    with pytest.raises(GenerationError, match="vLLM lost adapter module 'tuned-v2-0123456789ab'"):
        await generator.complete(QUESTION, TUNED)
    await generator.aclose()


@pytest.mark.parametrize(
    ("case", "error", "message"),
    [
        ("missing", InvalidRequest, "finds no adapter at .*same path"),
        ("broken", InvalidRequest, "refused adapter 'tuned-v3-bbbbbbbbbbbb'.*adapter_config.json not found"),
        ("runtime off", NotReady, f"does not load LoRA adapters at run time.*{RUNTIME_LORA_ENV}"),
        ("unreachable", NotReady, "cannot reach vLLM at http://127.0.0.1"),
    ],
)
async def test_vllm_errors_name_their_cause_and_keep_the_served_module(
    case: str, error: type[Exception], message: str, tmp_path: Path
) -> None:
    fake = FakeVllm(runtime_loading=case != "runtime off")
    folder = tmp_path / "v3-bbbbbbbbbbbb"
    if case != "missing":
        folder.mkdir()  # "broken": no adapter_config.json in it
    with serve_in_thread(fake.app, ready_path="/health") as url:
        generator = generator_for(url if case != "unreachable" else f"http://127.0.0.1:{free_port()}")
        with pytest.raises(error, match=message):
            await asyncio.to_thread(generator.load_adapter, "tuned", folder)
        generator.warm_up()
        if case != "unreachable":
            assert (await generator.complete(QUESTION, TUNED)).text == "tuned"
        await generator.aclose()


def test_the_admin_route_maps_vllm_refusals_to_openai_errors(tmp_path: Path) -> None:
    """Through the gateway: runtime loading off is a 503, a folder vLLM cannot load a 400; a load that
    works makes the new version the one requests report."""
    fake = FakeVllm(runtime_loading=False)
    served = FakeVllm()
    headers = {"Authorization": f"Bearer {ADMIN}"}
    good = adapter_folder(tmp_path / "posted", "tuned-v2")
    no_config = tmp_path / "posted" / "no-config"
    no_config.mkdir()
    (no_config / "adapter_model.safetensors").write_bytes(b"not weights")
    with (
        serve_in_thread(fake.app, ready_path="/health") as off_url,
        serve_in_thread(served.app, ready_path="/health") as on_url,
    ):
        for upstream, path, status, text in [
            (off_url, good, 503, RUNTIME_LORA_ENV),
            (on_url, no_config, 400, "refused adapter"),
            (on_url, good, 200, ""),
        ]:
            settings = load_settings(
                data_dir=str(tmp_path / "data" / str(status)),
                default_pipeline="prompt",
                generator={"backend": "openai", "base_url": f"{upstream}/v1", "adapters": {"tuned": "tuned"}},
                rag={"index_dir": str(tmp_path / "no-index"), "watch_interval_s": 0},
                router={"model_dir": str(tmp_path / "no-router")},
                auth={"admin_key_sha256": [sha256_hex(ADMIN)]},
            )
            with serve_in_thread(create_app(settings)) as gateway:
                body = {"name": "tuned", "path": str(path), "version": "v2"}
                answer = httpx.post(f"{gateway}/admin/adapters", json=body, headers=headers, timeout=30)
                assert answer.status_code == status, answer.text
                if status != 200:
                    assert text in answer.json()["error"]["message"]
                    continue
                chat = httpx.post(
                    f"{gateway}/v1/chat/completions",
                    json={"model": "tuned", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8},
                    timeout=30,
                )
                assert chat.status_code == 200, chat.text
                assert chat.json()["hybrid"]["adapter"] == {"name": "tuned", "version": "v2"}
                assert served.chat_models[-1].startswith("tuned-v2-")
