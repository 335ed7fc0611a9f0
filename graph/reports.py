"""Manager reports (the seed's Monitoring queries), over live and archived history."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated
from uuid import UUID

import asyncpg
import strawberry

from graph.types import BigInt, GraphInfo, PageInfo, Prospect, User
from resolvers import reports
from resolvers.auth import SUPERVISORS


async def _user(info: GraphInfo, user_id: strawberry.ID | None) -> User | None:
    if user_id is None:
        return None
    record = await info.context.loaders.user.load(UUID(str(user_id)))
    return User.from_record(record) if record else None


async def _prospect(info: GraphInfo, prospect_id: strawberry.ID) -> Prospect | None:
    record = await info.context.loaders.prospect.load(UUID(str(prospect_id)))
    return Prospect.from_record(record) if record else None


@strawberry.enum(description="How wide each point of callStats is.")
class CallStatsBucket(Enum):
    HOUR = "hour"
    DAY = "day"


@strawberry.type(description="Ended calls with one outcome.")
class OutcomeCount:
    outcome: str
    calls: int
    contact: bool = strawberry.field(description="Whether this outcome counts as a contact.")


@strawberry.type(description="One agent's calls started in a report's range.")
class AgentPerformance:
    agent_id: strawberry.ID
    calls: int = strawberry.field(description="Calls started in the range, ended or not.")
    contacts: int = strawberry.field(
        description="Calls whose outcome counts as a contact (Connected, Not Interested, ...)."
    )
    contact_rate: float | None = strawberry.field(description="contacts / calls; null for none.")
    calls_without_outcome: int = strawberry.field(description="Calls not ended (yet).")
    total_talk_seconds: BigInt = strawberry.field(description="Sum of the calls' durations.")
    average_talk_seconds: float | None = strawberry.field(
        description="Over the calls that have a duration; null when none has."
    )
    outcomes: list[OutcomeCount] = strawberry.field(
        description="Ended calls per outcome, most frequent first."
    )

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> AgentPerformance:
        """One row of the agent_performance query."""
        calls, timed = record["calls"], record["timed_calls"]
        return cls(
            agent_id=strawberry.ID(str(record["agent_id"])),
            calls=calls,
            contacts=record["contacts"],
            contact_rate=record["contacts"] / calls if calls else None,
            calls_without_outcome=record["calls_without_outcome"],
            total_talk_seconds=BigInt(record["talk_seconds"]),
            average_talk_seconds=record["talk_seconds"] / timed if timed else None,
            outcomes=[
                OutcomeCount(outcome=o["outcome"], calls=o["calls"], contact=o["contact"])
                for o in record["outcomes"]
            ],
        )

    @strawberry.field
    async def agent(self, info: GraphInfo) -> User | None:
        return await _user(info, self.agent_id)


@strawberry.type(description="Calls and contacts in one hour or day.")
class CallStatsPoint:
    start: datetime = strawberry.field(description="Where the hour or day begins.")
    calls: int
    contacts: int


@strawberry.type(description="Calls and contacts per hour or day, for a chart.")
class CallStats:
    bucket: CallStatsBucket
    time_zone: str
    calls: int
    contacts: int
    points: list[CallStatsPoint] = strawberry.field(
        description="Every hour or day of the range in order, quiet ones included (zeros)."
    )


@strawberry.type(description="A prospect and how many calls it has had (archived included).")
class ProspectCallCount:
    prospect_id: strawberry.ID
    call_count: int

    @strawberry.field
    async def prospect(self, info: GraphInfo) -> Prospect | None:
        return await _prospect(info, self.prospect_id)


@strawberry.type
class ProspectCallCountEdge:
    cursor: str
    node: ProspectCallCount


@strawberry.type(description="Prospects called at least minCalls times, most called first.")
class ProspectCallCountConnection:
    edges: list[ProspectCallCountEdge]
    page_info: PageInfo


@strawberry.type(description="A status change of any prospect, with the prospect.")
class RecentStatusChange:
    id: strawberry.ID
    prospect_id: strawberry.ID
    old_status: str | None
    new_status: str
    changed_by_id: strawberry.ID | None
    created_at: datetime
    archived: bool = strawberry.field(description="Moved to the archive by `server.py archive`.")

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> RecentStatusChange:
        """One row of the recent_status_changes query."""
        changed_by = record["changed_by"]
        return cls(
            id=strawberry.ID(str(record["id"])),
            prospect_id=strawberry.ID(str(record["prospect_id"])),
            old_status=record["old_status"],
            new_status=record["new_status"],
            changed_by_id=strawberry.ID(str(changed_by)) if changed_by else None,
            created_at=record["created_at"],
            archived=record["archived"],
        )

    @strawberry.field
    async def prospect(self, info: GraphInfo) -> Prospect | None:
        return await _prospect(info, self.prospect_id)

    @strawberry.field(description="The user who made the change; null for a change made in SQL.")
    async def changed_by(self, info: GraphInfo) -> User | None:
        return await _user(info, self.changed_by_id)


@strawberry.type
class ReportQueries:
    """Report fields, merged into Query."""

    @strawberry.field(
        description=(
            "Per agent, calls started in [from, to) (at most 366 days): contacts, talk time "
            "and outcomes; every active agent is listed (managers and admins)."
        )
    )
    async def agent_performance(
        self,
        info: GraphInfo,
        from_: Annotated[datetime, strawberry.argument(name="from")],
        to: datetime,
    ) -> list[AgentPerformance]:
        await info.context.require_role(*SUPERVISORS)
        rows = await reports.agent_performance(info.context.pool, from_, to)
        return [AgentPerformance.from_record(row) for row in rows]

    @strawberry.field(
        description=(
            "Calls and contacts per hour or day of timeZone (an IANA name) over [from, to), "
            "at most 366 days (managers and admins)."
        )
    )
    async def call_stats(
        self,
        info: GraphInfo,
        from_: Annotated[datetime, strawberry.argument(name="from")],
        to: datetime,
        bucket: CallStatsBucket = CallStatsBucket.DAY,
        time_zone: str = "UTC",
    ) -> CallStats:
        await info.context.require_role(*SUPERVISORS)
        rows = await reports.call_stats(info.context.pool, from_, to, bucket.value, time_zone)
        points = [
            CallStatsPoint(start=row["bucket"], calls=row["calls"], contacts=row["contacts"])
            for row in rows
        ]
        return CallStats(
            bucket=bucket,
            time_zone=time_zone,
            calls=sum(point.calls for point in points),
            contacts=sum(point.contacts for point in points),
            points=points,
        )

    @strawberry.field(
        description=(
            "Prospects with at least minCalls calls, most called first, as a connection "
            "(managers and admins)."
        )
    )
    async def prospects_called_multiple_times(
        self, info: GraphInfo, min_calls: int = 2, first: int = 20, after: str | None = None
    ) -> ProspectCallCountConnection:
        await info.context.require_role(*SUPERVISORS)
        rows, has_next = await reports.prospects_called_multiple_times(
            info.context.pool, min_calls=min_calls, first=first, after=after
        )
        edges = [
            ProspectCallCountEdge(
                cursor=reports.encode_count_cursor(row),
                node=ProspectCallCount(
                    prospect_id=strawberry.ID(str(row["prospect_id"])),
                    call_count=row["call_count"],
                ),
            )
            for row in rows
        ]
        return ProspectCallCountConnection(
            edges=edges,
            page_info=PageInfo(
                has_next_page=has_next,
                has_previous_page=after is not None,
                start_cursor=edges[0].cursor if edges else None,
                end_cursor=edges[-1].cursor if edges else None,
            ),
        )

    @strawberry.field(
        description="The newest status changes across all prospects (managers and admins)."
    )
    async def recent_status_changes(
        self, info: GraphInfo, first: int = 20
    ) -> list[RecentStatusChange]:
        await info.context.require_role(*SUPERVISORS)
        rows = await reports.recent_status_changes(info.context.pool, first)
        return [RecentStatusChange.from_record(row) for row in rows]
