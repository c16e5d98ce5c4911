"""A cap on request bodies, enforced before anything buffers them.

FastAPI reads a JSON body whole before the route runs: without a cap, one 128 MiB
``POST /v1/jobs`` costs the process its size several times over. This ASGI middleware
answers 413 at once when ``Content-Length`` is over the cap, and otherwise counts the bytes
as the application receives them: past the cap the application sees the body end, and
whatever it was about to answer is replaced by the 413 problem.

Streaming uploads (``POST /v1/teachers``, ``POST /v1/datasets``) are exempt: they never
buffer, and ``STILLHOUSE_MAX_UPLOAD_BYTES`` caps them where they are written.
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import TooLarge, render
from api.headers import small_int

STREAMING_UPLOADS = frozenset({("POST", "/v1/teachers"), ("POST", "/v1/datasets")})


class BodyLimitMiddleware:
    def __init__(
        self, app: ASGIApp, max_bytes: int, exempt: Collection[tuple[str, str]] = STREAMING_UPLOADS
    ) -> None:
        self.app, self.max_bytes, self.exempt = app, max_bytes, exempt

    def _exempt(self, scope: Scope) -> bool:
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        return (scope["method"], path.rstrip("/")) in self.exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._exempt(scope):
            await self.app(scope, receive, send)
            return
        raw = dict(scope["headers"]).get(b"content-length")
        length = small_int(raw.decode("latin-1") if raw is not None else None)
        if length is not None and length > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        await self._counted(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"the request body is larger than the limit of {self.max_bytes} bytes"
        response = render(TooLarge(detail, headers={"Connection": "close"}))
        await response(scope, receive, send)

    async def _counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        seen = 0
        over = False
        answer: str | None = None  # "app" once the app's answer goes out, "413" once ours does

        async def counting_receive() -> Message:
            nonlocal seen, over
            if over:
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    over = True  # the rest is never read: the connection closes after the 413
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal answer
            if answer is None and message["type"] == "http.response.start":
                answer = "413" if over else "app"
                if over:
                    await self._refuse(scope, receive, send)
                    return
            if answer != "413":
                await send(message)

        await self.app(scope, counting_receive, guarded_send)
