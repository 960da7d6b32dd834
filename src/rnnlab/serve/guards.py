"""ASGI middleware that every response passes: a cap on request bodies, and headers that keep
the pages from loading anything but the server's own files.

Both are plain ASGI (no request object is built), so an oversized body is refused before it is
read into memory.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["BodyLimit", "SecurityHeaders"]

Scope = dict[str, Any]

# Only our own scripts, styles and API: no CDN, no inline script, nothing from elsewhere. blob:
# lets the digit page preview an uploaded file before it is scaled to 28x28.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)


async def _send_error(send, status: int, message: str) -> None:
    body = json.dumps({"detail": message}).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Answer 413 to a request whose body is over ``limit`` bytes: at once when its
    Content-Length says so, otherwise as soon as that many bytes have arrived (the body is
    then replayed to the app from memory)."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        too_big = f"expected a request body of at most {self.limit} bytes, got more"
        if length is not None:
            if not length.isdigit():
                await _send_error(send, 400, f"expected a numeric Content-Length, got {length!r}")
                return
            if int(length) > self.limit:
                await _send_error(send, 413, too_big)
                return
            await self.app(scope, receive, send)
            return
        chunks, size, more = [], 0, True  # no length given (chunked): read up to the limit
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)  # disconnected: let the app see it
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.limit:
                await _send_error(send, 413, too_big)
                return
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class SecurityHeaders:
    """Add a Content-Security-Policy (:data:`CSP`), ``nosniff`` and ``no-referrer`` to every
    HTTP response."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
