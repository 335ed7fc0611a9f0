"""The cap on request bodies (MAX_REQUEST_BYTES), for GraphQL and REST alike: a body over
it is answered 413 without being read whole, before any endpoint parses it."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CODE = "REQUEST_TOO_LARGE"


class RequestSizeLimit:
    """ASGI middleware: refuse a body longer than max_bytes with 413.

    A declared Content-Length over the cap is refused before a byte of the body is read;
    a chunked body is read only until it passes the cap. A body within it is handed on to
    the app unchanged (endpoints read bodies whole anyway, so holding it costs nothing more).
    The connection stays open: uvicorn discards the rest of a refused body as it arrives,
    unbuffered, so a client still sending reads the 413 instead of a reset connection.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, graphql_path: str = "/graphql") -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.graphql_path = graphql_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._declared_length(scope) > self.max_bytes:
            await self._refuse(scope, send)
            return
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see it
                break
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_bytes:
                await self._refuse(scope, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        # The app reads the body as if from the client: all of it in one message (or the
        # disconnect that cut it short), then whatever the client sends next.
        if message["type"] == "http.request":
            message = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        pending = [message]

        async def replay() -> Message:
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)

    @staticmethod
    def _declared_length(scope: Scope) -> int:
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit():
                return int(value)
        return 0

    async def _refuse(self, scope: Scope, send: Send) -> None:
        message = f"The request body is larger than {self.max_bytes} bytes"
        if scope["path"] == self.graphql_path:
            body: dict[str, object] = {
                "errors": [{"message": message, "extensions": {"code": CODE}}]
            }
        else:
            body = {"error": message, "code": CODE}
        content = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(content)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})
