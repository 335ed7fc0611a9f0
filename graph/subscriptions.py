"""Subscriptions over graphql-transport-ws, with a fast path for the events they deliver.

Strawberry's handler keeps everything about the protocol: connection_init and its
authentication, subscribe and its validation, the limit of subscriptions per connection
(refused with a code, like every other error), complete, errors and close codes. What it
does per message for every subscriber (a task wakes, the result is encoded, Starlette
and uvicorn each wrap the send) is what a fan-out to thousands of sockets cannot afford:
so an operation's `next` messages can instead be written through a Channel, which puts
the operation's id in front of bytes rendered once for every subscriber of the same
document and writes the frame to the socket at once.

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
from collections.abc import Callable
from functools import partial
from typing import Any

from graphql import ExecutionResult, GraphQLError
from starlette.types import ASGIApp, Receive, Scope, Send
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    ErrorMessage,
    SubscribeMessage,
)

from graph.context import Context
from graph.execution import encode_next, forget_subscription

log = logging.getLogger("callfloor.subscriptions")

SUBSCRIPTION_LIMIT_CODE = "TOO_MANY_REQUESTS"

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

_operation: contextvars.ContextVar[tuple[SubscriptionHandler, Operation[Context, None]]] = (
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
    and id (current_channel), so its resolver can hand them to the fan-out, and can hand
    itself over (hand_over): its task ends, and the operation stays open, served by the
    Hub, until the client completes it, the socket closes or the Hub ends it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Operations handed over, and how to end each (unsubscribe it from the Hub).
        self.handed_over: dict[str, Callable[[], None]] = {}

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        """As Strawberry, then forget the cancelled timeout: a live socket keeps nothing
        it no longer needs."""
        # The protocol allows a null payload: it carries no token, so it is refused like
        # any init without one (4403), not as a malformed message (4400).
        if message.get("payload", {}) is None:
            message = {"type": "connection_init"}
        await super().handle_connection_init(message)
        self.connection_init_timeout_task = None

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        """As Strawberry, but the subscription limit is refused with extensions.code."""
        limit = self.max_subscriptions_per_connection
        if (
            limit is not None
            and self.connection_acknowledged
            and message["id"] not in self.operations
            and len(self.operations) >= limit
        ):
            error = GraphQLError(
                f"At most {limit} subscriptions per connection",
                extensions={"code": SUBSCRIPTION_LIMIT_CODE},
            )
            refusal: ErrorMessage = {
                "id": message["id"],
                "type": "error",
                "payload": [error.formatted],
            }
            await self.send_message(refusal)
            return
        await super().handle_subscribe(message)

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        """Run the operation in its task, which knows which operation it runs."""
        _operation.set((self, operation))
        try:
            await super().run_operation(operation)
        except asyncio.CancelledError:
            if self.operations.get(operation.id) is operation and (
                operation.id in self.handed_over
            ):
                return  # handed over: the Hub serves it now
            raise

    async def cleanup_operation(self, operation_id: str) -> None:
        """Complete (or the socket closed): unsubscribe a handed-over operation too."""
        end = self.handed_over.pop(operation_id, None)
        if end is not None:
            end()
        await super().cleanup_operation(operation_id)

    def forget_operation(self, operation_id: str) -> None:
        """The Hub ended a handed-over operation (and sent its last messages)."""
        self.handed_over.pop(operation_id, None)
        self.operations.pop(operation_id, None)


async def hand_over(end: Callable[[], None]) -> None:
    """Leave the running operation to the Hub: its task ends without a message, and end
    is called once the client completes it or the socket closes."""
    handler, operation = _operation.get()
    handler.handed_over[operation.id] = end
    # The finished task stays in the handler's operations, with its context: keep nothing
    # in it that the Hub does not need.
    forget_subscription()
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    await asyncio.sleep(0)  # raises CancelledError: run_operation returns quietly


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

    __slots__ = ("_head", "_on_end", "_protocol", "_queue_size", "_transport")

    def __init__(
        self, protocol: Any, operation_id: str, queue_size: int, on_end: Callable[[], None]
    ) -> None:
        self._protocol = protocol
        self._transport = protocol.transport
        self._head = message_head(operation_id)
        self._queue_size = queue_size
        self._on_end = on_end

    def end(self, error: Exception | None) -> None:
        """The error (if any) as a `next` message, then `complete`."""
        end_operation(self, error)
        self._on_end()

    @property
    def closed(self) -> bool:
        """Whether a close frame was sent or the connection is going."""
        return bool(self._protocol.close_sent or self._transport.is_closing())

    def write(self, body: bytes, force: bool = False) -> bool:
        """One frame, now; False when closed or more than queue_size such frames are
        waiting for the operating system to take them (it is written all the same)."""
        transport = self._transport
        if self._protocol.close_sent or transport.is_closing():
            return False
        message = self._head + body
        size = len(message)
        transport.write(frame_header(size) + message)
        return bool(transport.get_write_buffer_size() <= self._queue_size * size)

    def write_all(self, bodies: list[bytes]) -> bool:
        """The frames in one write; False as for write."""
        if len(bodies) == 1:
            return self.write(bodies[0])
        transport = self._transport
        if self._protocol.close_sent or transport.is_closing():
            return False
        head = self._head
        parts = []
        for body in bodies:
            message = head + body
            parts.append(frame_header(len(message)))
            parts.append(message)
        data = b"".join(parts)
        transport.write(data)
        return bool(
            transport.get_write_buffer_size() <= self._queue_size * len(data) // len(bodies)
        )

    def backlog(self) -> int:
        """Bytes the transport holds."""
        return int(self._transport.get_write_buffer_size())


class AsgiChannel:
    """Sends an operation's messages through ASGI: one task drains them in order."""

    __slots__ = ("_closed", "_head", "_on_end", "_queue", "_queue_size", "_send", "_task")

    def __init__(
        self, send: Send, operation_id: str, queue_size: int, on_end: Callable[[], None]
    ) -> None:
        self._on_end = on_end
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

    def write(self, body: bytes, force: bool = False) -> bool:
        """Queue the message; False when closed or queue_size messages are waiting."""
        if self._closed or (len(self._queue) >= self._queue_size and not force):
            return False
        self._queue.append(body)
        if self._task is None:
            self._task = asyncio.ensure_future(self._drain())
        return True

    def write_all(self, bodies: list[bytes]) -> bool:
        """Queue the messages; False as for write."""
        return all([self.write(body) for body in bodies])

    def backlog(self) -> int:
        """Bytes queued."""
        return sum(len(body) for body in self._queue)

    def end(self, error: Exception | None) -> None:
        """The error (if any) as a `next` message, then `complete`."""
        end_operation(self, error)
        self._on_end()

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


