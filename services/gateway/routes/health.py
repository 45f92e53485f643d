from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from services.gateway.responses import BackendInfo, Health, IndexInfo, Readiness
from services.gateway.state import StateDep

router = APIRouter()


@router.get("/healthz")
async def healthz() -> Health:
    """Alive: the process answers. Says nothing about models (that is /readyz)."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Still loading, failed to start, or draining."}},
)
async def readyz(state: StateDep) -> JSONResponse:
    components = state.components
    if components is None:
        not_ready = Readiness(status="not_ready", reason=state.startup_error or "models are still loading")
        return JSONResponse(not_ready.json_body(), status_code=503)
    if state.draining:
        return JSONResponse(
            Readiness(status="not_ready", reason="shutting down").json_body(), status_code=503
        )
    ready = Readiness(
        status="ready",
        pipelines=sorted(components.pipelines),
        unavailable=components.unavailable,
        generator=BackendInfo(name=components.primary.name, trust=components.primary.trust),
    )
    if components.retriever is not None:
        info = components.retriever.index_info
        ready.index = IndexInfo(version=info.version, chunks=info.chunks)
    return JSONResponse(ready.json_body())
