from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from services.gateway import responses
from services.gateway.chat import ChatCompletion
from services.gateway.openapi import STREAM_EVENT_SCHEMA
from services.gateway.responses import error_responses
from services.gateway.schemas import ChatCompletionRequest
from services.gateway.state import StateDep

router = APIRouter()


@router.post(
    "/v1/chat/completions",
    response_model=responses.ChatCompletion,
    responses={
        200: {
            "description": "The completion; with `stream: true`, server-sent events of completion chunks.",
            "content": {"text/event-stream": {"schema": STREAM_EVENT_SCHEMA}},
        },
        **error_responses(400, 401, 404, 413, 422, 429, 502, 503, 504),
    },
)
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, state: StateDep
) -> JSONResponse | StreamingResponse:
    return await ChatCompletion(state, body, request.state.request_id).respond()
