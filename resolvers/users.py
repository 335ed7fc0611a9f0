"""Users: creating them and listing them."""

from __future__ import annotations

import asyncpg

from resolvers.auth import ROLES, hash_password
from resolvers.errors import BadUserInput, database_errors
from sql.queries import QUERIES


async def create_user(
    pool: asyncpg.Pool, *, email: str, name: str, password: str, role: str, bcrypt_rounds: int
) -> asyncpg.Record:
    """A new user with a bcrypt-hashed password; CONFLICT when the email is taken."""
    if role not in ROLES:
        raise BadUserInput("Role must be agent, manager or admin", field="role")
    password_hash = await hash_password(password, bcrypt_rounds)
    with database_errors():
        record = await pool.fetchrow(
            QUERIES["insert_user"], email.strip(), name.strip(), password_hash, role
        )
    assert record is not None
    return record


async def list_users(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    """Every user (no password hashes)."""
    return await pool.fetch(QUERIES["list_users"])


async def users_by_ids(pool: asyncpg.Pool, ids: list[object]) -> list[asyncpg.Record | None]:
    """Users in the order of ids (None where missing), for a DataLoader."""
    rows = {row["id"]: row for row in await pool.fetch(QUERIES["users_by_ids"], ids)}
    return [rows.get(user_id) for user_id in ids]
