"""Users and sessions: who is signed in, signing in and out, and the user list."""

from __future__ import annotations

import strawberry

import metrics
from graph.types import CreateUserInput, GraphInfo, LoginPayload, User
from resolvers import users
from resolvers.auth import SUPERVISORS, login, logout


@strawberry.type
class SessionQueries:
    """The signed-in user, merged into Query."""

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


@strawberry.type
class SessionMutations:
    """Signing in and out, merged into Mutation."""

    @strawberry.mutation(description="Exchange credentials for a bearer token.")
    async def login(self, info: GraphInfo, email: str, password: str) -> LoginPayload:
        client = info.context.request.client
        with metrics.counting_login_failures():
            token, record = await login(
                info.context.pool,
                email,
                password,
                client.host if client else None,
                info.context.settings.login_limits,
            )
        return LoginPayload(token=token, user=User.from_record(record))

    @strawberry.mutation(description="Revoke the token this request was made with.")
    async def logout(self, info: GraphInfo) -> bool:
        await info.context.require_user()
        assert info.context.token is not None
        return await logout(info.context.pool, info.context.token)


@strawberry.type
class UserQueries:
    """The user list, merged into Query."""

    @strawberry.field(description="Every user (managers and admins).")
    async def users(self, info: GraphInfo) -> list[User]:
        await info.context.require_role(*SUPERVISORS)
        return [User.from_record(r) for r in await users.list_users(info.context.pool)]


@strawberry.type
class UserMutations:
    """Creating users, merged into Mutation."""

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
