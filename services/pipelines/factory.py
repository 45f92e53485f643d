"""Builds the generators and pipelines that settings name. The only place that knows concrete classes.

A pipeline is offered only when everything it needs loaded: `rag` needs an index, `hybrid` needs the
router model and `rag`, `tuned` needs an adapter. What is missing is kept as a reason for /readyz.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from services.cache.build import build_response_cache
from services.cache.service import ResponseCache, StoreFailureHook
from services.core.cost import CostLedger
from services.core.errors import ConfigError, HybridError
from services.core.protocols import Embedder, Generator, IntentClassifier
from services.core.settings import GeneratorSettings, Settings
from services.llm.circuit import CircuitBreaker, CircuitBreakerGenerator, StateListener
from services.llm.prompts import PromptLibrary
from services.pipelines.base import Pipeline
from services.pipelines.hybrid import HybridPipeline
from services.pipelines.privacy_guard import PrivacyGuard
from services.pipelines.prompt import PromptPipeline
from services.pipelines.rag import GroundingOptions, RagPipeline
from services.pipelines.retrieval_policy import RetrievalFailurePolicy
from services.pipelines.runner import FallbackHook, PipelineRunner
from services.privacy import PrivacyGate
from services.rag.embedder import build_query_embedder
from services.rag.service import RetrievalService
from services.router.build import build_router

logger = logging.getLogger(__name__)

TUNED_ADAPTER = "tuned"


def build_generator(settings: GeneratorSettings, data_dir: Path) -> Generator:
    if settings.backend == "transformers":
        from services.llm.transformers_backend import TransformersGenerator

        return TransformersGenerator(settings, data_dir)
    if settings.backend == "onnx":
        from services.llm.onnx_backend import OnnxGenerator

        return OnnxGenerator(settings, data_dir)
    from services.llm.openai_backend import OpenAICompatibleGenerator

    return OpenAICompatibleGenerator(settings)


@dataclass
class ServiceComponents:
    settings: Settings
    primary: Generator
    fallback: Generator | None
    prompts: PromptLibrary
    pipelines: dict[str, Pipeline]
    runner: PipelineRunner
    retriever: RetrievalService | None = None
    classifier: IntentClassifier | None = None
    unavailable: dict[str, str] = field(default_factory=dict)
    cache: ResponseCache | None = None


def build_components(
    settings: Settings,
    *,
    on_fallback: FallbackHook | None = None,
    on_circuit_change: StateListener | None = None,
    on_cache_store_failure: StoreFailureHook | None = None,
) -> ServiceComponents:
    """Create and warm up everything. Blocking (loads models): call from a thread at start-up."""
    prompts = PromptLibrary(settings.prompts.templates_dir, settings.project.template_variables())
    primary, fallback = _build_generators(settings, on_circuit_change)
    internal = next((g for g in (primary, fallback) if g is not None and g.trust == "internal"), None)
    guard = PrivacyGuard(PrivacyGate(settings.privacy), internal=internal)
    system_prompt = settings.prompts.system_prompt
    pipelines: dict[str, Pipeline] = {"prompt": PromptPipeline(primary, prompts, system_prompt)}
    unavailable: dict[str, str] = {}

    if TUNED_ADAPTER in primary.adapters:
        pipelines["tuned"] = PromptPipeline(
            primary, prompts, system_prompt, name="tuned", template="tuned", adapter=TUNED_ADAPTER
        )
    else:
        unavailable["tuned"] = f"no '{TUNED_ADAPTER}' adapter configured (generator.adapters)"

    retriever: RetrievalService | None = None
    # One query embedder for retrieval and the semantic cache; built here, loaded by whichever needs it.
    embedder = build_query_embedder(settings.rag)
    try:
        retriever, rag = _build_rag(settings, primary, prompts, guard, embedder)
        pipelines["rag"] = RetrievalFailurePolicy(rag, pipelines["prompt"], settings.rag.on_failure)
    except HybridError as exc:
        unavailable["rag"] = exc.message
        logger.warning("rag pipeline unavailable: %s", exc.message)

    classifier: IntentClassifier | None = None
    if "rag" in pipelines:
        try:
            router = build_router(settings.router)
            classifier = router.classifier
            pipelines["hybrid"] = HybridPipeline(classifier, router.policy, pipelines, prompts)
        except (HybridError, OSError) as exc:
            unavailable["hybrid"] = str(exc)
            logger.warning("hybrid pipeline unavailable: %s", exc)
    else:
        unavailable["hybrid"] = "needs the rag pipeline"

    if settings.default_pipeline not in pipelines and settings.default_pipeline not in unavailable:
        raise ConfigError(f"default_pipeline {settings.default_pipeline!r} is not a pipeline name")
    cache = build_response_cache(settings, lambda: _warm(embedder), on_store_failure=on_cache_store_failure)
    runner = PipelineRunner(
        CostLedger(settings.prices),
        primary=primary,
        fallback=fallback,
        guard=guard,
        on_fallback=on_fallback,
        cache=cache,
    )
    return ServiceComponents(
        settings=settings,
        primary=primary,
        fallback=fallback,
        prompts=prompts,
        pipelines=pipelines,
        runner=runner,
        retriever=retriever,
        classifier=classifier,
        unavailable=unavailable,
        cache=cache,
    )


def _warm(embedder: Embedder) -> Embedder:
    embedder.warm_up()
    return embedder


def _build_generators(
    settings: Settings, on_circuit_change: StateListener | None
) -> tuple[Generator, Generator | None]:
    """The primary generator (behind a circuit breaker when there is a fallback) and the fallback, warm."""
    primary = build_generator(settings.generator, settings.data_dir)
    primary.warm_up()
    if settings.fallback_generator is None:
        return primary, None
    fallback = build_generator(settings.fallback_generator, settings.data_dir)
    fallback.warm_up()
    if settings.circuit.enabled:
        # With somewhere else to go, a failing primary is skipped instead of waited on each time.
        circuit = settings.circuit
        breaker = CircuitBreaker(
            primary.name,
            failure_threshold=circuit.failure_threshold,
            window_s=circuit.window_s,
            cooldown_s=circuit.cooldown_s,
            on_change=on_circuit_change,
        )
        primary = CircuitBreakerGenerator(primary, breaker)
    return primary, fallback


def _build_rag(
    settings: Settings, generator: Generator, prompts: PromptLibrary, guard: PrivacyGuard, embedder: Embedder
) -> tuple[RetrievalService, RagPipeline]:
    """The retrieval service over the current index version (warm), and the rag pipeline on it."""
    retriever = RetrievalService(settings.rag, embedder)
    retriever.warm_up()
    rag = settings.rag
    pipeline = RagPipeline(
        generator,
        retriever,
        prompts,
        settings.prompts.system_prompt,
        options=GroundingOptions(
            context=rag.context.mode,
            evidence_candidates=rag.evidence.candidates,
            unsupported_answer=rag.grounding.unsupported_answer,
            groundedness_threshold=rag.grounding.threshold,
            quote_units=rag.grounding.extract_quote_units,
            adapter=rag.adapter,
        ),
        answer_when_irrelevant=rag.relevance.no_answer == "generate",
        context_filter=guard.filter_context,
    )
    return retriever, pipeline
