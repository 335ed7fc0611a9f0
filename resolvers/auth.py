"""Who is asking: passwords, bearer tokens, login throttling and role checks."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg
import bcrypt

from resolvers.errors import (
    BadUserInput,
    Forbidden,
    TooManyRequests,
    Unauthenticated,
    database_errors,
)
from sql.queries import QUERIES

ROLES = ("agent", "manager", "admin")
SUPERVISORS = ("manager", "admin")
# bcrypt reads at most 72 bytes; longer passwords are refused rather than silently cut.
MAX_PASSWORD_BYTES = 72
MIN_PASSWORD_LENGTH = 8


@dataclass(frozen=True)
class Actor:
    """The signed-in user a request acts for."""

    id: UUID
    email: str
    name: str
    role: str
    created_at: datetime

    @property
    def is_supervisor(self) -> bool:
        """Managers and admins may override assignments, end any call and list users."""
        return self.role in SUPERVISORS

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> Actor:
        """An Actor from a users row."""
        return cls(
            id=record["id"],
            email=record["email"],
            name=record["name"],
            role=record["role"],
            created_at=record["created_at"],
        )


def require_user(actor: Actor | None) -> Actor:
    """The actor, or UNAUTHENTICATED."""
    if actor is None:
        raise Unauthenticated("Sign in first: send 'Authorization: Bearer <token>'")
    return actor


def require_role(actor: Actor | None, *roles: str) -> Actor:
    """The actor when their role is one of roles, else UNAUTHENTICATED or FORBIDDEN."""
    user = require_user(actor)
    if user.role not in roles:
        raise Forbidden(f"This needs the role {' or '.join(roles)}")
    return user


def bearer_token(authorization: str | None) -> str | None:
    """The token of an 'Authorization: Bearer <token>' header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def hash_token(token: str) -> bytes:
    """What the sessions table stores for a token."""
    return hashlib.sha256(token.encode()).digest()


def check_password_shape(password: str) -> bytes:
    """The password's bytes, or BAD_USER_INPUT when bcrypt could not take it whole."""
    encoded = password.encode()
    if len(password) < MIN_PASSWORD_LENGTH or len(encoded) > MAX_PASSWORD_BYTES:
        raise BadUserInput(
            f"Password must be {MIN_PASSWORD_LENGTH} characters to {MAX_PASSWORD_BYTES} bytes",
            field="password",
        )
    return encoded


async def hash_password(password: str, rounds: int) -> str:
    """A bcrypt hash, computed off the event loop."""
    encoded = check_password_shape(password)
    hashed = await asyncio.to_thread(bcrypt.hashpw, encoded, bcrypt.gensalt(rounds))
    return hashed.decode()


# Checked when the email is unknown, so a miss costs as long as a wrong password.
_DUMMY_HASH = bcrypt.hashpw(b"not-a-password", bcrypt.gensalt(4))


async def verify_password(password: str, password_hash: str | bytes) -> bool:
    """Whether password matches a bcrypt hash, off the event loop."""
    encoded = password.encode()
    if len(encoded) > MAX_PASSWORD_BYTES:
        return False
    stored = password_hash.encode() if isinstance(password_hash, str) else password_hash
    return await asyncio.to_thread(bcrypt.checkpw, encoded, stored)


async def authenticate(pool: asyncpg.Pool, token: str) -> Actor | None:
    """The user behind a live token, or None."""
    record = await pool.fetchrow(QUERIES["session_user"], hash_token(token))
    return Actor.from_record(record) if record else None


@dataclass(frozen=True)
class LoginLimits:
    """How many failures within how many seconds lock an email out."""

    max_failures: int
    window_seconds: int
    token_ttl_seconds: int


async def login(
    pool: asyncpg.Pool, email: str, password: str, limits: LoginLimits
) -> tuple[str, asyncpg.Record]:
    """A new token for valid credentials; one message for every kind of failure."""
    key = email.strip().lower()
    # An email the database cannot hold (a NUL byte) is bad input, not a server error.
    with database_errors():
        failures = await pool.fetchval(QUERIES["count_login_failures"], key, limits.window_seconds)
    if failures >= limits.max_failures:
        raise TooManyRequests(
            "Too many failed sign-ins; try again later",
            retryAfterSeconds=limits.window_seconds,
        )
    user = await pool.fetchrow(QUERIES["user_by_email"], key)
    if user is None:
        await verify_password(password, _DUMMY_HASH)
        valid = False
    else:
        valid = await verify_password(password, user["password_hash"]) and user["active"]
    if not valid or user is None:
        await pool.execute(QUERIES["record_login_failure"], key)
        raise Unauthenticated("Invalid email or password")
    token = secrets.token_urlsafe(32)
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute(QUERIES["clear_login_failures"], key)
        await connection.execute(
            QUERIES["insert_session"], hash_token(token), user["id"], limits.token_ttl_seconds
        )
    return token, user


async def logout(pool: asyncpg.Pool, token: str) -> bool:
    """Revoke a token; True when it was live."""
    return bool(await pool.fetchval(QUERIES["revoke_session"], hash_token(token)))
