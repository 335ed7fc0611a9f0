"""How subscription events execute: once per distinct query per event, shared by everyone.

A wallboard fleet subscribes with the same document; executing it again for each of
thousands of subscribers was most of the fan-out cost. An event object (the payload the
subscription yields) carries a dict of results keyed by operation and variables, so the
first subscriber to reach an event executes it and the others reuse the result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from graphql import ExecutionResult
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext


class SharedEventExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """graphql-core's executor, sharing subscription event results between subscribers."""

    def build_per_event_executor(self, payload: Any) -> Any:
        executor = super().build_per_event_executor(payload)
        # graphql-core 3.3 shares this memo between all events of a subscription, and its
        # keys are per-event objects: left alone it grows with every event delivered.
        executor._relevant_sub_fields = {}
        return executor

    def execute_operation(self, serially: bool | None = None) -> Any:
        shared: dict[tuple[int, str], tuple[Any, Any]] | None = getattr(
            self.root_value, "shared_results", None
        )
        if shared is None:
            return super().execute_operation(serially)
        # The operation is kept in the value, so its id cannot be reused while cached.
        key = (id(self.operation), repr(sorted(self.variable_values.coerced.items())))
        if key not in shared:
            result = super().execute_operation(serially)
            if isinstance(result, Awaitable):
                result = asyncio.ensure_future(result)
            shared[key] = (self.operation, result)
        result = shared[key][1]
        if isinstance(result, asyncio.Future):
            return _shared(result)
        return result


async def _shared(future: asyncio.Future[ExecutionResult]) -> ExecutionResult:
    return await asyncio.shield(future)
