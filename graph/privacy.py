"""Privacy requests: a prospect's data exported, or erased, at the subject's request."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from graph.types import GraphInfo, Prospect
from resolvers import privacy, prospects
from resolvers.errors import parse_id


@strawberry.type(description="What an erasure did.")
class ProspectErasure:
    prospect: Prospect
    erased_at: datetime = strawberry.field(description="When the prospect was first erased.")
    call_logs_erased: int = strawberry.field(description="Calls whose number and notes went.")
    archived_call_logs_erased: int


@strawberry.type
class PrivacyMutations:
    """Privacy requests, merged into Mutation."""

    @strawberry.mutation(
        description=(
            "Everything held about a prospect, archived calls included, as JSON (admins); "
            "logged as a privacy request."
        )
    )
    async def export_prospect(self, info: GraphInfo, id: strawberry.ID) -> JSON:
        actor = await info.context.require_role("admin")
        export = await privacy.export_prospect(info.context.pool, actor, parse_id(id))
        return JSON(export)

    @strawberry.mutation(
        description=(
            "Erase a prospect's personal data but keep what reports count (admins); refused "
            "while it is on a call; logged as a privacy request."
        )
    )
    async def erase_prospect(self, info: GraphInfo, id: strawberry.ID) -> ProspectErasure:
        actor = await info.context.require_role("admin")
        prospect_id = parse_id(id)
        record = await privacy.erase_prospect(info.context.pool, actor, prospect_id)
        erased = await prospects.get_prospect(info.context.pool, prospect_id)
        return ProspectErasure(
            prospect=Prospect.from_record(erased),
            erased_at=record["erased_at"],
            call_logs_erased=record["call_logs_erased"],
            archived_call_logs_erased=record["archived_call_logs_erased"],
        )
