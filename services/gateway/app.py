"""FastAPI app factory. Models load in the lifespan (off the event loop); routes only read app.state."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.routing import Route

from services.core.errors import HybridError
from services.core.protocols import AdapterLoader, generation_queue
from services.core.settings import Settings
from services.gateway.adapter_versions import AdapterVersionStore, AdapterVersionSync, versions_dir
from services.gateway.auth import KeyChecker
from services.gateway.body_limit import BodyLimitMiddleware
from services.gateway.draining import drain_on_stop_signals
from services.gateway.errors import install_error_handlers
from services.gateway.limits import RateLimitMiddleware, build_limiter
from services.gateway.metrics import ServiceMetrics, claim_multiprocess_dir, multiprocess_enabled
from services.gateway.middleware import GatewayMiddleware
from services.gateway.openapi import install_openapi
from services.gateway.routes import admin, chat, health, models, retrieve
from services.gateway.state import GatewayState
from services.gateway.tracing import RequestTracer, tracer_from_settings
from services.llm.circuit import CircuitState
from services.pipelines.factory import ServiceComponents, build_components

logger = logging.getLogger(__name__)


ComponentsBuilder = Callable[[Settings, ServiceMetrics], ServiceComponents]


def default_builder(settings: Settings, metrics: ServiceMetrics) -> ServiceComponents:
    def count_fallback(from_backend: str, to_backend: str) -> None:
        metrics.fallbacks.labels(from_backend=from_backend, to_backend=to_backend).inc()

    def show_circuit(backend: str, state: CircuitState) -> None:
        metrics.circuit_state.labels(backend=backend).set(int(state))

    def count_cache_failure(operation: str) -> None:
        metrics.cache_store_failures.labels(operation=operation).inc()

    return build_components(
        settings,
        on_fallback=count_fallback,
        on_circuit_change=show_circuit,
        on_cache_store_failure=count_cache_failure,
    )


def _observe_queue_wait(components: ServiceComponents, metrics: ServiceMetrics) -> None:
    """Backends with generation slots report each request's wait for one (hybrid_queue_wait_seconds)."""
    for generator in (components.primary, components.fallback):
        slots = generation_queue(generator) if generator is not None else None
        if generator is not None and slots is not None:
            slots.on_wait = metrics.queue_wait.labels(backend=generator.name).observe


async def _watch_index(state: GatewayState, interval_s: float) -> None:
    """Pick up new index versions written by `hybridllm ingest` without a restart."""
    while True:
        await asyncio.sleep(interval_s)
        components = state.components
        if components is None or components.retriever is None:
            continue
        try:
            await asyncio.to_thread(components.retriever.reload_if_changed)
            admin.refresh_index_metrics(state)
        except Exception:  # a bad new version is logged by the service; keep watching
            logger.exception("index reload check failed")


def freeze_startup_objects() -> None:
    """Move everything loaded at start-up (models, tokenizers, indexes, imported modules) out of the cyclic
    collector's reach: it lives as long as the process, and a full collection that walks it pauses the
    event loop for tens of milliseconds, on some request's latency. Refcounting still frees it."""
    gc.collect()
    gc.freeze()


def create_app(
    settings: Settings, *, builder: ComponentsBuilder = default_builder, tracer: RequestTracer | None = None
) -> FastAPI:
    """`tracer` replaces the one `observability.otel_*` describes (tests pass an in-memory exporter's)."""
    if multiprocess_enabled():
        # Before the first metric exists: a new server starts its counters from zero, not from the last run.
        server_pid = os.getppid() if settings.server.workers > 1 else os.getpid()
        claim_multiprocess_dir(Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]), server_pid)
    metrics = ServiceMetrics()
    metrics.tracer = tracer if tracer is not None else tracer_from_settings(settings.observability)
    state = GatewayState(settings=settings, metrics=metrics, auth=KeyChecker(settings.auth))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            components = await asyncio.to_thread(builder, settings, metrics)
        except HybridError as exc:
            state.startup_error = exc.message
            logger.error("start-up failed: %s", exc.message)
            raise
        state.components = components
        _observe_queue_wait(components, metrics)
        router = settings.router
        metrics.initialise_labels(
            components.pipelines,
            [(g.name, g.trust) for g in (components.primary, components.fallback) if g is not None],
            route_targets={*router.targets.values(), router.low_confidence_target}
            if components.classifier is not None
            else (),
            privacy_kinds=settings.privacy.detectors if settings.privacy.enabled else (),
        )
        admin.refresh_index_metrics(state)
        freeze_startup_objects()
        logger.info(
            "ready: pipelines=%s unavailable=%s auth=%s",
            sorted(components.pipelines),
            components.unavailable,
            "on" if settings.auth.enabled else "OFF",
        )
        watcher = None
        if components.retriever is not None and settings.rag.watch_interval_s > 0:
            watcher = asyncio.create_task(_watch_index(state, settings.rag.watch_interval_s))
        adapter_watcher = None
        if isinstance(components.primary, AdapterLoader):
            sync = AdapterVersionSync(state, components.primary, AdapterVersionStore(versions_dir(settings)))
            app.state.adapter_sync = sync  # POST /admin/adapters publishes through it
            await sync.check()  # a worker that starts after a swap serves the published version at once
            if settings.server.adapter_watch_interval_s > 0:
                adapter_watcher = asyncio.create_task(sync.watch(settings.server.adapter_watch_interval_s))
        try:
            async with drain_on_stop_signals(state, settings.server.shutdown_grace_s):
                yield
        finally:
            state.draining = True
            for task in (watcher, adapter_watcher):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            for generator in (components.primary, components.fallback):
                if generator is not None:
                    await generator.aclose()
            if components.cache is not None:
                await components.cache.aclose()
            metrics.close()
            if metrics.tracer is not None:
                metrics.tracer.shutdown()

    # JSONResponse named (not left to FastAPI's default) keeps the stdlib encoder for response models:
    # FastAPI's fast path would write the same values with other float spellings.
    app = FastAPI(title="hybridllm", version="0.1.0", lifespan=lifespan, default_response_class=JSONResponse)
    app.state.gateway = state
    install_error_handlers(app)
    install_openapi(app)

    # Innermost first: the body cap and rate limits run after the gateway middleware identified the key.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.server.max_body_bytes)
    app.add_middleware(RateLimitMiddleware, limiter=build_limiter(settings, metrics))
    app.add_middleware(GatewayMiddleware, state=state)

    for module in (chat, models, health, retrieve, admin):
        app.include_router(module.router)
    # Open without an API key (middleware.OPEN_PATHS), as scrapers send none.
    app.router.routes.append(Route("/metrics", metrics.asgi_app(), methods=["GET"], include_in_schema=False))
    return app
