"""`prompt` and `tuned`: a prompt template, then one generator call. `tuned` adds a LoRA adapter."""

from __future__ import annotations

from dataclasses import replace

from services.core.protocols import Generator
from services.core.types import ChatMessage
from services.llm.prompts import PromptLibrary
from services.pipelines.base import PipelineRequest, Plan, RequestTrace


def with_system_prompt(system: str, messages: tuple[ChatMessage, ...]) -> tuple[ChatMessage, ...]:
    """The operator's system prompt comes first; a client's own system messages follow it."""
    return (ChatMessage(role="system", content=system), *messages)


class PromptPipeline:
    def __init__(
        self,
        generator: Generator,
        prompts: PromptLibrary,
        system_prompt: str,
        *,
        name: str = "prompt",
        template: str = "direct",
        adapter: str | None = None,
    ) -> None:
        self._generator = generator
        self._prompts = prompts
        self._system_prompt = system_prompt
        self._name = name
        self._template = template
        self._adapter = adapter

    @property
    def name(self) -> str:
        return self._name

    @property
    def description(self) -> str:
        if self._adapter:
            return f"prompt template '{self._template}' -> generator with LoRA adapter '{self._adapter}'"
        return f"prompt template '{self._template}' -> generator (one inference call)"

    @property
    def adapter(self) -> str | None:
        return self._adapter

    async def plan(self, request: PipelineRequest, trace: RequestTrace) -> Plan:
        trace.template = self._prompts.ref(self._template)
        system = self._prompts.render_block(self._template, "system", system_prompt=self._system_prompt)
        params = request.params
        if self._adapter is not None:
            params = replace(params, adapter=self._adapter)
            trace.adapter = self._adapter
        return Plan(
            messages=with_system_prompt(system, request.messages),
            params=params,
            generator=self._generator,
        )
