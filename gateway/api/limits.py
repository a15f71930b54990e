"""Request body size limit as a pure ASGI middleware.

Failure modes handled: a declared ``Content-Length`` above the limit (413
before the body is read), a malformed ``Content-Length`` (400), and a chunked
or lying body that grows past the limit while it is read (the app sees the
body end there, and its answer is replaced by 413; the rest is not read).
Streaming responses (SSE) pass through untouched.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


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
        too_large = False
        replaced = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            if too_large:
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # End the body here; whatever the app answers is replaced by 413.
                    too_large = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal replaced
            if too_large:
                if not replaced and message["type"] == "http.response.start":
                    replaced = True
                    await _reply(send, 413, f"request body exceeds {self.max_body_bytes} bytes")
                return
            await send(message)

        await self.app(scope, limited_receive, guarded_send)


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
