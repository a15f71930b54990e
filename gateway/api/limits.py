"""Request body size limit as a pure ASGI middleware.

Failure modes handled: a declared ``Content-Length`` above the limit (413
before the body is read), a malformed ``Content-Length`` (400), and a chunked
or lying body that grows past the limit while it is read (413; the rest is
not buffered). Streaming responses (SSE) pass through untouched.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLargeError(Exception):
    """The request body grew past the limit while being read."""


class BodyLimitMiddleware:
    """Reject request bodies larger than `max_body_bytes` with 413."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: int | None = None
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _reply(send, 400, "malformed Content-Length header")
                    return
                if declared < 0:
                    await _reply(send, 400, "malformed Content-Length header")
                    return
        if declared is not None and declared > self.max_body_bytes:
            await _reply(send, 413, f"request body exceeds {self.max_body_bytes} bytes")
            return

        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLargeError
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLargeError:
            if not started:
                await _reply(send, 413, f"request body exceeds {self.max_body_bytes} bytes")


async def _reply(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
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
