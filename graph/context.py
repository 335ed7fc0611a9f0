"""The per-request context: pool, settings, the signed-in user and the DataLoaders."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any
from uuid import UUID

import asyncpg
from strawberry.dataloader import DataLoader

from resolvers import calls, prospects, users
from resolvers.auth import Actor, authenticate, require_role, require_user
from resolvers.dialing import HeldBackCache
from resolvers.events import Hub
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
