"""The per-request context: pool, settings, the signed-in user and the DataLoaders."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any
from uuid import UUID

import asyncpg
from strawberry.dataloader import DataLoader

from resolvers import calls, prospects, users
from resolvers.auth import Actor, authenticate, require_role, require_user
from resolvers.dialing import HeldBackCache
from resolvers.events import Hub
from settings import Settings


class Loaders:
    """Batch loaders, one set per request, so nested fields cost one query per field.

    Each is made on first use: a WebSocket's context lives as long as the connection, and
    thousands of idle subscribers need none of them.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    def create(cls, pool: asyncpg.Pool) -> Loaders:
        """Fresh loaders bound to the pool."""
        return cls(pool)

    @cached_property
    def prospect(self) -> DataLoader[UUID, asyncpg.Record | None]:
        """Prospects by id."""
        return DataLoader(load_fn=partial(prospects.prospects_by_ids, self.pool))

    @cached_property
    def user(self) -> DataLoader[UUID, asyncpg.Record | None]:
        """Users by id."""
        return DataLoader(load_fn=partial(users.users_by_ids, self.pool))

    @cached_property
    def active_call(self) -> DataLoader[UUID, asyncpg.Record | None]:
        """The active call of each prospect."""
        return DataLoader(load_fn=partial(calls.active_calls_for_prospects, self.pool))

    @cached_property
    def assignment(self) -> DataLoader[UUID, asyncpg.Record | None]:
        """The active assignment of each prospect."""
        return DataLoader(load_fn=partial(prospects.assignments_for_prospects, self.pool))

    @cached_property
    def call_history(self) -> DataLoader[tuple[UUID, int], list[asyncpg.Record]]:
        """The newest calls of each prospect."""
        return DataLoader(
            load_fn=partial(
                prospects.histories_for_prospects, self.pool, "call_history_for_prospects"
            )
        )

    @cached_property
    def status_history(self) -> DataLoader[tuple[UUID, int], list[asyncpg.Record]]:
        """The newest status changes of each prospect."""
        return DataLoader(
            load_fn=partial(
                prospects.histories_for_prospects, self.pool, "status_history_for_prospects"
            )
        )


@dataclass
class Context:
    """What every resolver gets as info.context.

    The bearer token is looked up on first use, so `login` costs no session query and
    a database outage surfaces as a field error with a code rather than a failed request.
    """

    pool: asyncpg.Pool
    settings: Settings
    token: str | None
    loaders: Loaders
    # nextLead's heldBack counts, shared by this process's requests.
    held_back: HeldBackCache
    hub: Hub | None = None
    request: Any = None
    response: Any = None
    # Filled by graphql-transport-ws from the connection_init payload.
    connection_params: Any = None
    _actor: Actor | None = None
    _authenticated: bool = False

    async def viewer(self) -> Actor | None:
        """The signed-in user, or None (looked up once per request)."""
        if not self._authenticated:
            self._actor = await authenticate(self.pool, self.token) if self.token else None
            self._authenticated = True
        return self._actor

    def sign_in(self, actor: Actor, token: str) -> None:
        """Set the user for a WebSocket connection authenticated at connection_init."""
        self._actor, self.token, self._authenticated = actor, token, True

    async def require_user(self) -> Actor:
        """The signed-in user, or UNAUTHENTICATED."""
        return require_user(await self.viewer())

    async def require_role(self, *roles: str) -> Actor:
        """The signed-in user with one of roles, or UNAUTHENTICATED / FORBIDDEN."""
        return require_role(await self.viewer(), *roles)
