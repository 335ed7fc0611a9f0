"""How subscription events execute: once per distinct document and variables per event,
rendered to bytes that every subscriber of that document is sent.

graphql-core executes a subscription's events with a copy of the executor it built for the
subscription (build_per_event_executor). The executor class here records that executor
when the subscription's resolver is called, so the resolver can hand the Hub a renderer:
it executes an event exactly as graphql-core would, gives errors their code as every
other result gets them, and encodes the `next` message once. A fleet of identical
wallboards costs one execution and one encoding per event, whatever its size.
"""

from __future__ import annotations

import contextvars
import dataclasses
import json
from collections.abc import Awaitable
from typing import Any

from graphql import ExecutionResult, GraphQLResolveInfo, OperationType
from graphql.pyutils import Path
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from graph.context import Context, Loaders
from graph.extensions import log_errors, present_error
from graph.types import active_call_event
from resolvers.events import CallEvent

_subscription_executor: contextvars.ContextVar[SubscriptionExecutionContext | None] = (
    contextvars.ContextVar("callfloor_subscription_executor", default=None)
)


class SubscriptionExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """graphql-core's executor, remembering which one runs the subscription's resolver."""

    def build_per_event_executor(self, payload: Any) -> Any:
        executor = super().build_per_event_executor(payload)
        # graphql-core 3.3 shares this memo between all events of a subscription, and its
        # keys are per-event objects: left alone it grows with every event delivered.
        executor._relevant_sub_fields = {}
        # An event's fields resolve without build_resolve_info's check below (a snapshot
        # of 500 calls resolves thousands of them).
        executor.__class__ = EventExecutionContext
        return executor

    def build_resolve_info(self, *args: Any, **kwargs: Any) -> GraphQLResolveInfo[Any]:
        info: GraphQLResolveInfo[Any] = super().build_resolve_info(*args, **kwargs)
        path: Path = info.path
        if (
            path.prev is None
            and self.operation.operation is OperationType.SUBSCRIPTION
            and self.root_value is None
        ):
            # The source stream's resolver is about to run, in the operation's own task.
            _subscription_executor.set(self)
        return info


class EventExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """The executor of one event (a copy of its subscription's)."""

    def build_per_event_executor(self, payload: Any) -> Any:
        executor = super().build_per_event_executor(payload)
        executor._relevant_sub_fields = {}
        return executor


class EventRenderer:
    """Executes an event with a subscription's document and variables and encodes the
    rest of its `next` message after the id: `"type":"next","payload":{...}}`."""

    def __init__(self, executor: StrawberryGraphQLCoreExecutionContext, context: Context) -> None:
        # The first subscriber's executor serves every subscriber of its feed, but not its
        # connection: each event gets a context of its own (fresh DataLoaders, no socket).
        self.context = dataclasses.replace(context, request=None, response=None)
        self.executor: Any = executor.build_per_event_executor(None)
        self.executor.context_value = self.context

    def __call__(self, event: CallEvent) -> bytes | Awaitable[bytes]:
        executor = self.executor.build_per_event_executor(active_call_event(event))
        executor.context_value = dataclasses.replace(
            self.context, loaders=Loaders.create(self.context.pool)
        )
        result = executor.execute_operation(False)
        if isinstance(result, ExecutionResult):
            return encode_next(result)
        return self._finish(result)

    async def _finish(self, result: Awaitable[ExecutionResult]) -> bytes:
        return encode_next(await result)


def encode_next(result: ExecutionResult) -> bytes:
    """A `next` message's type and payload, as Strawberry would send them."""
    payload: dict[str, Any] = {"data": result.data}
    if result.errors:
        log_errors(result.errors)
        payload["errors"] = [present_error(error).formatted for error in result.errors]
    return b'"type":"next","payload":' + json.dumps(payload, separators=(",", ":")).encode() + b"}"


def current_subscription() -> tuple[Any, SubscriptionExecutionContext] | None:
    """The feed key (document and variables) and executor of the subscription whose
    resolver runs in this task; None when there is none."""
    executor = _subscription_executor.get()
    if executor is None:
        return None
    variables = sorted(executor.variable_values.coerced.items())
    # The document is parsed once per text (ParserCache) and held by the executor, so
    # its identity names it while the feed lives.
    return (id(executor.operation), repr(variables)), executor


def forget_subscription() -> None:
    """Let go of the subscription's executor (its task may be kept after it ends)."""
    _subscription_executor.set(None)
