"""The schema: queries and mutations, each a thin layer over resolvers/."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable
from datetime import datetime
from typing import Any

import strawberry
from graphql import ASTValidationRule, GraphQLError
from strawberry.extensions import (
    AddValidationRules,
    MaxTokensLimiter,
    ParserCache,
    ValidationCache,
    query_depth_limiter,
)
from strawberry.extensions import max_aliases as max_aliases_limiter
from strawberry.schema.config import StrawberryConfig
from strawberry.types.execution import ExecutionContext, ExecutionResult
from strawberry.types.graphql import OperationType

from graph.dialing import DialingMutations, DialingQueries
from graph.execution import SharedEventExecutionContext
from graph.extensions import ErrorCodes, log_errors
from graph.imports import ImportMutations
from graph.reports import ReportMutations, ReportQueries
from graph.types import (
    BIG_INT_SCALAR,
    ActiveCall,
    ActiveCallEvent,
    BigInt,
    CallCheck,
    CallLog,
    CreateProspectInput,
    CreateUserInput,
    Disposition,
    GraphInfo,
    LeadAssignment,
    LoginPayload,
    PageInfo,
    Prospect,
    ProspectConnection,
    ProspectEdge,
    ProspectFilter,
    StartCallPayload,
    UpdateProspectInput,
    User,
    active_call_event,
    prefetch_prospect_fields,
)
from resolvers import assignments, calls, prospects, users
from resolvers.auth import SUPERVISORS, LoginLimits, hash_token, login, logout
from resolvers.calls import CallOutcome
from resolvers.errors import BadUserInput, parse_id
from resolvers.prospects import ProspectChanges

DEFAULT_MAX_DEPTH = 10
MAX_TOKENS = 5000
DEFAULT_MAX_ALIASES = 30


def _changes(data: CreateProspectInput | UpdateProspectInput) -> ProspectChanges:
    """ProspectChanges from an input; for updates, an explicit null clears the field."""
    given = {
        name: value
        for name in ("name", "phone", "email", "company", "status", "time_zone", "priority")
        if (value := getattr(data, name)) is not strawberry.UNSET
    }
    clearable = {"email": "email", "company": "company", "time_zone": "timeZone"}
    cleared = tuple(
        column for name, column in clearable.items() if name in given and given[name] is None
    )
    for name in ("name", "phone", "status", "priority"):
        if isinstance(data, UpdateProspectInput) and name in given and given[name] is None:
            raise BadUserInput(f"{name} cannot be null", field=name)
    return ProspectChanges(
        name=given.get("name"),
        phone=given.get("phone"),
        email=given.get("email"),
        company=given.get("company"),
        status=given.get("status"),
        time_zone=given.get("time_zone"),
        priority=given.get("priority"),
        cleared=cleared,
    )


@strawberry.type
class Query(ReportQueries, DialingQueries):
    @strawberry.field(description="The signed-in user.")
    async def viewer(self, info: GraphInfo) -> User:
        actor = await info.context.require_user()
        return User(
            id=strawberry.ID(str(actor.id)),
            email=actor.email,
            name=actor.name,
            role=actor.role,
            active=True,
            created_at=actor.created_at,
        )

    @strawberry.field
    async def prospect(self, info: GraphInfo, id: strawberry.ID) -> Prospect:
        await info.context.require_user()
        record = await prospects.get_prospect(info.context.pool, parse_id(id))
        return Prospect.from_record(record)

    @strawberry.field(description="Prospects, newest first, as a Relay connection.")
    async def prospects(
        self,
        info: GraphInfo,
        first: int = 20,
        after: str | None = None,
        filter: ProspectFilter | None = None,
    ) -> ProspectConnection:
        await info.context.require_user()
        assigned_to = filter.assigned_to if filter else None
        rows, has_next = await prospects.list_prospects(
            info.context.pool,
            first=first,
            after=after,
            status=filter.status if filter else None,
            search=filter.search if filter else None,
            assigned_to=parse_id(assigned_to, "assignedTo") if assigned_to else None,
        )
        await prefetch_prospect_fields(info, [row["id"] for row in rows])
        edges = [
            ProspectEdge(cursor=prospects.encode_cursor(row), node=Prospect.from_record(row))
            for row in rows
        ]
        return ProspectConnection(
            edges=edges,
            page_info=PageInfo(
                has_next_page=has_next,
                has_previous_page=after is not None,
                start_cursor=edges[0].cursor if edges else None,
                end_cursor=edges[-1].cursor if edges else None,
            ),
        )

    @strawberry.field(description="Whether the signed-in user may call the prospect now.")
    async def can_call(self, info: GraphInfo, prospect_id: strawberry.ID) -> CallCheck:
        actor = await info.context.require_user()
        # An unknown prospect is an error, as in prospect(id) and the REST can-call.
        rules = await calls.explain_eligibility(
            info.context.pool, actor, parse_id(prospect_id, "prospectId")
        )
        refusal = calls.first_refusal(rules)
        caller = rules[0]["last_caller_id"]
        return CallCheck(
            allowed=refusal is None,
            reason=refusal["reason"] if refusal else None,
            code=refusal["code"] if refusal else None,
            until=refusal["until"] if refusal else None,
            last_call_time=rules[0]["last_call_time"],
            last_caller_id=strawberry.ID(str(caller)) if caller else None,
        )

    @strawberry.field(description="Every call in progress, oldest first.")
    async def active_calls(self, info: GraphInfo) -> list[ActiveCall]:
        await info.context.require_user()
        return [ActiveCall.from_record(r) for r in await calls.list_active_calls(info.context.pool)]

    @strawberry.field(description="Every user (managers and admins).")
    async def users(self, info: GraphInfo) -> list[User]:
        await info.context.require_role(*SUPERVISORS)
        return [User.from_record(r) for r in await users.list_users(info.context.pool)]

    @strawberry.field(description="The outcomes a call can end with.")
    async def dispositions(self, info: GraphInfo) -> list[Disposition]:
        await info.context.require_user()
        return [
            Disposition(name=r["name"], sets_status=r["sets_status"])
            for r in await calls.list_dispositions(info.context.pool)
        ]


@strawberry.type
class Mutation(ReportMutations, ImportMutations, DialingMutations):
    @strawberry.mutation(description="Exchange credentials for a bearer token.")
    async def login(self, info: GraphInfo, email: str, password: str) -> LoginPayload:
        settings = info.context.settings
        token, record = await login(
            info.context.pool,
            email,
            password,
            LoginLimits(
                max_failures=settings.login_max_failures,
                window_seconds=settings.login_failure_window_seconds,
                token_ttl_seconds=settings.token_ttl_seconds,
            ),
        )
        return LoginPayload(token=token, user=User.from_record(record))

    @strawberry.mutation(description="Revoke the token this request was made with.")
    async def logout(self, info: GraphInfo) -> bool:
        await info.context.require_user()
        assert info.context.token is not None
        return await logout(info.context.pool, info.context.token)

    @strawberry.mutation
    async def create_prospect(self, info: GraphInfo, input: CreateProspectInput) -> Prospect:
        actor = await info.context.require_user()
        record = await prospects.create_prospect(
            info.context.pool, actor, _changes(input), info.context.settings.default_phone_region
        )
        return Prospect.from_record(record)

    @strawberry.mutation
    async def update_prospect(
        self, info: GraphInfo, id: strawberry.ID, input: UpdateProspectInput
    ) -> Prospect:
        actor = await info.context.require_user()
        record = await prospects.update_prospect(
            info.context.pool,
            actor,
            parse_id(id),
            _changes(input),
            info.context.settings.default_phone_region,
        )
        return Prospect.from_record(record)

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

    @strawberry.mutation(description="Assign a prospect to an agent (managers and admins).")
    async def assign_lead(
        self,
        info: GraphInfo,
        prospect_id: strawberry.ID,
        agent_id: strawberry.ID,
        expires_at: datetime | None = None,
    ) -> LeadAssignment:
        actor = await info.context.require_role(*SUPERVISORS)
        record = await assignments.assign_lead(
            info.context.pool,
            actor,
            parse_id(prospect_id, "prospectId"),
            parse_id(agent_id, "agentId"),
            expires_at,
        )
        return LeadAssignment.from_record(record)

    @strawberry.mutation(description="End a prospect's assignment (managers and admins).")
    async def unassign_lead(self, info: GraphInfo, prospect_id: strawberry.ID) -> bool:
        actor = await info.context.require_role(*SUPERVISORS)
        return await assignments.unassign_lead(
            info.context.pool, actor, parse_id(prospect_id, "prospectId")
        )

    @strawberry.mutation(description="Create a user (admins).")
    async def create_user(self, info: GraphInfo, input: CreateUserInput) -> User:
        await info.context.require_role("admin")
        record = await users.create_user(
            info.context.pool,
            email=input.email,
            name=input.name,
            password=input.password,
            role=input.role,
            bcrypt_rounds=info.context.settings.bcrypt_rounds,
        )
        return User.from_record(record)


@strawberry.type
class Subscription:
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
        async with hub.subscription(actor.id, hash_token(token).hex(), agent) as events:
            async for event in events:
                yield active_call_event(event)


class CallfloorSchema(strawberry.Schema):
    """Logs unexpected errors whole; expected ones are the client's business."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        log_errors(errors)

    async def execute(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        """Run one operation; a subscription streams (WebSocket), so here it is refused."""
        # Strawberry lets a plain POST run a subscription as if it were a query, which
        # crashes into INTERNAL_SERVER_ERROR; without it the view answers a 400 instead.
        allowed = set(allowed_operation_types or OperationType) - {OperationType.SUBSCRIPTION}
        return await super().execute(
            query,
            variable_values,
            context_value,
            root_value,
            operation_name,
            allowed,
            operation_extensions,
        )


def create_schema(
    max_depth: int = DEFAULT_MAX_DEPTH, max_aliases: int = DEFAULT_MAX_ALIASES
) -> strawberry.Schema:
    """The schema with its limits (depth, aliases), caches and error handling on."""
    # The rule classes are made once: ValidationCache keys on them, so a document seen
    # before skips parsing and validation entirely.
    limits: list[type[ASTValidationRule]] = [
        query_depth_limiter.create_validator(max_depth, should_ignore=None),
        max_aliases_limiter.create_validator(max_aliases),
    ]
    extensions: list[Any] = [
        # Refuses absurdly long documents before parsing them at all.
        lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
        lambda: AddValidationRules(limits),
        ParserCache,
        ValidationCache,
        ErrorCodes,
    ]
    return CallfloorSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=extensions,
        config=StrawberryConfig(scalar_map={BigInt: BIG_INT_SCALAR}),
        execution_context_class=SharedEventExecutionContext,
    )
