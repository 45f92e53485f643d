from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from services.gateway.chat import ChatCompletion
from services.gateway.schemas import ChatCompletionRequest
from services.gateway.state import StateDep

router = APIRouter()


@router.post("/v1/chat/completions", response_model=None)
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, state: StateDep
) -> JSONResponse | StreamingResponse:
    return await ChatCompletion(state, body, request.state.request_id).respond()
