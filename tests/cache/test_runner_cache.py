"""The cache in the runner, with fakes: what is stored, what is replayed, and what never is."""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.cache.service import ResponseCache
from services.cache.store import MemoryStore
from services.core.cost import CostLedger
from services.core.settings import PriceCard
from services.core.types import ChatMessage, GenerationParams
from services.llm.prompts import PromptLibrary
from services.pipelines.base import (
    CheckAction,
    CheckedAnswer,
    PipelineRequest,
    Plan,
    RequestTrace,
)
from services.pipelines.privacy_guard import PrivacyGuard
from services.pipelines.prompt import PromptPipeline
from services.pipelines.runner import PipelineRunner
from services.privacy import PrivacyGate, PrivacySettings
from tests.pipelines.fakes import ScriptedGenerator
from tests.pipelines.test_runner import _run

pytestmark = pytest.mark.unit

PROMPTS = PromptLibrary()
PRICES = PriceCard(self_hosted_hour_usd={"fake": 3.6, "backup": 3.6})
ANSWER = "You get twenty five vacation days per calendar year, plus public holidays."


def request(text: str = "How many vacation days do I get?", temperature: float = 0.0) -> PipelineRequest:
    params = GenerationParams(temperature=temperature)
    return PipelineRequest(messages=(ChatMessage("user", text),), params=params, request_id="r")


def runner_with(generator: ScriptedGenerator, **options: object) -> PipelineRunner:
    cache = ResponseCache(MemoryStore(ttl_s=60, max_entries=10), mode="exact")
    guard = PrivacyGuard(PrivacyGate(PrivacySettings()), internal=None)
    return PipelineRunner(CostLedger(PRICES), primary=generator, guard=guard, cache=cache, **options)  # type: ignore[arg-type]


async def test_a_clean_answer_is_stored_then_replayed_in_pieces_with_its_counts_and_saving() -> None:
    generator = ScriptedGenerator(ANSWER)
    runner = runner_with(generator)
    pipeline = PromptPipeline(generator, PROMPTS, "sys")
    _, first, first_trace = await _run(runner, pipeline, request())
    assert first_trace.cache is not None and first_trace.cache.result == "miss"
    assert first_trace.cache.reason is None  # stored
    pieces, replay, trace = await _run(runner, pipeline, request("  how many VACATION days do i get?"))
    assert len(generator.received) == 1
    assert trace.cache is not None and trace.cache.result == "hit_exact"
    assert "".join(pieces) == ANSWER and len(pieces) > 1
    assert (replay.text, replay.finish_reason) == (ANSWER, "stop")
    assert (replay.prompt_tokens, replay.completion_tokens) == (first.prompt_tokens, first.completion_tokens)
    assert "generate" not in replay.cost_usd and not replay.generated
    assert trace.cache.saved_usd == pytest.approx(first.cost_usd["generate"])
    assert "cache" in trace.timings.ms
    whole_trace = RequestTrace(pipeline="prompt")
    whole = await runner.complete(pipeline, request(), whole_trace)
    assert whole.text == ANSWER and whole_trace.cache is not None and whole_trace.cache.result == "hit_exact"


async def test_a_truncated_answer_is_not_stored() -> None:
    generator = ScriptedGenerator(ANSWER)
    runner = runner_with(generator)
    pipeline = PromptPipeline(generator, PROMPTS, "sys")

    async def truncated(messages: object, params: object) -> object:
        async for delta in ScriptedGenerator.stream(generator, messages, params):  # type: ignore[arg-type]
            yield replace(delta, finish_reason="length") if delta.finish_reason else delta

    generator.stream = truncated  # type: ignore[method-assign,assignment]
    _, _, trace = await _run(runner, pipeline, request())
    assert trace.cache is not None and trace.cache.reason == "truncated"
    await _run(runner, pipeline, request())
    assert len(generator.received) == 2


async def test_privacy_findings_in_the_input_bypass_and_in_the_output_are_not_stored() -> None:
    generator = ScriptedGenerator("Use the key AKIAIOSFODNN7EXAMPLE to sign in.")
    runner = runner_with(generator)
    pipeline = PromptPipeline(generator, PROMPTS, "sys")
    _, outcome, trace = await _run(runner, pipeline, request("Which key do I use?"))
    assert "AKIAIOSFODNN7EXAMPLE" not in outcome.text  # redacted on the way out
    assert trace.cache is not None and trace.cache.reason == "privacy_output"
    _, _, trace = await _run(runner, pipeline, request("Write to maria.silva@example.org about it"))
    assert trace.cache is not None and (trace.cache.result, trace.cache.reason) == ("bypass", "privacy")
    await _run(runner, pipeline, request("Which key do I use?"))
    assert len(generator.received) == 3


async def test_sampled_requests_bypass_and_fallback_answers_are_not_stored() -> None:
    generator = ScriptedGenerator(ANSWER)
    runner = runner_with(generator)
    pipeline = PromptPipeline(generator, PROMPTS, "sys")
    _, _, trace = await _run(runner, pipeline, request(temperature=0.7))
    assert trace.cache is not None and (trace.cache.result, trace.cache.reason) == ("bypass", "sampled")

    failing = ScriptedGenerator(ANSWER, fail_before_first=True)
    backup = ScriptedGenerator(ANSWER, name="backup")
    runner = runner_with(failing, fallback=backup)
    _, _, trace = await _run(runner, PromptPipeline(failing, PROMPTS, "sys"), request())
    assert trace.fallback is not None
    assert trace.cache is not None and trace.cache.reason == "fallback"


class FixedCheck:
    """An answer check that reports `action` without replacing the answer."""

    def __init__(self, action: CheckAction, score: float) -> None:
        self.action, self.score = action, score

    @property
    def may_replace(self) -> bool:
        return False

    def check(self, answer: str) -> CheckedAnswer:
        report = {"score": self.score, "unsupported": [], "abstained": False, "threshold": 0.6,
                  "action": self.action}  # fmt: skip
        return CheckedAnswer(answer, report)  # type: ignore[arg-type]


class CheckedPipeline:
    name = "rag"
    description = "a generation with a fixed answer check"

    def __init__(self, generator: ScriptedGenerator, check: FixedCheck) -> None:
        self._generator, self._check = generator, check

    async def plan(self, req: PipelineRequest, trace: RequestTrace) -> Plan:
        return Plan(
            messages=req.messages, params=req.params, generator=self._generator, answer_check=self._check
        )


@pytest.mark.parametrize(
    ("action", "score", "stored"),
    [("pass", 0.9, True), ("pass", 0.3, False), ("flag", 0.3, False), ("abstain", 0.0, False)],
)
async def test_only_grounded_answers_are_stored(action: CheckAction, score: float, stored: bool) -> None:
    generator = ScriptedGenerator(ANSWER)
    runner = runner_with(generator)
    _, _, trace = await _run(runner, CheckedPipeline(generator, FixedCheck(action, score)), request())
    assert trace.cache is not None and (trace.cache.reason is None) == stored
    if not stored:
        assert trace.cache.reason == "ungrounded"


async def test_fixed_answers_bypass_the_cache() -> None:
    class Refusing:
        name = "prompt"
        description = "always refuses"

        async def plan(self, req: PipelineRequest, trace: RequestTrace) -> Plan:
            return Plan(fixed_answer="I can only help with questions about Larkspur.")

    _, _, trace = await _run(runner_with(ScriptedGenerator()), Refusing(), request())
    assert trace.cache is not None and (trace.cache.result, trace.cache.reason) == ("bypass", "fixed_answer")
