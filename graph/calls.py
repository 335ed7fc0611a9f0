"""Calls: may I call now, starting, ending and keeping calls alive, the live board."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime

import strawberry

import metrics
from graph.execution import EventRenderer, current_subscription
from graph.subscriptions import current_channel, hand_over
from graph.types import (
    ActiveCall,
    ActiveCallEvent,
    CallCheck,
    CallLog,
    Disposition,
    GraphInfo,
    StartCallPayload,
    active_call_event,
)
from resolvers import calls
from resolvers.auth import SUPERVISORS, hash_token
from resolvers.calls import CallOutcome
from resolvers.errors import parse_id
from resolvers.events import Delivery


@strawberry.type
class CallQueries:
    """Call fields, merged into Query."""

    @strawberry.field(description="Whether the signed-in user may call the prospect now.")
    async def can_call(self, info: GraphInfo, prospect_id: strawberry.ID) -> CallCheck:
        actor = await info.context.require_user()
        # An unknown prospect is an error, as in prospect(id) and the REST can-call.
        check = await calls.check_call(
            info.context.pool, actor, parse_id(prospect_id, "prospectId")
        )
        caller = check["last_caller_id"]
        return CallCheck(
            allowed=check["code"] is None,
            reason=check["reason"],
            code=check["code"],
            until=check["until"],
            last_call_time=check["last_call_time"],
            last_caller_id=strawberry.ID(str(caller)) if caller else None,
        )

    @strawberry.field(description="Every call in progress, oldest first.")
    async def active_calls(self, info: GraphInfo) -> list[ActiveCall]:
        await info.context.require_user()
        return [ActiveCall.from_record(r) for r in await calls.list_active_calls(info.context.pool)]


@strawberry.type
class DispositionQueries:
    """The outcomes a call can end with, merged into Query."""

    @strawberry.field(description="The outcomes a call can end with.")
    async def dispositions(self, info: GraphInfo) -> list[Disposition]:
        await info.context.require_user()
        return [
            Disposition(name=r["name"], sets_status=r["sets_status"])
            for r in await calls.list_dispositions(info.context.pool)
        ]


@strawberry.type
class CallMutations:
    """Starting, ending and keeping calls alive, merged into Mutation."""

    @strawberry.mutation(description="Check the call rules and start a call as the signed-in user.")
    async def start_call(
        self,
        info: GraphInfo,
        prospect_id: strawberry.ID,
        phone_number: str | None = None,
        from_number: str | None = None,
    ) -> StartCallPayload:
        actor = await info.context.require_user()
        pid = parse_id(prospect_id, "prospectId")
        record = await calls.start_call(
            info.context.pool,
            actor,
            pid,
            phone_number,
            from_number,
            info.context.settings.default_phone_region,
        )
        active_call = ActiveCall.from_record(record["active_call"])
        return StartCallPayload(
            active_call_id=active_call.id,
            call_log_id=active_call.call_log_id,
            active_call=active_call,
        )

    @strawberry.mutation(description="End a call: clear the lock, log the outcome, set the status.")
    async def end_call(
        self,
        info: GraphInfo,
        prospect_id: strawberry.ID,
        call_log_id: strawberry.ID,
        outcome: str,
        duration: int | None = None,
        notes: str | None = None,
        recording_url: str | None = None,
        callback_at: datetime | None = None,
    ) -> CallLog:
        actor = await info.context.require_user()
        record = await calls.end_call(
            info.context.pool,
            actor,
            parse_id(prospect_id, "prospectId"),
            parse_id(call_log_id, "callLogId"),
            CallOutcome(
                outcome=outcome,
                duration=duration,
                notes=notes,
                recording_url=recording_url,
                callback_at=callback_at,
            ),
        )
        return CallLog.from_record(record)

    @strawberry.mutation(description="Keep an active call alive: extend its lease.")
    async def heartbeat_call(self, info: GraphInfo, call_log_id: strawberry.ID) -> ActiveCall:
        actor = await info.context.require_user()
        record = await calls.heartbeat_call(
            info.context.pool, actor, parse_id(call_log_id, "callLogId")
        )
        return ActiveCall.from_record(record)

    @strawberry.mutation(
        description=(
            "End, as Expired, every active call older than olderThan seconds "
            "(managers and admins); returns how many."
        )
    )
    async def release_stale_calls(self, info: GraphInfo, older_than: int) -> int:
        await info.context.require_role(*SUPERVISORS)
        return await calls.release_stale_calls(info.context.pool, older_than)


@strawberry.type
class CallSubscriptions:
    """The live board of active calls, merged into Subscription."""

    @strawberry.subscription(
        description=(
            "Active-call changes as they commit: first a SNAPSHOT, then STARTED, ENDED and "
            "EXPIRED. A fresh SNAPSHOT follows whenever events may have been missed."
        )
    )
    async def active_call_events(
        self, info: GraphInfo, agent_id: strawberry.ID | None = None
    ) -> AsyncGenerator[ActiveCallEvent, None]:
        actor = await info.context.require_user()
        agent = parse_id(agent_id, "agentId") if agent_id else None
        hub, token = info.context.hub, info.context.token
        assert hub is not None
        assert token is not None
        # Over graphql-transport-ws, each event is rendered once for every subscriber of
        # the same document and written straight to the sockets (graph/subscriptions.py).
        subscription = current_subscription()
        channel = current_channel(hub.queue_size)
        if subscription is not None and channel is not None:
            key, executor = subscription
            context = info.context
            delivery = Delivery(key, lambda: EventRenderer(executor, context), channel)
            end = await hub.attach(actor.id, hash_token(token).hex(), agent, delivery)
            await hand_over(end)
            return
        async with hub.subscription(actor.id, hash_token(token).hex(), agent) as events:
            measured = metrics.SubscriptionMetrics()
            async for event in events:
                measured.sending(event.type)
                yield active_call_event(event)
                # Resumed once Strawberry has written the event to the socket.
                measured.sent(event.type, event.at)
