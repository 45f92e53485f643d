"""`hybrid`: a LoRA-tuned intent classifier picks, per request, prompt | rag | refusal.

`out_of_scope` is answered by the refusal template without a generator call; low confidence goes to
the policy's fallback target (default `rag`: when unsure, ground).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Protocol

from services.core.errors import ConfigError
from services.core.protocols import IntentClassifier
from services.core.types import IntentPrediction, RouteDecision
from services.llm.prompts import PromptLibrary
from services.pipelines.base import Pipeline, PipelineRequest, Plan, RequestTrace

REFUSE = "refuse"


class RoutingPolicyLike(Protocol):
    def decide(self, prediction: IntentPrediction) -> RouteDecision: ...


class HybridPipeline:
    def __init__(
        self,
        classifier: IntentClassifier,
        policy: RoutingPolicyLike,
        targets: Mapping[str, Pipeline],
        prompts: PromptLibrary,
    ) -> None:
        self._classifier = classifier
        self._policy = policy
        self._targets = dict(targets)
        self._prompts = prompts

    @property
    def name(self) -> str:
        return "hybrid"

    @property
    def description(self) -> str:
        return "LoRA-tuned intent router -> prompt | rag | refusal"

    async def plan(self, request: PipelineRequest, trace: RequestTrace) -> Plan:
        text = request.last_user_text
        with trace.stage("route"):
            # A few milliseconds of ONNX Runtime: cheaper inline than a thread hop.
            prediction = self._classifier.predict(text)
            decision = self._policy.decide(prediction)
        trace.route = decision
        if decision.target == REFUSE:
            trace.template = self._prompts.ref("refusal")
            return Plan(fixed_answer=self._prompts.render_block("refusal", "answer"))
        target = self._targets.get(decision.target)
        if target is None:
            raise ConfigError(
                f"router target {decision.target!r} is not a configured pipeline "
                f"(configured: {sorted(self._targets)})"
            )
        await asyncio.sleep(0)  # let other requests in between routing and the downstream pipeline
        return await target.plan(request, trace)
