"""The dialing surface: nextLead, explainEligibility, Do-Not-Call, hours, caps, callbacks."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import strawberry

import metrics
from graph.types import ActiveCall, GraphInfo, Prospect
from resolvers import calls, dialing, prospects
from resolvers.auth import SUPERVISORS
from resolvers.errors import BadUserInput, parse_id


@strawberry.type(description="One call rule and whether it blocks now.")
class EligibilityRule:
    code: str
    blocking: bool
    queue_only: bool = strawberry.field(
        description="Keeps the prospect out of nextLead but does not refuse a manual call."
    )
    until: datetime | None = strawberry.field(
        description="When the rule stops blocking, where that is known."
    )
    reason: str


@strawberry.type(description="Every rule for one prospect, for the signed-in caller.")
class Eligibility:
    prospect_id: strawberry.ID
    callable: bool = strawberry.field(description="A manual call would be allowed.")
    callable_by_next_lead: bool = strawberry.field(description="nextLead could offer it.")
    rules: list[EligibilityRule]


@strawberry.type(description="How many open prospects a rule holds back right now.")
class HeldBack:
    code: str
    prospects: int


@strawberry.type
class NextLeadPayload:
    prospect: Prospect | None = strawberry.field(description="Null when nothing is callable.")
    active_call: ActiveCall | None
    call_log_id: strawberry.ID | None
    nothing_callable: bool
    held_back: list[HeldBack] = strawberry.field(
        description=(
            "When nothing is callable: what holds the open prospects back. Shared between "
            "agents for up to HELD_BACK_CACHE_SECONDS (5 s), so a few seconds old at most."
        )
    )


@strawberry.type(description="A number on the Do-Not-Call list (or once on it).")
class DoNotCallEntry:
    id: strawberry.ID
    phone: str
    scope: str | None
    source: str
    reason: str | None
    expires_at: datetime | None
    added_by_id: strawberry.ID | None
    added_at: datetime
    removed_at: datetime | None

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> DoNotCallEntry:
        """An entry from a do_not_call row."""
        added_by = record["added_by"]
        return cls(
            id=strawberry.ID(str(record["id"])),
            phone=record["phone"],
            scope=record["scope"],
            source=record["source"],
            reason=record["reason"],
            expires_at=record["expires_at"],
            added_by_id=strawberry.ID(str(added_by)) if added_by else None,
            added_at=record["added_at"],
            removed_at=record["removed_at"],
        )


@strawberry.type(description="The calling window of one weekday, in the callee's local time.")
class CallingHours:
    weekday: int = strawberry.field(description="0 = Sunday ... 6 = Saturday.")
    opens_at: str
    closes_at: str

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> CallingHours:
        """Hours from a calling_hours row, as HH:MM (24:00 for the end of the day)."""
        closes = record["closes_at"]
        return cls(
            weekday=record["weekday"],
            opens_at=record["opens_at"].strftime("%H:%M"),
            closes_at="24:00"
            if closes.hour == 23 and closes.second == 59
            else closes.strftime("%H:%M"),
        )


@strawberry.input
class CallingHoursInput:
    weekday: int
    opens_at: str = strawberry.field(description="HH:MM")
    closes_at: str = strawberry.field(description="HH:MM, or 24:00")


@strawberry.type(description="Attempt caps, the callback grace and the default time zone.")
class DialingRules:
    max_attempts_total: int
    max_attempts_per_day: int = strawberry.field(description="In the callee's local day.")
    max_attempts_per_number_24h: int
    callback_grace_seconds: int
    default_time_zone: str

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> DialingRules:
        """The rules from the dialing_rules row."""
        return cls(**{field: record[field] for field in record.keys()})  # noqa: SIM118


@strawberry.input
class DialingRulesInput:
    max_attempts_total: int | None = None
    max_attempts_per_day: int | None = None
    max_attempts_per_number_24h: int | None = None
    callback_grace_seconds: int | None = None
    default_time_zone: str | None = None


@strawberry.type
class Callback:
    id: strawberry.ID
    prospect_id: strawberry.ID
    due_at: datetime
    agent_id: strawberry.ID | None = strawberry.field(description="Null: anyone may take it.")
    created_at: datetime

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> Callback:
        """A Callback from a callbacks row."""
        agent = record["agent_id"]
        return cls(
            id=strawberry.ID(str(record["id"])),
            prospect_id=strawberry.ID(str(record["prospect_id"])),
            due_at=record["due_at"],
            agent_id=strawberry.ID(str(agent)) if agent else None,
            created_at=record["created_at"],
        )


@strawberry.type(description="A call outcome and what it means.")
class DispositionRules:
    name: str
    sets_status: str | None
    counts_as_contact: bool
    is_final: bool
    adds_to_do_not_call: bool
    schedules_callback: bool
    recycle_delay_seconds: int | None

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> DispositionRules:
        """From a dispositions row."""
        return cls(**{field: record[field] for field in record.keys()})  # noqa: SIM118


@strawberry.input
class DispositionInput:
    sets_status: str | None = None
    counts_as_contact: bool | None = None
    is_final: bool | None = None
    adds_to_do_not_call: bool | None = None
    schedules_callback: bool | None = None
    recycle_delay_seconds: int | None = strawberry.field(
        default=None, description="Seconds before nextLead offers the prospect again; -1 clears."
    )


@strawberry.type
class DialingQueries:
    @strawberry.field(description="Every call rule for a prospect and whether it blocks now.")
    async def explain_eligibility(
        self, info: GraphInfo, prospect_id: strawberry.ID, at: datetime | None = None
    ) -> Eligibility:
        actor = await info.context.require_user()
        rules = await calls.explain_eligibility(
            info.context.pool, actor, parse_id(prospect_id, "prospectId"), at
        )
        return Eligibility(
            prospect_id=prospect_id,
            callable=not any(rule["refuses_call"] for rule in rules),
            callable_by_next_lead=not any(rule["refuses_next_lead"] for rule in rules),
            rules=[
                EligibilityRule(
                    code=rule["code"],
                    blocking=rule["blocking"],
                    queue_only=rule["queue_only"],
                    until=rule["until"],
                    reason=rule["reason"],
                )
                for rule in rules
            ],
        )

    @strawberry.field(description="Numbers on the Do-Not-Call list (managers and admins).")
    async def do_not_call_entries(
        self,
        info: GraphInfo,
        phone: str | None = None,
        include_removed: bool = False,
        first: int = 100,
    ) -> list[DoNotCallEntry]:
        await info.context.require_role(*SUPERVISORS)
        rows = await dialing.list_do_not_call(
            info.context.pool,
            phone=phone,
            region=info.context.settings.default_phone_region,
            include_removed=include_removed,
            first=first,
        )
        return [DoNotCallEntry.from_record(row) for row in rows]

    @strawberry.field(description="The calling window per weekday, in the callee's local time.")
    async def calling_hours(self, info: GraphInfo) -> list[CallingHours]:
        await info.context.require_user()
        return [CallingHours.from_record(r) for r in await dialing.calling_hours(info.context.pool)]

    @strawberry.field
    async def dialing_rules(self, info: GraphInfo) -> DialingRules:
        await info.context.require_user()
        return DialingRules.from_record(await dialing.dialing_rules(info.context.pool))

    @strawberry.field(description="Callbacks not yet taken: yours and anyone's (all for managers).")
    async def callbacks(self, info: GraphInfo, first: int = 100) -> list[Callback]:
        actor = await info.context.require_user()
        agent = None if actor.is_supervisor else actor.id
        rows = await dialing.open_callbacks(info.context.pool, agent, first)
        return [Callback.from_record(row) for row in rows]

    @strawberry.field(description="Every outcome and what it means.")
    async def disposition_rules(self, info: GraphInfo) -> list[DispositionRules]:
        await info.context.require_user()
        return [
            DispositionRules.from_record(r)
            for r in await calls.list_dispositions(info.context.pool)
        ]


@strawberry.type
class DialingMutations:
    @strawberry.mutation(
        description=(
            "Start a call on the best callable prospect for the signed-in user: due callbacks, "
            "then their assignments, then the pool. Or say what holds everything back."
        )
    )
    async def next_lead(self, info: GraphInfo) -> NextLeadPayload:
        actor = await info.context.require_user()
        with metrics.counting_next_lead_errors():
            result = await dialing.next_lead(info.context.pool, actor, info.context.held_back)
        metrics.count_next_lead("nothing_callable" if result.call is None else "started")
        if result.call is None:
            return NextLeadPayload(
                prospect=None,
                active_call=None,
                call_log_id=None,
                nothing_callable=True,
                held_back=[HeldBack(code=h.code, prospects=h.prospects) for h in result.held_back],
            )
        record = await prospects.get_prospect(info.context.pool, result.call["prospect_id"])
        return NextLeadPayload(
            prospect=Prospect.from_record(record),
            active_call=ActiveCall.from_record(result.call["active_call"]),
            call_log_id=strawberry.ID(str(result.call["call_log_id"])),
            nothing_callable=False,
            held_back=[],
        )

    @strawberry.mutation(description="Schedule a callback, for yourself alone or for anyone.")
    async def schedule_callback(
        self,
        info: GraphInfo,
        prospect_id: strawberry.ID,
        at: datetime,
        mine: bool = True,
        move_to_next_window: bool = False,
    ) -> Callback:
        actor = await info.context.require_user()
        record = await dialing.schedule_callback(
            info.context.pool,
            actor,
            parse_id(prospect_id, "prospectId"),
            at,
            mine=mine,
            move_to_next_window=move_to_next_window,
        )
        return Callback.from_record(record)

    @strawberry.mutation(description="Put a number on the Do-Not-Call list (managers, admins).")
    async def add_do_not_call(
        self,
        info: GraphInfo,
        phone: str,
        reason: str | None = None,
        scope: str | None = None,
        expires_at: datetime | None = None,
    ) -> DoNotCallEntry:
        actor = await info.context.require_role(*SUPERVISORS)
        record = await dialing.add_do_not_call(
            info.context.pool,
            actor,
            phone=phone,
            region=info.context.settings.default_phone_region,
            reason=reason,
            scope=scope,
            expires_at=expires_at,
        )
        return DoNotCallEntry.from_record(record)

    @strawberry.mutation(description="Take a number off the list; the entry is kept as audit.")
    async def remove_do_not_call(
        self, info: GraphInfo, phone: str, reason: str | None = None
    ) -> bool:
        actor = await info.context.require_role(*SUPERVISORS)
        return await dialing.remove_do_not_call(
            info.context.pool,
            actor,
            phone=phone,
            region=info.context.settings.default_phone_region,
            reason=reason,
        )

    @strawberry.mutation(description="Replace the weekly calling window (managers, admins).")
    async def set_calling_hours(
        self, info: GraphInfo, hours: list[CallingHoursInput]
    ) -> list[CallingHours]:
        await info.context.require_role(*SUPERVISORS)
        rows = await dialing.set_calling_hours(
            info.context.pool, [(h.weekday, h.opens_at, h.closes_at) for h in hours]
        )
        return [CallingHours.from_record(row) for row in rows]

    @strawberry.mutation(description="Change attempt caps, callback grace or default zone.")
    async def update_dialing_rules(self, info: GraphInfo, input: DialingRulesInput) -> DialingRules:
        await info.context.require_role(*SUPERVISORS)
        record = await dialing.update_dialing_rules(
            info.context.pool,
            dialing.RuleChanges(
                max_attempts_total=input.max_attempts_total,
                max_attempts_per_day=input.max_attempts_per_day,
                max_attempts_per_number_24h=input.max_attempts_per_number_24h,
                callback_grace_seconds=input.callback_grace_seconds,
                default_time_zone=input.default_time_zone,
            ),
        )
        return DialingRules.from_record(record)

    @strawberry.mutation(description="Change what an outcome means (managers, admins).")
    async def update_disposition(
        self, info: GraphInfo, name: str, input: DispositionInput
    ) -> DispositionRules:
        await info.context.require_role(*SUPERVISORS)
        if not name.strip():
            raise BadUserInput("name is required", field="name")
        record = await dialing.update_disposition(
            info.context.pool,
            name,
            dialing.DispositionChanges(
                sets_status=input.sets_status,
                counts_as_contact=input.counts_as_contact,
                is_final=input.is_final,
                adds_to_do_not_call=input.adds_to_do_not_call,
                schedules_callback=input.schedules_callback,
                recycle_delay_seconds=input.recycle_delay_seconds,
            ),
        )
        return DispositionRules.from_record(record)
