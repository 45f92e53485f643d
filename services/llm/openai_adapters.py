"""Run-time LoRA loading on a vLLM server, for the `openai` backend (POST /admin/adapters).

vLLM's runtime LoRA API (`POST <server root>/v1/load_lora_adapter`, served only when vLLM runs with
VLLM_ALLOW_RUNTIME_LORA_UPDATING=True) registers an adapter folder under a module name. Each published
version gets a module name of its own, `<adapter>-<published folder name>`; that folder name carries the
version label and the digest of its files, so one module name always means the same weights. Loading a
name again (another worker's watcher, a replica on the same vLLM server) is answered "already loaded" by
vLLM, which counts as success.

vLLM reads the folder itself: the adapter versions dir must be visible to the vLLM server under the same
path (same host, or a volume shared by the gateway and vLLM containers).

Replaced versions are never unloaded: one vLLM server serves every gateway worker and replica, and a worker
cannot know whether another still routes requests to the old module (it may not have loaded the new one
yet). An unused module costs vLLM one registration; its weights leave vLLM's LoRA cache when newer
adapters need the room (least recently used first).
"""

from __future__ import annotations

from pathlib import Path

import httpx

from services.core.errors import InvalidRequest, NotReady
from services.core.settings import OpenAIGeneratorSettings

LOAD_PATH = "/v1/load_lora_adapter"
# vLLM's 400 for a module name it serves already (vllm/entrypoints/openai/models/serving.py).
ALREADY_LOADED = "has already been loaded"
# vLLM's 404 for a lora_path it cannot find (vllm/exceptions.py LoRAAdapterNotFoundError).
FOLDER_NOT_FOUND = "No adapter found for"
RUNTIME_LORA_ENV = "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"


def versioned_module_name(name: str, folder: Path) -> str:
    """The vLLM module name of one published version of adapter `name` (its folder: `<version>-<digest>`)."""
    return f"{name}-{folder.name}"


def server_root(base_url: str) -> str:
    """The vLLM server's root URL: `base_url` names its OpenAI API, `<root>/v1`."""
    root = base_url.rstrip("/")
    return root.removesuffix("/v1")


def load_lora_module(settings: OpenAIGeneratorSettings, module: str, folder: Path) -> None:
    """Register `folder` on the vLLM server as LoRA module `module`. Blocking: call it off the event loop.

    Raises InvalidRequest (400) when vLLM rejects the adapter or cannot find its folder, NotReady (503)
    when vLLM is unreachable or does not allow runtime loading.
    """
    assert settings.base_url is not None  # the backend refuses to start without one
    root = server_root(settings.base_url)
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    body = {"lora_name": module, "lora_path": str(folder)}
    try:
        with httpx.Client(base_url=root, headers=headers, timeout=settings.timeout_s) as client:
            response = client.post(LOAD_PATH, json=body)
    except httpx.TimeoutException as exc:
        raise NotReady(
            f"{settings.name}: vLLM at {root} did not load adapter {module!r} within {settings.timeout_s}s"
        ) from exc
    except httpx.TransportError as exc:
        raise NotReady(f"{settings.name}: cannot reach vLLM at {root} to load an adapter: {exc}") from exc
    _check_answer(settings.name, root, module, folder, response)


def _check_answer(generator: str, root: str, module: str, folder: Path, response: httpx.Response) -> None:
    if response.status_code == 200:
        return
    message = _vllm_message(response)
    if response.status_code == 400 and message is not None and ALREADY_LOADED in message:
        return  # the same name is the same published files: loaded by another worker or an earlier try
    if response.status_code == 404 and (message is None or FOLDER_NOT_FOUND not in message):
        # No such route: vLLM without runtime loading, or not vLLM at all (a cloud API).
        raise NotReady(
            f"{generator}: {root} does not load LoRA adapters at run time (no {LOAD_PATH}); "
            f"start vLLM with {RUNTIME_LORA_ENV} and --enable-lora"
        )
    if response.status_code == 404:
        raise InvalidRequest(
            f"path: vLLM at {root} finds no adapter at {folder}: the adapter versions dir must be on a "
            f"filesystem the vLLM server sees under the same path ({message})",
            param="path",
        )
    if response.status_code in (400, 422) or (response.status_code == 500 and message is not None):
        # 400/422: the adapter or request is invalid; a 500 with vLLM's error body: its engine could not
        # load the adapter (rank above --max-lora-rank, modules the model lacks, unreadable weights).
        raise InvalidRequest(
            f"path: vLLM refused adapter {module!r} from {folder}: {message or response.text[:200]}",
            param="path",
        )
    raise NotReady(
        f"{generator}: vLLM at {root} answered {response.status_code} to loading adapter {module!r}: "
        f"{message or response.text[:200]}"
    )


def _vllm_message(response: httpx.Response) -> str | None:
    """The message of an OpenAI-shaped error body; None when the body is not one (e.g. FastAPI's 404)."""
    try:
        payload = response.json()
    except ValueError:
        return None
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return None
