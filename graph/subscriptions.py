"""Subscriptions over graphql-transport-ws, with a fast path for the events they deliver.

Strawberry's handler keeps everything about the protocol: connection_init and its
authentication, subscribe and its validation, the limit of subscriptions per connection,
complete, errors and close codes. What it does per message for every subscriber (a task
wakes, the result is encoded, Starlette and uvicorn each wrap the send) is what a fan-out
to thousands of sockets cannot afford: so an operation's `next` messages can instead be
written through a Channel, which puts the operation's id in front of bytes rendered once
for every subscriber of the same document and writes the frame to the socket at once.

A Channel writes WebSocket frames itself on uvicorn's own WebSocket protocols (the
default websockets-sansio, and wsproto) when permessage-deflate is off: they are exactly
the frames uvicorn would write, without a coroutine or a copy per layer. Anywhere else
(compression on, another server, a middleware wrapping `send`) it sends through ASGI,
one task per burst of messages, still encoding nothing again.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
from collections import deque
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)

from graph.context import Context

log = logging.getLogger("callfloor.subscriptions")

# Where WebSocketSendMiddleware keeps the server's own `send` in a WebSocket's scope.
SERVER_SEND = "callfloor.server_send"
# uvicorn's WebSocket protocols whose frames a Channel may write itself (both keep
# `transport`, `close_sent` and `config`); the legacy `websockets` one is not among them.
RAW_FRAME_PROTOCOLS = frozenset(
    {
        "uvicorn.protocols.websockets.websockets_sansio_impl.WebSocketsSansIOProtocol",
        "uvicorn.protocols.websockets.wsproto_impl.WSProtocol",
    }
)
# A text frame's first two bytes for each payload length that fits in them.
_SHORT_HEADERS = [bytes((0x81, length)) for length in range(126)]

_operation: contextvars.ContextVar[tuple[BaseGraphQLTransportWSHandler[Any, Any], str]] = (
    contextvars.ContextVar("callfloor_operation")
)


class WebSocketSendMiddleware:
    """Keeps the server's own `send` in a WebSocket's scope, before Starlette wraps it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope[SERVER_SEND] = send
        await self.app(scope, receive, send)


class SubscriptionHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """Strawberry's graphql-transport-ws handler; each operation can find its own socket
    and id (current_channel), so its resolver can hand them to the fan-out."""

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        """Run the operation in its task, which knows which operation it runs."""
        _operation.set((self, operation.id))
        await super().run_operation(operation)


def frame_header(size: int) -> bytes:
    """The header of an unmasked, unfragmented text frame of size bytes."""
    if size < 126:
        return _SHORT_HEADERS[size]
    if size < 65536:
        return b"\x81\x7e" + size.to_bytes(2, "big")
    return b"\x81\x7f" + size.to_bytes(8, "big")


def message_head(operation_id: str) -> bytes:
    """The start of every message of the operation: `{"id":"...",`."""
    return b'{"id":' + json.dumps(operation_id).encode() + b","


class RawFrameChannel:
    """Writes an operation's messages as frames straight to the socket's transport."""

    __slots__ = ("_head", "_protocol", "_queue_size", "_transport")

    def __init__(self, protocol: Any, operation_id: str, queue_size: int) -> None:
        self._protocol = protocol
        self._transport = protocol.transport
        self._head = message_head(operation_id)
        self._queue_size = queue_size

    @property
    def closed(self) -> bool:
        """Whether a close frame was sent or the connection is going."""
        return bool(self._protocol.close_sent or self._transport.is_closing())

    def write(self, body: bytes) -> bool:
        """One frame, now; False when closed or more than queue_size such frames are
        waiting for the operating system to take them."""
        transport = self._transport
        if self._protocol.close_sent or transport.is_closing():
            return False
        message = self._head + body
        size = len(message)
        transport.write(frame_header(size) + message)
        return bool(transport.get_write_buffer_size() <= self._queue_size * size)

    def backlog(self) -> int:
        """Bytes the transport holds."""
        return int(self._transport.get_write_buffer_size())


class AsgiChannel:
    """Sends an operation's messages through ASGI: one task drains them in order."""

    __slots__ = ("_closed", "_head", "_queue", "_queue_size", "_send", "_task")

    def __init__(self, send: Send, operation_id: str, queue_size: int) -> None:
        self._send = send
        self._head = message_head(operation_id)
        self._queue: deque[bytes] = deque()
        self._queue_size = queue_size
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether a send failed (the socket is gone)."""
        return self._closed

    def write(self, body: bytes) -> bool:
        """Queue the message; False when closed or queue_size messages are waiting."""
        if self._closed or len(self._queue) >= self._queue_size:
            return False
        self._queue.append(body)
        if self._task is None:
            self._task = asyncio.ensure_future(self._drain())
        return True

    def backlog(self) -> int:
        """Bytes queued."""
        return sum(len(body) for body in self._queue)

    async def _drain(self) -> None:
        try:
            while self._queue:
                body = self._queue.popleft()
                text = (self._head + body).decode()
                await self._send({"type": "websocket.send", "text": text})
        except Exception as error:
            log.debug("a WebSocket send failed: %r", error)
            self._closed = True
            self._queue.clear()
        finally:
            self._task = None


Channel = RawFrameChannel | AsgiChannel


def current_channel(queue_size: int) -> Channel | None:
    """The socket of the graphql-transport-ws operation this task runs, under its id; None
    outside of one (another transport, or a test driving the hub)."""
    found = _operation.get(None)
    if found is None:
        return None
    handler, operation_id = found
    request = getattr(handler.websocket, "ws", None)
    send: Send | None = getattr(request, "scope", {}).get(SERVER_SEND)
    if send is None:
        send = getattr(request, "_send", None)
    if send is None:
        return None
    protocol = getattr(send, "__self__", None)
    kind = type(protocol)
    if (
        protocol is not None
        and f"{kind.__module__}.{kind.__qualname__}" in RAW_FRAME_PROTOCOLS
        and not protocol.config.ws_per_message_deflate
    ):
        return RawFrameChannel(protocol, operation_id, queue_size)
    return AsgiChannel(send, operation_id, queue_size)
