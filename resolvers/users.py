"""Users: creating them (one, or a batch from the command line) and listing them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from resolvers import limits
from resolvers.auth import ROLES, check_password_shape, hash_password
from resolvers.errors import BadUserInput, DomainError, database_errors
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


@dataclass(frozen=True)
class NewUser:
    """One user of a batch, as read from a file; line is where it was read, for reports."""

    line: int
    email: str
    role: str
    password: str
    name: str = ""


@dataclass(frozen=True)
class UserRowError:
    """Why one user of a batch cannot be created."""

    line: int
    reason: str


def check_new_user(user: NewUser) -> str | None:
    """Why the database would refuse this user, checked before any hashing; or None."""
    email = user.email.strip()
    if not limits.EMAIL_PATTERN.fullmatch(email) or len(email) > limits.MAX_EMAIL_LENGTH:
        return f"email {user.email!r} is not an email address"
    if user.role not in ROLES:
        return f"role {user.role!r} must be agent, manager or admin"
    if len(user.name.strip()) > limits.MAX_USER_NAME_LENGTH:
        return f"name is over {limits.MAX_USER_NAME_LENGTH} characters"
    try:
        check_password_shape(user.password)
    except BadUserInput as error:
        return error.message
    return None


async def create_users(
    pool: asyncpg.Pool, batch: Sequence[NewUser], bcrypt_rounds: int
) -> tuple[list[asyncpg.Record], list[UserRowError]]:
    """Create a batch of users, all or none: (created, []) or ([], every row's problem).

    Every row is checked, and every email looked up, before any password is hashed, so
    a file with mistakes fails in a moment and names them all. The hashes are computed in
    parallel threads (bcrypt releases the GIL; 1.8 s each at cost 12), and the users are
    inserted in one transaction.
    """
    errors = [UserRowError(user.line, reason) for user in batch if (reason := check_new_user(user))]
    seen: dict[str, int] = {}
    for user in batch:
        key = user.email.strip().lower()
        if key in seen:
            errors.append(UserRowError(user.line, f"{user.email} is also on line {seen[key]}"))
        seen.setdefault(key, user.line)
    taken = {row["email"] for row in await pool.fetch(QUERIES["existing_emails"], list(seen))}
    errors += [
        UserRowError(user.line, f"a user with email {user.email} already exists")
        for user in batch
        if user.email.strip().lower() in taken
    ]
    if errors or not batch:
        return [], sorted(errors, key=lambda error: error.line)
    hashes = await asyncio.gather(*(hash_password(user.password, bcrypt_rounds) for user in batch))
    created = []
    async with pool.acquire() as connection, connection.transaction():
        for user, password_hash in zip(batch, hashes, strict=True):
            try:
                with database_errors():
                    record = await connection.fetchrow(
                        QUERIES["insert_user"],
                        user.email.strip(),
                        user.name.strip(),
                        password_hash,
                        user.role,
                    )
            except DomainError as error:  # a race with another writer: roll everything back
                return [], [UserRowError(user.line, error.message)]
            assert record is not None
            created.append(record)
    return created, []
