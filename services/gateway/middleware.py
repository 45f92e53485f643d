"""The gateway's front door as plain ASGI middleware: request ids, declared body size, API keys.

Plain ASGI rather than Starlette's BaseHTTPMiddleware, which wraps every response body in an extra
task and stream: measurable per-request CPU on the hot path of a gateway whose job is low overhead.
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.core.errors import HybridError, PayloadTooLarge
from services.gateway.auth import KeyChecker
from services.gateway.errors import response_for

# Paths that stay open without an API key: probes, scraping and the API description.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"})
MAX_REQUEST_ID_CHARS = 128


class GatewayMiddleware:
    def __init__(self, app: ASGIApp, *, auth: KeyChecker, max_body_bytes: int) -> None:
        self._app = app
        self._auth = auth
        self._max_body_bytes = max_body_bytes

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

        try:
            self._check_declared_size(headers.get("content-length"))
            path: str = scope["path"]
            if path not in OPEN_PATHS and not path.startswith("/admin"):
                state["key_id"] = self._auth.identify(headers.get("authorization"))
        except HybridError as exc:
            await response_for(exc)(scope, receive, send_with_id)
            return
        await self._app(scope, receive, send_with_id)

    def _check_declared_size(self, length: str | None) -> None:
        if length is not None and length.isdigit() and int(length) > self._max_body_bytes:
            raise PayloadTooLarge(
                f"request body of {length} bytes exceeds the limit of {self._max_body_bytes} bytes"
            )
