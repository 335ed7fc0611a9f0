"""The GraphQL object types. Nested fields reach data through the request's DataLoaders."""

from __future__ import annotations

import asyncio
import dataclasses
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import datetime
from enum import Enum
from typing import Any, NewType, TypeAlias, TypeVar
from uuid import UUID

import asyncpg
import strawberry
from strawberry.dataloader import DataLoader
from strawberry.schema.types.base_scalars import DateTimeDefinition
from strawberry.types import Info
from strawberry.types.nodes import SelectedField, Selection

from graph.context import Context
from resolvers.errors import BadUserInput
from resolvers.events import CallEvent
from resolvers.inputs import check_date_time

GraphInfo = Info[Context, None]
# Event numbers outgrow GraphQL's 32-bit Int; JSON numbers carry them exactly to 2**53.
BigInt = NewType("BigInt", int)
BIG_INT_SCALAR = strawberry.scalar(
    name="BigInt", serialize=int, parse_value=int, description="A 64-bit integer."
)
MAX_HISTORY = 100


def _parse_date_time(value: object) -> datetime:
    """Strawberry's ISO 8601 parsing, then the range the database can hold."""
    assert DateTimeDefinition.parse_value is not None
    parsed: datetime = DateTimeDefinition.parse_value(value)
    return check_date_time(parsed)


# Strawberry's DateTime (same name, description and output), with every input, variable or
# literal, checked where it enters: past PostgreSQL's range it is BAD_USER_INPUT instead of
# an OverflowError or DataError deep in a resolver.
DATE_TIME_SCALAR = dataclasses.replace(DateTimeDefinition, parse_value=_parse_date_time)


def _uuid(value: object) -> UUID:
    """The UUID behind an ID this server produced."""
    return UUID(str(value))


T = TypeVar("T")
R = TypeVar("R")
MaybeAwaitable: TypeAlias = R | Awaitable[R]


def from_loader(
    loader: DataLoader[Any, T], key: Any, convert: Callable[[T], R]
) -> MaybeAwaitable[R]:
    """The converted value at once when the loader already has it, else an awaitable.

    Returning a plain value keeps graphql-core on its synchronous path for the field.
    """
    future = loader.load(key)
    if isinstance(future, asyncio.Future) and future.done():
        return convert(future.result())
    return _convert_when_loaded(future, convert)


async def _convert_when_loaded(future: Awaitable[T], convert: Callable[[T], R]) -> R:
    return convert(await future)


def _history_limit(first: int) -> int:
    if not 0 <= first <= MAX_HISTORY:
        raise BadUserInput(f"first must be between 0 and {MAX_HISTORY}", field="first")
    return first


@strawberry.type(description="A person who signs in: an agent, a manager or an admin.")
class User:
    id: strawberry.ID
    email: str
    name: str
    role: str
    active: bool
    created_at: datetime

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> User:
        """A User from a users row (which never carries the password hash here)."""
        return cls(
            id=strawberry.ID(str(record["id"])),
            email=record["email"],
            name=record["name"],
            role=record["role"],
            active=record["active"],
            created_at=record["created_at"],
        )


async def _load_user(info: GraphInfo, user_id: Any) -> User | None:
    if user_id is None:
        return None
    record = await info.context.loaders.user.load(user_id)
    return User.from_record(record) if record else None


async def _load_prospect(info: GraphInfo, prospect_id: Any) -> Prospect | None:
    record = await info.context.loaders.prospect.load(prospect_id)
    return Prospect.from_record(record) if record else None


@strawberry.type(description="One call attempt: who called, when, and how it ended.")
class CallLog:
    id: strawberry.ID
    prospect_id: strawberry.ID
    caller_id: strawberry.ID
    phone_number: str
    from_number: str | None
    started_at: datetime
    ended_at: datetime | None
    outcome: str | None
    duration: int | None = strawberry.field(description="Talk time in seconds.")
    notes: str | None
    recording_url: str | None

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> CallLog:
        """A CallLog from a call_logs row."""
        return cls(
            id=strawberry.ID(str(record["id"])),
            prospect_id=strawberry.ID(str(record["prospect_id"])),
            caller_id=strawberry.ID(str(record["caller_id"])),
            phone_number=record["phone_number"],
            from_number=record["from_number"],
            started_at=record["started_at"],
            ended_at=record["ended_at"],
            outcome=record["outcome"],
            duration=record["duration"],
            notes=record["notes"],
            recording_url=record["recording_url"],
        )

    @strawberry.field
    async def caller(self, info: GraphInfo) -> User | None:
        return await _load_user(info, _uuid(self.caller_id))

    @strawberry.field
    async def prospect(self, info: GraphInfo) -> Prospect | None:
        return await _load_prospect(info, _uuid(self.prospect_id))


