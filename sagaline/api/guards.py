"""What every request passes through: a limit on its body, and headers on every answer.

A body larger than the limit is refused with 413 before it is read whole, whether its
``Content-Length`` says so at once or it only turns out while it streams in. Every answer
says ``Cache-Control: no-store`` (a saga's inputs and results may be personal data, and must
not stay in a proxy or a browser cache) and ``X-Content-Type-Options: nosniff``.
"""

from __future__ import annotations

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 1024 * 1024
"""The largest request body accepted by default: 1 MiB."""

_HEADERS = [(b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff")]


class RequestGuard:
    """ASGI middleware: refuse bodies over ``max_bytes`` (413); add the safety headers."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        """Wrap ``app``, letting through bodies of up to ``max_bytes``."""
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request through the guard."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in _HEADERS if k not in names]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._too_large()(scope, receive, send_with_headers)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                # FastAPI lets an HTTPException raised while it reads the body through.
                raise HTTPException(413, self._detail())
            return message

        await self.app(scope, limited_receive, send_with_headers)

    def _detail(self) -> str:
        return (f"the request body is larger than {self.max_bytes} bytes; send less (a "
                "saga's inputs should name large data, not carry it)")

    def _too_large(self) -> JSONResponse:
        return JSONResponse({"detail": self._detail(), "errors": []},
                            status_code=413)
