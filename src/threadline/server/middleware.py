"""ASGI middleware of the app: body limits, security headers and the inbound W3C trace
context (auth lives in auth.py).

Pure ASGI classes rather than `BaseHTTPMiddleware`, so streaming responses (live event
streams) pass through untouched and a refused request costs no body parsing.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from ..observability.propagation import (
    parse_traceparent,
    reset_inbound_traceparent,
    set_inbound_traceparent,
)
from .asgi import ASGIApp, HTTPMiddleware, Receive, Scope, Send, send_problem

__all__ = ["BodyLimitMiddleware", "SecurityHeadersMiddleware", "TraceContextMiddleware"]


_CLOSE = ((b"connection", b"close"),)
"""A refused body may still be arriving: close the connection rather than read it."""


class BodyLimitMiddleware(HTTPMiddleware):
    """Refuse request bodies over `max_bytes` with 413, before any parsing.

    The body is read (at most `max_bytes`) and handed on whole, so a chunked upload that
    lies about its size is cut off too.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        super().__init__(app)
        self.max_bytes = max_bytes

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                if not value.isascii() or not value.isdigit():
                    await send_problem(
                        send, 400, "Bad Content-Length", "not a number", headers=_CLOSE
                    )
                    return
                if int(value) > self.max_bytes:
                    await self._too_large(send)
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> MutableMapping[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        await send_problem(
            send,
            413,
            "Payload Too Large",
            f"request bodies are limited to {self.max_bytes} bytes",
            headers=_CLOSE,
        )


_UI_CSP = (
    b"default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    b"img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


class SecurityHeadersMiddleware(HTTPMiddleware):
    """nosniff everywhere; a strict Content-Security-Policy on the web page."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        is_ui = scope["path"].startswith("/ui")

        async def with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-content-type-options", b"nosniff"))
                if is_ui:
                    headers += [
                        (b"content-security-policy", _UI_CSP),
                        (b"referrer-policy", b"no-referrer"),
                        (b"x-frame-options", b"DENY"),
                    ]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


class TraceContextMiddleware(HTTPMiddleware):
    """Make a valid inbound `traceparent` header the request's `inbound_traceparent()`.

    A launch stores it with the thread, so the thread's steps join the caller's trace
    (`threadline.observability.propagation`). An invalid header is ignored, as W3C Trace
    Context says; nothing of OpenTelemetry is imported here.
    """

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = None
        for name, value in scope.get("headers", ()):
            if name == b"traceparent":
                found = parse_traceparent(value.decode("latin-1"))
                break
        token = set_inbound_traceparent(found.header() if found else None)
        try:
            await self.app(scope, receive, send)
        finally:
            reset_inbound_traceparent(token)
