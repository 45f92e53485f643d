from __future__ import annotations

import asyncio

from fastapi import APIRouter

from services.core.errors import NotReady
from services.gateway.responses import RetrievedChunk, RetrieveResponse, error_responses
from services.gateway.schemas import RetrieveRequest
from services.gateway.state import StateDep

router = APIRouter()


@router.post("/v1/retrieve", responses=error_responses(400, 401, 413, 429, 503))
async def retrieve(body: RetrieveRequest, state: StateDep) -> RetrieveResponse:
    """Ranked chunks for a query, without generation: for debugging and retrieval evaluation."""
    retriever = state.require_components().retriever
    if retriever is None:
        raise NotReady("retrieval is not available: no index loaded (run `hybridllm ingest`)")
    outcome = await asyncio.to_thread(retriever.retrieve, body.query, top_k=body.top_k)
    return RetrieveResponse(
        object="list",
        index_version=outcome.index_version,
        relevant=outcome.relevant,
        timings_ms=outcome.timings_ms,
        data=[
            RetrievedChunk(
                rank=rank,
                score=round(hit.score, 6),
                source=hit.chunk.source,
                chunk_id=hit.chunk.chunk_id,
                title=hit.chunk.title,
                heading_path=list(hit.chunk.heading_path),
                text=hit.chunk.text,
            )
            for rank, hit in enumerate(outcome.chunks, start=1)
        ],
    )
