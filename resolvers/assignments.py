"""Lead assignments: which agent works which prospect, for how long."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg

from resolvers.auth import Actor
from resolvers.errors import database_errors
from sql.queries import QUERIES


async def assign_lead(
    pool: asyncpg.Pool,
    actor: Actor,
    prospect_id: UUID,
    agent_id: UUID,
    expires_at: datetime | None,
) -> asyncpg.Record:
    """Assign the prospect to the agent, replacing any active assignment."""
    with database_errors():
        record = await pool.fetchrow(
            QUERIES["assign_lead"], prospect_id, agent_id, expires_at, actor.id
        )
    assert record is not None
    return record


async def unassign_lead(pool: asyncpg.Pool, actor: Actor, prospect_id: UUID) -> bool:
    """End the prospect's active assignment; True when there was one."""
    with database_errors():
        return bool(await pool.fetchval(QUERIES["unassign_lead"], prospect_id, actor.id))