def end_operation(channel: Channel, error: Exception | None) -> None:
    """What a subscription sends when its stream ends: the error as a `next` message with
    errors (as Strawberry sends it), then `complete`."""
    if error is not None:
        located = error if isinstance(error, GraphQLError) else GraphQLError(str(error))
        if not isinstance(error, GraphQLError):
            located.original_error = error
        channel.write(encode_next(ExecutionResult(None, [located])), force=True)
    channel.write(b'"type":"complete"}', force=True)


def current_channel(queue_size: int) -> Channel | None:
    """The socket of the graphql-transport-ws operation this task runs, under its id; None
    outside of one (another transport, or a test driving the hub)."""
    found = _operation.get(None)
    if found is None:
        return None
    handler, operation = found
    operation_id = operation.id
    on_end = partial(handler.forget_operation, operation_id)
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
        forget_handshake(protocol)
        return RawFrameChannel(protocol, operation_id, queue_size, on_end)
    return AsgiChannel(send, operation_id, queue_size, on_end)


def forget_handshake(protocol: Any) -> None:
    """Let go of the opening handshake's request and response, headers and all (4 KiB):
    websockets-sansio keeps them for the connection's life but reads them only until the
    handshake is complete, which it is once a subscription runs. Over thousands of idle
    subscribers they were an eighth of each one's memory."""
    if getattr(protocol, "handshake_complete", False) and getattr(protocol, "request", None):
        protocol.request = None
        protocol.response = None
