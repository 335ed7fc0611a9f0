"""Demo data: a few users and ~200 prospects so GraphiQL has something to show."""

from __future__ import annotations

import random

import asyncpg
import phonenumbers

from resolvers.auth import hash_password
from sql.queries import QUERIES

DEMO_PASSWORD = "demo-password"
DEMO_USERS = (
    ("admin@demo.test", "Ada Admin", "admin"),
    ("manager@demo.test", "Max Manager", "manager"),
    ("agent1@demo.test", "Alice Agent", "agent"),
    ("agent2@demo.test", "Bob Agent", "agent"),
    ("agent3@demo.test", "Cleo Agent", "agent"),
)
_FIRST = ("Ana", "Ben", "Chloe", "Dev", "Emma", "Finn", "Grace", "Hugo", "Iris", "Jon")
_LAST = (
    "Lopez",
    "Meyer",
    "Nakamura",
    "Okafor",
    "Patel",
    "Quinn",
    "Rossi",
    "Singh",
    "Tran",
    "Weber",
)
_COMPANIES = ("Acme Corp", "Globex", "Initech", "Umbrella", "Hooli", "Stark Industries", None)


def demo_prospects(count: int = 200, seed: int = 7) -> list[tuple[str, str, str, str | None]]:
    """(name, E.164 phone, email, company) rows, the same on every run."""
    rng = random.Random(seed)  # noqa: S311 - made-up demo data, not secrets
    rows: list[tuple[str, str, str, str | None]] = []
    seen: set[str] = set()
    while len(rows) < count:
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        number = phonenumbers.parse(f"+1 212 {rng.randint(200, 999)} {rng.randint(0, 9999):04d}")
        phone = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        if phone in seen or not phonenumbers.is_valid_number(number):
            continue
        seen.add(phone)
        email = f"{first}.{last}{len(rows)}@example.com".lower()
        rows.append((f"{first} {last}", phone, email, rng.choice(_COMPANIES)))
    return rows


async def seed_demo(pool: asyncpg.Pool, bcrypt_rounds: int) -> list[tuple[str, str, str]]:
    """Insert the demo users and prospects (idempotent); returns (email, password, role)."""
    password_hash = await hash_password(DEMO_PASSWORD, bcrypt_rounds)
    rows = demo_prospects()
    async with pool.acquire() as connection, connection.transaction():
        for email, name, role in DEMO_USERS:
            await connection.execute(QUERIES["insert_demo_user"], email, name, password_hash, role)
        await connection.execute(
            QUERIES["insert_demo_prospects"],
            [row[0] for row in rows],
            [row[1] for row in rows],
            [row[2] for row in rows],
            [row[3] for row in rows],
        )
    return [(email, DEMO_PASSWORD, role) for email, _, role in DEMO_USERS]


async def is_empty(pool: asyncpg.Pool) -> bool:
    """Whether the database holds no users and no prospects yet."""
    return bool(await pool.fetchval(QUERIES["database_is_empty"]))
