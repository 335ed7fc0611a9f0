"""Who is asking: passwords, bearer tokens, login throttling and role checks."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import ipaddress
import secrets
import time
from collections import Counter
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
# How long a login waits for the same client's attempts being checked before it may start.
LOGIN_QUEUE_SECONDS = 10.0


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


# bcrypt checks this process has run, by cost: a login for an unknown email must cost what
# one for a known email does, and this is where that shows (tests/test_login_throttling.py).
password_checks: Counter[int] = Counter()


@functools.cache
def dummy_hash(rounds: int) -> bytes:
    """What a login for an unknown email checks, so it costs what a known one does: a
    well-formed bcrypt hash of the configured cost that no password matches (its digest
    is all zero bits), made without hashing anything."""
    return bcrypt.gensalt(rounds) + b"." * 31


def hash_cost(password_hash: bytes) -> int:
    """The cost (log2 of the rounds) of a bcrypt hash, '$2b$12$...' -> 12; 0 when it is
    not one (bcrypt then refuses it)."""
    parts = password_hash.split(b"$")
    return int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 0


async def verify_password(password: str, password_hash: str | bytes) -> bool:
    """Whether password matches a bcrypt hash, off the event loop."""
    encoded = password.encode()
    stored = password_hash.encode() if isinstance(password_hash, str) else password_hash
    if len(encoded) > MAX_PASSWORD_BYTES:
        return False
    password_checks[hash_cost(stored)] += 1
    return await asyncio.to_thread(bcrypt.checkpw, encoded, stored)


async def authenticate(pool: asyncpg.Pool, token: str) -> Actor | None:
    """The user behind a live token, or None."""
    record = await pool.fetchrow(QUERIES["session_user"], hash_token(token))
    return Actor.from_record(record) if record else None


@dataclass(frozen=True)
class LoginLimits:
    """How failed logins slow a client down (begin_login() in sql/functions/logins.sql)."""

    # Failures for one email from one client, and from one client across emails, before
    # it must wait; the first wait, which doubles with each further failure, up to the
    # longest; failures older than the window no longer count.
    max_failures: int
    max_address_failures: int
    backoff_seconds: float
    backoff_max_seconds: float
    window_seconds: float
    token_ttl_seconds: int
    bcrypt_rounds: int


def client_address(host: str | None) -> str | None:
    """The client's IP address as the database takes it, or None when unknown (a UNIX
    socket, or a proxy that forwarded something that is not an address)."""
    if not host:
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    # A v4 client reached over a v6 socket is the same client as over v4.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return str(address)


async def begin_login(
    pool: asyncpg.Pool, email: str, address: str | None, limits: LoginLimits
) -> int:
    """The id of a login attempt the database has let start, or TOO_MANY_REQUESTS. While
    the client's other attempts are being checked and their outcome decides, wait for them
    (a crowd behind one address queues; a burst of guesses stops at the limit)."""
    deadline = time.monotonic() + LOGIN_QUEUE_SECONDS
    pause = 0.02
    while True:
        # An email the database cannot hold (a NUL byte) is bad input, not a server error.
        with database_errors():
            attempt = await pool.fetchrow(
                QUERIES["begin_login"],
                email,
                address,
                limits.max_failures,
                limits.max_address_failures,
                limits.backoff_seconds,
                limits.backoff_max_seconds,
                limits.window_seconds,
            )
        assert attempt is not None  # begin_login() returns one row
        if attempt["attempt_id"] is not None:
            attempt_id: int = attempt["attempt_id"]
            return attempt_id
        wait = attempt["retry_after_seconds"]
        if wait is None and time.monotonic() < deadline:
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.25)
            continue
        raise TooManyRequests(
            "Too many failed sign-ins; try again later", retryAfterSeconds=wait or 1
        )


async def login(
    pool: asyncpg.Pool, email: str, password: str, host: str | None, limits: LoginLimits
) -> tuple[str, asyncpg.Record]:
    """A new token for valid credentials; one message for every kind of failure.

    host is the client's address (the socket peer, or what a trusted proxy forwarded):
    failures slow down that client, for that email and across emails, never the owner
    signing in from elsewhere. A client told to wait costs no password check.
    """
    key = email.strip().lower()
    attempt_id = await begin_login(pool, key, client_address(host), limits)
    try:
        user = await pool.fetchrow(QUERIES["user_by_email"], key)
        # The same bcrypt cost whether or not the email exists, so timing does not tell.
        stored = user["password_hash"] if user else dummy_hash(limits.bcrypt_rounds)
        valid = await verify_password(password, stored) and user is not None and user["active"]
        if valid and user is not None:
            token = secrets.token_urlsafe(32)
            async with pool.acquire() as connection, connection.transaction():
                await connection.execute(
                    QUERIES["finish_login"], attempt_id, True, limits.window_seconds
                )
                await connection.execute(
                    QUERIES["insert_session"],
                    hash_token(token),
                    user["id"],
                    limits.token_ttl_seconds,
                )
            return token, user
    except BaseException:
        # Whatever went wrong, the attempt is settled as failed rather than left "being
        # checked", where it would hold up this client's next attempts.
        with contextlib.suppress(Exception):
            await pool.execute(QUERIES["finish_login"], attempt_id, False, limits.window_seconds)
        raise
    await pool.execute(QUERIES["finish_login"], attempt_id, False, limits.window_seconds)
    raise Unauthenticated("Invalid email or password")


async def logout(pool: asyncpg.Pool, token: str) -> bool:
    """Revoke a token; True when it was live."""
    return bool(await pool.fetchval(QUERIES["revoke_session"], hash_token(token)))
