"""Caps the bytes a request body may carry, counted as they arrive -> 413.

A declared Content-Length is checked up front by the gateway middleware; a chunked body has none, so
this plain ASGI middleware counts the bytes it hands to the app and stops reading at the limit: the app's
body read fails, whatever it would have answered is dropped, and the client gets one OpenAI-shaped 413.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.core.errors import PayloadTooLarge
from services.gateway.errors import response_for


class _BodyTooLarge(Exception):
    """Raised into the app's body read; never leaves this middleware."""


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be >= 1, got {max_body_bytes}")
        self._app = app
        self._max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        limit = self._max_body_bytes
        received = 0
        overflowed = False
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received, overflowed
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    overflowed = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if overflowed:
                return  # the app's answer to a failed body read; ours goes out instead
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self._app(scope, counting_receive, guarded_send)
        except _BodyTooLarge:
            pass
        except Exception:
            if not overflowed:
                raise
        if overflowed and not response_started:
            error = PayloadTooLarge(
                f"request body exceeds the limit of {limit} bytes (server.max_body_bytes)"
            )
            await response_for(error)(scope, receive, send)
