from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from services.gateway.state import StateDep

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Alive: the process answers. Says nothing about models (that is /readyz)."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
async def readyz(state: StateDep) -> JSONResponse:
    components = state.components
    body: dict[str, Any] = {
        "status": "ready" if components is not None and not state.draining else "not_ready"
    }
    if components is None:
        body["reason"] = state.startup_error or "models are still loading"
        return JSONResponse(body, status_code=503)
    if state.draining:
        body["reason"] = "shutting down"
        return JSONResponse(body, status_code=503)
    body["pipelines"] = sorted(components.pipelines)
    body["unavailable"] = components.unavailable
    body["generator"] = {"name": components.primary.name, "trust": components.primary.trust}
    if components.retriever is not None:
        info = components.retriever.index_info
        body["index"] = {"version": info.version, "chunks": info.chunks}
    return JSONResponse(body)
