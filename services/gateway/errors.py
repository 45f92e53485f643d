"""The one place that turns domain errors into HTTP status codes and OpenAI-shaped error bodies."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.core import errors
from services.gateway.responses import ErrorDetail, ErrorResponse

logger = logging.getLogger(__name__)

# (status, OpenAI error type) per domain error; the first match in MRO order wins.
_STATUS: list[tuple[type[errors.HybridError], int, str]] = [
    (errors.InvalidRequest, 400, "invalid_request_error"),
    (errors.PolicyViolation, 400, "invalid_request_error"),
    (errors.UnknownModel, 404, "invalid_request_error"),
    (errors.PayloadTooLarge, 413, "invalid_request_error"),
    (errors.Unauthorized, 401, "authentication_error"),
    (errors.RateLimited, 429, "rate_limit_error"),
    (errors.StructuredOutputError, 422, "invalid_request_error"),
    (errors.Overloaded, 503, "server_error"),
    (errors.NotReady, 503, "server_error"),
    (errors.GenerationTimeout, 504, "server_error"),
    (errors.GenerationError, 502, "server_error"),
    (errors.RetrievalError, 503, "server_error"),
    (errors.ConfigError, 500, "server_error"),
]


def error_body(message: str, *, type_: str, code: str | None, param: str | None = None) -> ErrorResponse:
    return ErrorResponse(error=ErrorDetail(message=message, type=type_, param=param, code=code))


def status_for(exc: errors.HybridError) -> tuple[int, str]:
    for cls, status, type_ in _STATUS:
        if isinstance(exc, cls):
            return status, type_
    return 500, "server_error"


def response_for(exc: errors.HybridError) -> JSONResponse:
    status, type_ = status_for(exc)
    headers: dict[str, str] = {}
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, round(retry_after)))
    if isinstance(exc, errors.Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(
        error_body(exc.message, type_=type_, code=exc.code, param=exc.param).json_body(),
        status_code=status,
        headers=headers,
    )


def describe_validation_error(exc: RequestValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    field = ".".join(loc) or None
    if first.get("type") == "json_invalid":
        return "request body is not valid JSON", None
    message = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
    return message, field


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.HybridError)
    async def _domain(request: Request, exc: errors.HybridError) -> JSONResponse:
        return response_for(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, field = describe_validation_error(exc)
        return JSONResponse(
            error_body(
                message, type_="invalid_request_error", code="invalid_request", param=field
            ).json_body(),
            status_code=400,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = "invalid_request_error" if exc.status_code < 500 else "server_error"
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(str(exc.detail), type_=type_, code=code).json_body(),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Never a stack trace to the client; the log has it, under the request id.
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body("internal server error", type_="server_error", code="internal_error").json_body(),
            status_code=500,
        )