@strawberry.type(description="A call in progress: its prospect is locked to its caller.")
class ActiveCall:
    id: strawberry.ID
    prospect_id: strawberry.ID
    caller_id: strawberry.ID
    call_log_id: strawberry.ID
    phone_number: str
    started_at: datetime
    lease_expires_at: datetime = strawberry.field(
        description="When the call expires unless heartbeatCall extends it."
    )
    prospect_name: str
    caller_name: str

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | asyncpg.Record) -> ActiveCall:
        """An ActiveCall from an active_calls row (with names) or an event's JSON."""
        started_at = record["started_at"]
        lease = record["lease_expires_at"]
        return cls(
            id=strawberry.ID(str(record["id"])),
            prospect_id=strawberry.ID(str(record["prospect_id"])),
            caller_id=strawberry.ID(str(record["caller_id"])),
            call_log_id=strawberry.ID(str(record["call_log_id"])),
            phone_number=record["phone_number"],
            started_at=datetime.fromisoformat(started_at)
            if isinstance(started_at, str)
            else started_at,
            lease_expires_at=datetime.fromisoformat(lease) if isinstance(lease, str) else lease,
            prospect_name=record["prospect_name"],
            caller_name=record["caller_name"],
        )

    @strawberry.field
    async def caller(self, info: GraphInfo) -> User | None:
        return await _load_user(info, _uuid(self.caller_id))

    @strawberry.field
    async def prospect(self, info: GraphInfo) -> Prospect | None:
        return await _load_prospect(info, _uuid(self.prospect_id))


@strawberry.enum(description="What happened to the active calls.")
class ActiveCallEventType(Enum):
    SNAPSHOT = "SNAPSHOT"
    STARTED = "STARTED"
    ENDED = "ENDED"
    EXPIRED = "EXPIRED"


@strawberry.type(description="A change to the active calls, or a SNAPSHOT of all of them.")
class ActiveCallEvent:
    type: ActiveCallEventType
    seq: BigInt = strawberry.field(
        description=(
            "Numbers the call events this server sends, in commit order and without gaps "
            "(a subscription narrowed to one agent skips the others' numbers); a SNAPSHOT "
            "carries the number it is current as of. Numbers belong to one server: after "
            "reconnecting, start again from the SNAPSHOT."
        )
    )
    at: datetime
    active_call: ActiveCall | None = strawberry.field(
        description="The call that STARTED, ENDED or EXPIRED."
    )
    outcome: str | None = strawberry.field(description="For ENDED and EXPIRED.")
    active_calls: list[ActiveCall] | None = strawberry.field(
        description="For SNAPSHOT: every active call (of the agent, when narrowed)."
    )


@strawberry.type(description="One status change, written by a trigger whoever made it.")
class StatusChange:
    id: strawberry.ID
    prospect_id: strawberry.ID
    old_status: str | None
    new_status: str
    changed_by_id: strawberry.ID | None
    created_at: datetime

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> StatusChange:
        """A StatusChange from a prospect_status_log row."""
        changed_by = record["changed_by"]
        return cls(
            id=strawberry.ID(str(record["id"])),
            prospect_id=strawberry.ID(str(record["prospect_id"])),
            old_status=record["old_status"],
            new_status=record["new_status"],
            changed_by_id=strawberry.ID(str(changed_by)) if changed_by else None,
            created_at=record["created_at"],
        )

    @strawberry.field(description="The user who made the change; null for a change made in SQL.")
    async def changed_by(self, info: GraphInfo) -> User | None:
        return await _load_user(info, _uuid(self.changed_by_id) if self.changed_by_id else None)


