"""Any OpenAI-compatible server as a generator: vLLM (GPU or CPU build), llama.cpp's server, a cloud API.

Retries only on connection errors (the request never reached the server, so repeating it is safe);
a timeout or an upstream error status is reported, not retried, to keep the tail latency honest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import openai
from openai import AsyncOpenAI

from services.core.errors import ConfigError, GenerationError, GenerationTimeout
from services.core.settings import OpenAIGeneratorSettings
from services.core.types import ChatMessage, GenerationParams, GenerationResult
from services.llm.backend_base import ConfiguredBackend, RawCounts, TokenLoop, finish_reason

logger = logging.getLogger(__name__)

# Without a tokenizer for the upstream model, budgets use the common ~4 characters per token estimate;
# reported usage always comes from the upstream's own counts.
CHARS_PER_TOKEN_ESTIMATE = 4


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
            finish_reason=finish_reason(
                ended_by_model=choice.finish_reason != "length", stopped_by_string=False
            ),
            backend=self.name,
            ttft_s=busy,  # non-streaming: the first token arrives with the last
            busy_s=busy,
        )

    def _token_loop(self, messages: Sequence[ChatMessage], params: GenerationParams) -> TokenLoop:
        args = self._request_args(messages, params)
        args.update(stream=True, stream_options={"include_usage": True})
        counts = RawCounts()
        return TokenLoop(self._upstream_pieces(args, counts), lambda: counts)

    async def _upstream_pieces(self, args: dict[str, Any], counts: RawCounts) -> AsyncGenerator[str, None]:
        """The upstream's streamed text; it honours `stop` itself, the template's matcher guards the rest."""
        client = self._require_client()
        upstream = await self._with_retries(lambda: client.chat.completions.create(**args))
        finish: str | None = None
        try:
            async for chunk in upstream:
                if chunk.usage is not None:
                    counts.prompt_tokens = chunk.usage.prompt_tokens
                    counts.completion_tokens = chunk.usage.completion_tokens
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                if choice.delta.content:
                    yield choice.delta.content
                if choice.finish_reason is not None:
                    finish = choice.finish_reason
        except openai.APIError as exc:
            raise GenerationError(f"{self.name}: upstream stream failed: {exc}") from exc
        finally:
            await upstream.close()
        if finish is None:
            raise GenerationError(f"{self.name}: upstream stream ended without a finish reason")
        counts.ended_by_model = finish != "length"

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
