"""Privacy requests: export everything held about a prospect, or erase its personal data."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from resolvers.auth import Actor
from resolvers.errors import database_errors
from sql.queries import QUERIES


async def export_prospect(pool: asyncpg.Pool, actor: Actor, prospect_id: UUID) -> dict[str, Any]:
    """Everything held about the prospect, archived calls included; logged as a request."""
    with database_errors():
        export: dict[str, Any] = await pool.fetchval(
            QUERIES["export_prospect"], prospect_id, actor.id
        )
    return export


async def erase_prospect(pool: asyncpg.Pool, actor: Actor, prospect_id: UUID) -> asyncpg.Record:
    """Erase the prospect's personal data, keeping what reports count; logged as a request.

    CONFLICT while the prospect is on a call; erasing twice is harmless.
    """
    with database_errors():
        record = await pool.fetchrow(QUERIES["erase_prospect"], prospect_id, actor.id)
    assert record is not None
    return record