@strawberry.type(description="Which agent works a prospect, and until when.")
class LeadAssignment:
    id: strawberry.ID
    prospect_id: strawberry.ID
    agent_id: strawberry.ID
    assigned_by_id: strawberry.ID | None
    assigned_at: datetime
    expires_at: datetime | None
    active: bool

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> LeadAssignment:
        """A LeadAssignment from a lead_assignments row."""
        assigned_by = record["assigned_by"]
        return cls(
            id=strawberry.ID(str(record["id"])),
            prospect_id=strawberry.ID(str(record["prospect_id"])),
            agent_id=strawberry.ID(str(record["agent_id"])),
            assigned_by_id=strawberry.ID(str(assigned_by)) if assigned_by else None,
            assigned_at=record["assigned_at"],
            expires_at=record["expires_at"],
            active=record["active"],
        )

    @strawberry.field
    async def agent(self, info: GraphInfo) -> User | None:
        return await _load_user(info, _uuid(self.agent_id))


@strawberry.type(description="A lead: someone the floor calls.")
class Prospect:
    id: strawberry.ID
    name: str
    phone: str = strawberry.field(description="E.164, e.g. +12125550123.")
    email: str | None
    company: str | None
    status: str
    last_call: datetime | None
    created_at: datetime
    updated_at: datetime
    time_zone: str | None = strawberry.field(
        description="The zone set explicitly; null when derived from the phone number."
    )
    time_zones: list[str] = strawberry.field(
        description="The zones whose calling hours apply: the explicit one, else the number's."
    )
    priority: int = strawberry.field(description="Higher is offered first by nextLead.")

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> Prospect:
        """A Prospect from a prospects row (with its effective time zones)."""
        return cls(
            id=strawberry.ID(str(record["id"])),
            name=record["name"],
            phone=record["phone"],
            email=record["email"],
            company=record["company"],
            status=record["status"],
            last_call=record["last_call"],
            created_at=record["created_at"],
            updated_at=record["updated_at"],
            time_zone=record.get("time_zone"),
            time_zones=list(record.get("time_zones") or []),
            priority=record.get("priority") or 0,
        )

    @strawberry.field(
        description="Calls to this prospect, newest first.", graphql_type=list[CallLog]
    )
    def call_history(self, info: GraphInfo, first: int = 20) -> MaybeAwaitable[list[CallLog]]:
        key = (_uuid(self.id), _history_limit(first))
        return from_loader(info.context.loaders.call_history, key, _call_logs)

    @strawberry.field(
        description="Status changes of this prospect, newest first.",
        graphql_type=list[StatusChange],
    )
    def status_history(
        self, info: GraphInfo, first: int = 20
    ) -> MaybeAwaitable[list[StatusChange]]:
        key = (_uuid(self.id), _history_limit(first))
        return from_loader(info.context.loaders.status_history, key, _status_changes)

    @strawberry.field(description="The call in progress, if any.", graphql_type=ActiveCall | None)
    def active_call(self, info: GraphInfo) -> MaybeAwaitable[ActiveCall | None]:
        return from_loader(info.context.loaders.active_call, _uuid(self.id), _active_call)

    @strawberry.field(
        description="The live (active, unexpired) assignment, if any.",
        graphql_type=LeadAssignment | None,
    )
    def assignment(self, info: GraphInfo) -> MaybeAwaitable[LeadAssignment | None]:
        return from_loader(info.context.loaders.assignment, _uuid(self.id), _assignment)


def _call_logs(rows: list[asyncpg.Record]) -> list[CallLog]:
    return [CallLog.from_record(row) for row in rows]


def _status_changes(rows: list[asyncpg.Record]) -> list[StatusChange]:
    return [StatusChange.from_record(row) for row in rows]


def _active_call(record: asyncpg.Record | None) -> ActiveCall | None:
    return ActiveCall.from_record(record) if record else None


def _assignment(record: asyncpg.Record | None) -> LeadAssignment | None:
    return LeadAssignment.from_record(record) if record else None


def _selected(selections: list[Selection]) -> Iterator[SelectedField]:
    """The fields of a selection set, looking through fragments."""
    for selection in selections:
        if isinstance(selection, SelectedField):
            yield selection
        else:
            yield from _selected(selection.selections)


