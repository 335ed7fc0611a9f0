"""Prospects: reading, paging, creating and changing them, and assigning them to agents."""

from __future__ import annotations

from datetime import datetime

import strawberry

from graph.types import (
    CreateProspectInput,
    GraphInfo,
    LeadAssignment,
    PageInfo,
    Prospect,
    ProspectConnection,
    ProspectEdge,
    ProspectFilter,
    UpdateProspectInput,
    prefetch_prospect_fields,
)
from resolvers import assignments, prospects
from resolvers.auth import SUPERVISORS
from resolvers.errors import BadUserInput, parse_id
from resolvers.prospects import ProspectChanges


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
class ProspectQueries:
    """Prospect fields, merged into Query."""

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


@strawberry.type
class ProspectMutations:
    """Creating and changing prospects, merged into Mutation."""

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


@strawberry.type
class AssignmentMutations:
    """Assigning prospects to agents, merged into Mutation."""

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
