"""Test doubles implementing the core protocols, for unit tests of pipelines and the runner."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from services.core.errors import GenerationError
from services.core.types import ChatMessage, GenerationParams, GenerationResult, TokenDelta, Trust
from services.llm.streaming import collect_stream


class ScriptedGenerator:
    """Streams a fixed answer word by word; can fail before or after its first token. Records prompts."""

    def __init__(
        self,
        answer: str = "hello there friend",
        *,
        name: str = "fake",
        trust: Trust = "internal",
        fail_before_first: bool = False,
        fail_after_first: bool = False,
        cached_prompt_tokens: int | None = None,
    ) -> None:
        self.answer = answer
        self.cached_prompt_tokens = cached_prompt_tokens  # what the final delta reports, as a KV cache would
        self._name = name
        self._trust = trust
        self.fail_before_first = fail_before_first
        self.fail_after_first = fail_after_first
        self.received: list[tuple[ChatMessage, ...]] = []
        self.received_params: list[GenerationParams] = []

    @property
    def name(self) -> str:
        return self._name

    @property
    def trust(self) -> Trust:
        return self._trust

    @property
    def adapters(self) -> Sequence[str]:
        return ()

    def warm_up(self) -> None:
        pass

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def render_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return sum(self.count_tokens(m.content) for m in messages)

    async def complete(self, messages: Sequence[ChatMessage], params: GenerationParams) -> GenerationResult:
        return await collect_stream(self.stream(messages, params), backend=self.name)

    async def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[TokenDelta]:
        self.received.append(tuple(messages))
        self.received_params.append(params)
        if self.fail_before_first:
            raise GenerationError(f"{self.name}: connection refused")
        words = self.answer.split(" ")
        for i, word in enumerate(words):
            yield TokenDelta(text=word if i == 0 else " " + word)
            if self.fail_after_first:
                raise GenerationError(f"{self.name}: died mid-stream")
        yield TokenDelta(
            text="",
            finish_reason="stop",
            prompt_tokens=self.render_prompt_tokens(messages),
            completion_tokens=len(words),
            cached_prompt_tokens=self.cached_prompt_tokens,
            ttft_s=0.001,
            busy_s=0.01,
        )

    async def aclose(self) -> None:
        pass
