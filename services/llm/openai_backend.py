"""Any OpenAI-compatible server as a generator: vLLM (GPU or CPU build), llama.cpp's server, a cloud API.

Retries only on connection errors (the request never reached the server, so repeating it is safe);
a timeout or an upstream error status is reported, not retried, to keep the tail latency honest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import openai
from openai import AsyncOpenAI

from services.core.errors import ConfigError, GenerationError, GenerationTimeout
from services.core.settings import GeneratorSettings
from services.core.types import ChatMessage, GenerationParams, GenerationResult, TokenDelta
from services.llm.backend_base import ConfiguredBackend
from services.llm.stop_strings import StopStringMatcher

logger = logging.getLogger(__name__)

# Without a tokenizer for the upstream model, budgets use the common ~4 characters per token estimate;
# reported usage always comes from the upstream's own counts.
CHARS_PER_TOKEN_ESTIMATE = 4


class OpenAICompatibleGenerator(ConfiguredBackend):
    # vLLM and cloud APIs enforce `response_format` themselves (structured output / guided decoding).
    supports_response_format = True

    def __init__(self, settings: GeneratorSettings) -> None:
        if not settings.base_url:
            raise ConfigError(f"generator {settings.name!r}: backend 'openai' needs base_url")
        super().__init__(settings)
        self._client: AsyncOpenAI | None = None

    def warm_up(self) -> None:
        # The client is cheap; reachability is probed by readiness checks, not at start, so the gateway
        # can come up before its upstream does.
        self._client = AsyncOpenAI(
            base_url=self._settings.base_url,
            api_key=self._settings.api_key or "not-needed",
            timeout=self._settings.timeout_s,
            max_retries=0,
        )

    def _require_client(self) -> AsyncOpenAI:
        if self._client is None:
            self.warm_up()
        assert self._client is not None
        return self._client

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // CHARS_PER_TOKEN_ESTIMATE)

    def render_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return sum(self.count_tokens(m.content) + 4 for m in messages)

    def _upstream_model(self, params: GenerationParams) -> str:
        if params.adapter is None:
            return self._settings.model
        self.check_adapter(params.adapter)
        # vLLM serves a LoRA module under its own name (`--lora-modules tuned=DIR`).
        return self._settings.adapters[params.adapter]

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

    async def _with_retries(self, call: Any) -> Any:
        attempt = 0
        while True:
            try:
                return await call()
            except openai.APITimeoutError as exc:
                raise GenerationTimeout(
                    f"{self.name}: upstream did not answer within {self._settings.timeout_s}s"
                ) from exc
            except openai.APIConnectionError as exc:
                if attempt >= self._settings.max_retries:
                    raise GenerationError(
                        f"{self.name}: cannot reach upstream at {self._settings.base_url}: {exc}"
                    ) from exc
                attempt += 1
                await asyncio.sleep(0.1 * 2**attempt)
            except openai.APIStatusError as exc:
                raise GenerationError(
                    f"{self.name}: upstream answered {exc.status_code}: {exc.message}"
                ) from exc

    async def complete(self, messages: Sequence[ChatMessage], params: GenerationParams) -> GenerationResult:
        client = self._require_client()
        args = self._request_args(messages, params)
        async with self._slots.acquire():
            started = time.perf_counter()
            response = await self._with_retries(lambda: client.chat.completions.create(**args))
            busy = time.perf_counter() - started
        if not response.choices:
            raise GenerationError(f"{self.name}: upstream returned no choices")
        choice = response.choices[0]
        text = choice.message.content or ""
        usage = response.usage
        return GenerationResult(
            text=text,
            prompt_tokens=usage.prompt_tokens if usage else self.render_prompt_tokens(messages),
            completion_tokens=usage.completion_tokens if usage else self.count_tokens(text),
            finish_reason="length" if choice.finish_reason == "length" else "stop",
            backend=self.name,
            ttft_s=busy,  # non-streaming: the first token arrives with the last
            busy_s=busy,
        )

    async def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[TokenDelta]:
        client = self._require_client()
        args = self._request_args(messages, params)
        args.update(stream=True, stream_options={"include_usage": True})
        async with self._slots.acquire():
            started = time.perf_counter()
            upstream = await self._with_retries(lambda: client.chat.completions.create(**args))
            ttft: float | None = None
            finish: str | None = None
            prompt_tokens: int | None = None
            completion_tokens: int | None = None
            # Upstreams honour `stop` themselves; the matcher is a guard for ones that do not.
            matcher = StopStringMatcher(params.stop)
            parts: list[str] = []
            try:
                async for chunk in upstream:
                    if chunk.usage is not None:
                        prompt_tokens = chunk.usage.prompt_tokens
                        completion_tokens = chunk.usage.completion_tokens
                    if not chunk.choices:
                        continue
                    choice = chunk.choices[0]
                    piece = choice.delta.content or ""
                    if piece:
                        if ttft is None:
                            ttft = time.perf_counter() - started
                        text, stopped = matcher.feed(piece)
                        if text:
                            parts.append(text)
                            yield TokenDelta(text=text)
                        if stopped:
                            finish = "stop"
                    if choice.finish_reason is not None:
                        finish = choice.finish_reason
            except openai.APIError as exc:
                raise GenerationError(f"{self.name}: upstream stream failed: {exc}") from exc
            finally:
                await upstream.close()
            if finish is None:
                raise GenerationError(f"{self.name}: upstream stream ended without a finish reason")
            tail = matcher.flush()
            if tail:
                parts.append(tail)
                yield TokenDelta(text=tail)
            busy = time.perf_counter() - started
            yield TokenDelta(
                text="",
                finish_reason="length" if finish == "length" else "stop",
                prompt_tokens=prompt_tokens
                if prompt_tokens is not None
                else self.render_prompt_tokens(messages),
                completion_tokens=completion_tokens
                if completion_tokens is not None
                else self.count_tokens("".join(parts)),
                ttft_s=ttft if ttft is not None else busy,
                busy_s=busy,
            )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
