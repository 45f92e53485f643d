from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from services.gateway.state import StateDep

router = APIRouter()


@router.get("/v1/models")
async def list_models(state: StateDep) -> dict[str, Any]:
    """Only pipelines that are configured and ready; `hybrid_description` says what each one does."""
    components = state.require_components()
    created = int(state.started_at)
    data = [
        {
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": "hybridllm",
            "hybrid_description": pipeline.description,
        }
        for name, pipeline in sorted(components.pipelines.items())
    ]
    return {"object": "list", "data": data}
