"""The per-request context: pool, settings, the signed-in user and the DataLoaders."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any
from uuid import UUID

import asyncpg
from strawberry.dataloader import DataLoader

from resolvers import calls, prospects, users
from resolvers.auth import Actor
from settings import Settings


@dataclass
class Loaders:
    """Batch loaders, one set per request, so nested fields cost one query per field."""

    prospect: DataLoader[UUID, asyncpg.Record | None]
    user: DataLoader[UUID, asyncpg.Record | None]
    active_call: DataLoader[UUID, asyncpg.Record | None]
    assignment: DataLoader[UUID, asyncpg.Record | None]
    call_history: DataLoader[tuple[UUID, int], list[asyncpg.Record]]
    status_history: DataLoader[tuple[UUID, int], list[asyncpg.Record]]

    @classmethod
    def create(cls, pool: asyncpg.Pool) -> Loaders:
        """Fresh loaders bound to the pool."""
        return cls(
            prospect=DataLoader(load_fn=partial(prospects.prospects_by_ids, pool)),
            user=DataLoader(load_fn=partial(users.users_by_ids, pool)),
            active_call=DataLoader(load_fn=partial(calls.active_calls_for_prospects, pool)),
            assignment=DataLoader(load_fn=partial(prospects.assignments_for_prospects, pool)),
            call_history=DataLoader(
                load_fn=partial(
                    prospects.histories_for_prospects, pool, "call_history_for_prospects"
                )
            ),
            status_history=DataLoader(
                load_fn=partial(
                    prospects.histories_for_prospects, pool, "status_history_for_prospects"
                )
            ),
        )


@dataclass
class Context:
    """What every resolver gets as info.context."""

    pool: asyncpg.Pool
    settings: Settings
    actor: Actor | None
    token: str | None
    loaders: Loaders
    request: Any = None
    response: Any = None
