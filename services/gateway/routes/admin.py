from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header, Request

from services.core.errors import InvalidRequest, NotReady
from services.gateway.adapter_versions import AdapterVersionSync
from services.gateway.responses import AdapterLoaded, IndexReloaded, error_responses
from services.gateway.schemas import AdapterLoadRequest
from services.gateway.state import GatewayState, StateDep

router = APIRouter(prefix="/admin")

AuthHeader = Annotated[str | None, Header(alias="Authorization")]


def refresh_index_metrics(state: GatewayState) -> None:
    components = state.components
    if components is None or components.retriever is None:
        return
    info = components.retriever.index_info
    age = max(0.0, _age_seconds(info.created_at))
    state.metrics.set_index(info.version, info.chunks, age)


def _age_seconds(created_at: datetime) -> float:
    return (datetime.now(UTC) - created_at).total_seconds()


@router.post("/reload-index", responses=error_responses(401, 503))
async def reload_index(state: StateDep, authorization: AuthHeader = None) -> IndexReloaded:
    state.auth.require_admin(authorization)
    retriever = state.require_components().retriever
    if retriever is None:
        raise NotReady("no retrieval service to reload")
    changed = await asyncio.to_thread(retriever.reload_if_changed)
    refresh_index_metrics(state)
    info = retriever.index_info
    return IndexReloaded(reloaded=changed, version=info.version, chunks=info.chunks)


@router.post("/adapters", responses=error_responses(400, 401, 413, 503))
async def load_adapter(
    body: AdapterLoadRequest, request: Request, state: StateDep, authorization: AuthHeader = None
) -> AdapterLoaded:
    """Load a new adapter version without a restart; running requests finish on the old weights.

    The version is published in `server.adapter_versions_dir`, so every worker's watcher loads it too
    (services/gateway/adapter_versions.py).
    """
    state.auth.require_admin(authorization)
    generator = state.require_components().primary
    # Set at start-up where the primary loads adapters (behind a circuit breaker: the backend inside does).
    sync: AdapterVersionSync | None = getattr(request.app.state, "adapter_sync", None)
    if sync is None:
        raise InvalidRequest(f"generator backend {generator.name!r} cannot load adapters at run time")
    path = Path(body.path)
    if not path.is_dir():
        raise InvalidRequest(f"path: adapter folder not found: {body.path}", param="path")
    version = body.version or path.name
    await sync.publish(body.name, version, path)
    return AdapterLoaded(loaded=body.name, version=version)
