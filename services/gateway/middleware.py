"""The gateway's front door as plain ASGI middleware: request ids, declared body size, API keys, refusing
new API requests while draining, counting the requests in flight, and the caller's trace context.

Plain ASGI rather than Starlette's BaseHTTPMiddleware, which wraps every response body in an extra
task and stream: measurable per-request CPU on the hot path of a gateway whose job is low overhead.
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.core.errors import HybridError, PayloadTooLarge
from services.gateway.draining import ShuttingDown
from services.gateway.errors import response_for
from services.gateway.state import GatewayState
from services.gateway.tracing import TRACE_HEADERS, incoming_trace_context

# Paths that stay open without an API key: probes, scraping and the API description.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"})
# Refused while draining: the API proper. Probes, metrics and admin calls are still answered.
API_PREFIX = "/v1/"
MAX_REQUEST_ID_CHARS = 128


class GatewayMiddleware:
    def __init__(self, app: ASGIApp, *, state: GatewayState) -> None:
        self._app = app
        self._state = state
        self._auth = state.auth
        self._max_body_bytes = state.settings.server.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = (headers.get("x-request-id") or uuid.uuid4().hex)[:MAX_REQUEST_ID_CHARS]
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        raw_id = request_id.encode("latin-1", errors="replace")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *[(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"],
                    (b"x-request-id", raw_id),
                ]
            await send(message)

        path: str = scope["path"]
        if self._state.draining and path.startswith(API_PREFIX):
            refusal = response_for(ShuttingDown())
            refusal.headers["connection"] = "close"  # a pooled client reconnects, elsewhere
            await refusal(scope, receive, send_with_id)
            return
        try:
            self._check_declared_size(headers.get("content-length"))
            if path not in OPEN_PATHS and not path.startswith("/admin"):
                state["key_id"] = self._auth.identify(headers.get("authorization"))
        except HybridError as exc:
            await response_for(exc)(scope, receive, send_with_id)
            return
        trace_context = incoming_trace_context.set(
            {key: headers[key] for key in TRACE_HEADERS if key in headers}
        )
        self._state.requests_in_flight += 1
        try:
            await self._app(scope, receive, send_with_id)
        finally:
            self._state.requests_in_flight -= 1
            incoming_trace_context.reset(trace_context)

    def _check_declared_size(self, length: str | None) -> None:
        if length is not None and length.isdigit() and int(length) > self._max_body_bytes:
            raise PayloadTooLarge(
                f"request body of {length} bytes exceeds the limit of {self._max_body_bytes} bytes"
            )
