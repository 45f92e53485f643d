"""Any OpenAI-compatible server as a generator: vLLM (GPU or CPU build), llama.cpp's server, a cloud API.

Spoken with aiohttp directly: the wire format is a small JSON object each way, with no SDK models to build
per request. aiohttp rather than httpx because this client is on every request's hot path, and httpx spends
several times aiohttp's CPU per request (benchmarks/results/upstream_client.md).

Retries only on connection errors (the request never reached the server, so repeating it is safe);
a timeout or an upstream error status is reported, not retried, to keep the tail latency honest.

Adapters are vLLM LoRA modules (`generator.adapters`: adapter name -> module name). `load_adapter`
(POST /admin/adapters) registers a new version on the vLLM server under a module name of its own
(services/llm/openai_adapters.py); a request uses the module current when it enters the backend, to its end.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from services.core.errors import ConfigError, GenerationError, GenerationTimeout, HybridError
from services.core.settings import OpenAIGeneratorSettings
from services.core.types import ChatMessage, GenerationParams, GenerationResult
from services.llm.backend_base import ConfiguredBackend, RawCounts, TokenLoop, finish_reason
from services.llm.openai_adapters import load_lora_module, versioned_module_name

logger = logging.getLogger(__name__)

# Without a tokenizer for the upstream model, budgets use the common ~4 characters per token estimate;
# reported usage always comes from the upstream's own counts.
CHARS_PER_TOKEN_ESTIMATE = 4
COMPLETIONS_PATH = "/chat/completions"
JSON_HEADERS = {"Content-Type": "application/json"}
# The longest line an upstream's SSE stream may send (aiohttp's default read buffer is 64 KiB).
MAX_LINE_BYTES = 1 << 20


class OpenAICompatibleGenerator(ConfiguredBackend):
    _settings: OpenAIGeneratorSettings  # this backend's own settings model

    @property
    def supports_response_format(self) -> bool:
        # vLLM and cloud APIs enforce `response_format` themselves (structured output / guided decoding).
        return True

    def __init__(self, settings: OpenAIGeneratorSettings) -> None:
        if not settings.base_url:
            raise ConfigError(f"generator {settings.name!r}: backend 'openai' needs base_url")
        super().__init__(settings)
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._url = str(settings.base_url).rstrip("/") + COMPLETIONS_PATH
        self._headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        # httpx's `timeout=` semantics: connecting and each read may take timeout_s, a whole stream longer.
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=settings.timeout_s, sock_read=settings.timeout_s
        )
        self._adapter_lock = threading.Lock()  # one settings update at a time
        self._loaded_modules: dict[str, Path] = {}  # module name -> folder, for modules load_adapter added

    def warm_up(self) -> None:
        # Nothing to load: the session is made on the first request, inside the event loop it belongs to.
        # Reachability is probed by readiness checks, not at start, so the gateway can come up before
        # its upstream does.
        return None

    def _require_session(self) -> aiohttp.ClientSession:
        """The session of the running event loop (a session and its pooled connections serve one loop)."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._session_loop is not loop or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=60),
                read_bufsize=MAX_LINE_BYTES,
                raise_for_status=False,
            )
            self._session_loop = loop
        return self._session

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // CHARS_PER_TOKEN_ESTIMATE)

    def render_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return sum(self.count_tokens(m.content) + 4 for m in messages)

    def _upstream_model(self, params: GenerationParams) -> str:
        if params.adapter is None:
            return self._settings.model
        self.check_adapter(params.adapter)
        # vLLM serves a LoRA module under its own name (`--lora-modules tuned=DIR`, or one load_adapter
        # registered). Read once per request: the request keeps this module whatever loads meanwhile.
        return self._settings.adapters[params.adapter]

    def load_adapter(self, name: str, folder: Path) -> None:
        """Register a new version of adapter `name` (a peft folder) on the vLLM server; requests that enter
        later use it, running ones finish on the module they started with. Blocking: call it off the loop.

        vLLM reads `folder` itself, so it must see it under the same path (same host or a shared volume).
        A vLLM restart forgets the module; the first request that finds it gone registers it again.
        """
        module, path = versioned_module_name(name, folder), folder.resolve()
        load_lora_module(self._settings, module, path)
        with self._adapter_lock:
            self._loaded_modules[module] = path
            adapters = {**self._settings.adapters, name: module}
            self._settings = self._settings.model_copy(update={"adapters": adapters})
        logger.info("adapter %r: %s loaded on vLLM as module %r", name, folder, module)

    def _request_args(self, messages: Sequence[ChatMessage], params: GenerationParams) -> dict[str, Any]:
        args: dict[str, Any] = {
            "model": self._upstream_model(params),
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.seed is not None:
            args["seed"] = params.seed
        if params.stop:
            args["stop"] = list(params.stop)
        if params.response_format is not None:
            args["response_format"] = params.response_format
        return args

    @asynccontextmanager
    async def _post(self, body: dict[str, Any]) -> AsyncIterator[aiohttp.ClientResponse]:
        """The upstream's response to `body` (its status checked, its body not read yet), with retries."""
        response = await self._send(body)
        folder = self._loaded_modules.get(body["model"])
        if response.status == 404 and folder is not None:
            # A restarted vLLM forgets modules registered at run time: register it again, then retry once.
            response.release()
            await self._register_again(body["model"], folder)
            response = await self._send(body)
        try:
            if response.status >= 400:
                message = _error_message(await response.read())
                raise GenerationError(f"{self.name}: upstream answered {response.status}: {message}")
            yield response
        except TimeoutError as exc:  # aiohttp's read timeouts are TimeoutError subclasses
            raise GenerationTimeout(
                f"{self.name}: upstream did not answer within {self._settings.timeout_s}s"
            ) from exc
        except aiohttp.ClientError as exc:
            raise GenerationError(f"{self.name}: upstream response failed: {exc!r}") from exc
        finally:
            response.release()

    async def _send(self, body: dict[str, Any]) -> aiohttp.ClientResponse:
        """POST `body`, retrying connection errors only (the request never reached the server)."""
        session = self._require_session()
        data = json.dumps(body).encode("utf-8")
        attempt = 0
        while True:
            try:
                return await session.post(self._url, data=data, headers=JSON_HEADERS)
            except TimeoutError as exc:
                raise GenerationTimeout(
                    f"{self.name}: upstream did not answer within {self._settings.timeout_s}s"
                ) from exc
            except aiohttp.ClientConnectorError as exc:
                if attempt >= self._settings.max_retries:
                    raise GenerationError(
                        f"{self.name}: cannot reach upstream at {self._settings.base_url}: {exc}"
                    ) from exc
                attempt += 1
                await asyncio.sleep(0.1 * 2**attempt)
            except aiohttp.ClientError as exc:
                raise GenerationError(f"{self.name}: upstream request failed: {exc!r}") from exc

    async def _register_again(self, module: str, folder: Path) -> None:
        try:
            await asyncio.to_thread(load_lora_module, self._settings, module, folder)
        except HybridError as exc:
            raise GenerationError(f"{self.name}: vLLM lost adapter module {module!r}: {exc.message}") from exc
        logger.warning("adapter module %r was gone from vLLM (restarted?): registered it again", module)

    async def complete(self, messages: Sequence[ChatMessage], params: GenerationParams) -> GenerationResult:
        body = self._request_args(messages, params)
        async with self._slots.acquire():
            started = time.perf_counter()
            async with self._post(body) as response:
                payload = _json_object(await response.read(), self.name)
            busy = time.perf_counter() - started
        choices = payload.get("choices") or []
        if not choices:
            raise GenerationError(f"{self.name}: upstream returned no choices")
        choice = choices[0]
        text = (choice.get("message") or {}).get("content") or ""
        usage = payload.get("usage") or {}
        return GenerationResult(
            text=text,
            prompt_tokens=int(usage.get("prompt_tokens", self.render_prompt_tokens(messages))),
            completion_tokens=int(usage.get("completion_tokens", self.count_tokens(text))),
            cached_prompt_tokens=_cached_prompt_tokens(usage) or 0,
            finish_reason=finish_reason(
                ended_by_model=choice.get("finish_reason") != "length", stopped_by_string=False
            ),
            backend=self.name,
            ttft_s=busy,  # non-streaming: the first token arrives with the last
            busy_s=busy,
        )

    def _token_loop(self, messages: Sequence[ChatMessage], params: GenerationParams) -> TokenLoop:
        body = self._request_args(messages, params)
        body.update(stream=True, stream_options={"include_usage": True})
        counts = RawCounts()
        return TokenLoop(self._upstream_pieces(body, counts), lambda: counts)

    async def _upstream_pieces(self, body: dict[str, Any], counts: RawCounts) -> AsyncGenerator[str, None]:
        """The upstream's streamed text; it honours `stop` itself, the template's matcher guards the rest."""
        finish: str | None = None
        async with self._post(body) as response:
            async for line in response.content:
                if not line.startswith(b"data:"):
                    continue  # blank separators, comments, `event:` lines
                data = line[5:].strip()
                if data == b"[DONE]":
                    break
                chunk = _json_object(data, self.name)
                if "error" in chunk:
                    raise GenerationError(f"{self.name}: upstream stream failed: {_message_of(chunk)}")
                usage = chunk.get("usage")
                if usage:
                    counts.prompt_tokens = int(usage["prompt_tokens"])
                    counts.completion_tokens = int(usage["completion_tokens"])
                    counts.cached_prompt_tokens = _cached_prompt_tokens(usage)
                choices = chunk.get("choices") or []
                if not choices:
                    continue
                choice = choices[0]
                content = (choice.get("delta") or {}).get("content")
                if content:
                    yield content
                if choice.get("finish_reason") is not None:
                    finish = choice["finish_reason"]
        if finish is None:
            raise GenerationError(f"{self.name}: upstream stream ended without a finish reason")
        counts.ended_by_model = finish != "length"

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and self._session_loop is asyncio.get_running_loop():
            await session.close()


def _json_object(raw: bytes, backend: str) -> dict[str, Any]:
    try:
        payload = json.loads(raw)
    except ValueError as exc:
        raise GenerationError(f"{backend}: upstream sent invalid JSON: {raw[:200]!r}") from exc
    if not isinstance(payload, dict):
        raise GenerationError(f"{backend}: upstream sent {type(payload).__name__}, not a JSON object")
    return payload


def _message_of(payload: dict[str, Any]) -> str:
    error = payload.get("error")
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return str(error or payload)


def _error_message(raw: bytes) -> str:
    """The OpenAI error object's message when the body is one, else the body's start."""
    text = raw.decode("utf-8", errors="replace")
    try:
        payload = json.loads(text)
    except ValueError:
        return text[:200]
    return _message_of(payload) if isinstance(payload, dict) else text[:200]


def _cached_prompt_tokens(usage: dict[str, Any]) -> int | None:
    """`usage.prompt_tokens_details.cached_tokens` when the upstream reports it (vLLM, OpenAI), else None."""
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return int(cached) if cached is not None else None
