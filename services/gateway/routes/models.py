from __future__ import annotations

from fastapi import APIRouter

from services.gateway.responses import ModelCard, ModelList, error_responses
from services.gateway.state import StateDep

router = APIRouter()


@router.get("/v1/models", responses=error_responses(401, 429, 503))
async def list_models(state: StateDep) -> ModelList:
    """Only pipelines that are configured and ready; `hybrid_description` says what each one does."""
    components = state.require_components()
    created = int(state.started_at)
    data = [
        ModelCard(
            id=name,
            object="model",
            created=created,
            owned_by="hybridllm",
            hybrid_description=pipeline.description,
        )
        for name, pipeline in sorted(components.pipelines.items())
    ]
    return ModelList(object="list", data=data)