async def prefetch_prospect_fields(info: GraphInfo, ids: list[UUID]) -> None:
    """Load a page's nested fields in one batch each, before the nodes resolve.

    The node fields then find their data loaded and resolve synchronously, which spares
    the executor an awaitable per field per row. Purely an optimisation: a field missed
    here is loaded lazily, in a batch, all the same.
    """
    loaders = info.context.loaders
    pending: list[Awaitable[Any]] = []
    for connection in _selected(info.selected_fields):
        for edges in _selected(connection.selections):
            for node in (f for f in _selected(edges.selections) if f.name == "node"):
                for field in _selected(node.selections):
                    if field.name == "activeCall":
                        pending.append(loaders.active_call.load_many(ids))
                    elif field.name == "assignment":
                        pending.append(loaders.assignment.load_many(ids))
                    elif field.name in ("callHistory", "statusHistory"):
                        first = field.arguments.get("first", 20)
                        if not isinstance(first, int) or not 0 <= first <= MAX_HISTORY:
                            continue  # the field itself reports the bad argument
                        loader = (
                            loaders.call_history
                            if field.name == "callHistory"
                            else loaders.status_history
                        )
                        pending.append(loader.load_many([(i, first) for i in ids]))
    if pending:
        await asyncio.gather(*pending)


@strawberry.type
class ProspectEdge:
    cursor: str
    node: Prospect


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type(description="A page of prospects, newest first (Relay connection).")
class ProspectConnection:
    edges: list[ProspectEdge]
    page_info: PageInfo


@strawberry.type(description="Whether the signed-in user may call a prospect now, and why not.")
class CallCheck:
    allowed: bool
    reason: str | None
    code: str | None
    until: datetime | None = strawberry.field(
        description="When the refusing rule stops refusing, where that is known."
    )
    last_call_time: datetime | None
    last_caller_id: strawberry.ID | None


@strawberry.type
class StartCallPayload:
    active_call_id: strawberry.ID
    call_log_id: strawberry.ID
    active_call: ActiveCall


@strawberry.type
class LoginPayload:
    token: str
    user: User


@strawberry.type(description="A call outcome and the prospect status it sets.")
class Disposition:
    name: str
    sets_status: str | None


@strawberry.input
class ProspectFilter:
    status: str | None = None
    search: str | None = strawberry.field(
        default=None, description="Matches name, email, company or phone digits."
    )
    assigned_to: strawberry.ID | None = None


@strawberry.input
class CreateProspectInput:
    name: str
    phone: str = strawberry.field(description="Any common form; stored as E.164.")
    email: str | None = None
    company: str | None = None
    status: str | None = None
    time_zone: str | None = strawberry.field(
        default=None, description="IANA zone; by default derived from the phone number."
    )
    priority: int | None = None


@strawberry.input(description="Only the fields given change; null clears email or company.")
class UpdateProspectInput:
    name: str | None = strawberry.UNSET
    phone: str | None = strawberry.UNSET
    email: str | None = strawberry.UNSET
    company: str | None = strawberry.UNSET
    status: str | None = strawberry.UNSET
    time_zone: str | None = strawberry.UNSET
    priority: int | None = strawberry.UNSET


@strawberry.input
class CreateUserInput:
    email: str
    password: str
    role: str = strawberry.field(description="agent, manager or admin.")
    name: str = ""


_converted_events: weakref.WeakKeyDictionary[CallEvent, ActiveCallEvent] = (
    weakref.WeakKeyDictionary()
)


def active_call_event(event: CallEvent) -> ActiveCallEvent:
    """The GraphQL shape of a hub event: one object per event, shared by its subscribers."""
    converted = _converted_events.get(event)
    if converted is None:
        converted = _converted_events[event] = _convert_event(event)
    return converted


def _convert_event(event: CallEvent) -> ActiveCallEvent:
    return ActiveCallEvent(
        type=ActiveCallEventType(event.type),
        seq=BigInt(event.seq),
        at=event.at,
        active_call=ActiveCall.from_record(event.active_call) if event.active_call else None,
        outcome=event.outcome,
        active_calls=(
            [ActiveCall.from_record(call) for call in event.active_calls]
            if event.active_calls is not None
            else None
        ),
    )
