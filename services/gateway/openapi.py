"""The OpenAPI document as the real contract: FastAPI's, plus the stream's chunk schema, minus the 422
`HTTPValidationError` FastAPI adds to routes with inputs (this service answers invalid input with 400)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from services.gateway.responses import ChatCompletionChunk

_COMPONENTS = "#/components/schemas/"
_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")

# One server-sent event of a chat completion stream (OpenAPI 3.1: `schema` describes each event).
STREAM_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {
            "description": "A chat.completion.chunk; the OpenAI error object when the stream fails after "
            "it started; `[DONE]` last.",
            "anyOf": [
                {"const": "[DONE]"},
                {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": {
                        "anyOf": [
                            {"$ref": f"{_COMPONENTS}ChatCompletionChunk"},
                            {"$ref": f"{_COMPONENTS}ErrorResponse"},
                        ]
                    },
                },
            ],
        }
    },
}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title, version=app.version, openapi_version=app.openapi_version, routes=app.routes
    )
    components: dict[str, Any] = schema.setdefault("components", {}).setdefault("schemas", {})
    chunk = ChatCompletionChunk.model_json_schema(ref_template=_COMPONENTS + "{model}", mode="serialization")
    for name, definition in chunk.pop("$defs", {}).items():
        components.setdefault(name, definition)
    components[ChatCompletionChunk.__name__] = chunk
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.get("responses", {}) if isinstance(operation, dict) else {}
            if _is_validation_error(responses.get("422")):
                del responses["422"]
    for name in _VALIDATION_SCHEMAS:
        components.pop(name, None)
    return schema


def _is_validation_error(response: dict[str, Any] | None) -> bool:
    if response is None:
        return False
    ref = response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
    return bool(ref == f"{_COMPONENTS}HTTPValidationError")


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
