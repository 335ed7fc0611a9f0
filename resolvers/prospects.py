"""Prospects: reading, paging, creating and changing them, and their histories."""

from __future__ import annotations

import base64
import binascii
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import asyncpg

from resolvers.auth import Actor
from resolvers.errors import BadUserInput, NotFound, database_errors
from resolvers.limits import MAX_PRIORITY, MIN_PRIORITY
from resolvers.phones import normalize_phone, phone_digits, phone_time_zones
from sql.queries import QUERIES

MAX_PAGE_SIZE = 100
MAX_SEARCH_LENGTH = 200
# How many prospects a filtered page of 20 reads in list order before an index finds the
# rest (prospects_page() in sql/functions/prospects.sql; the figures behind it:
# docs/search.md). Larger pages walk further: see walk_budget().
FILTER_WALK_BUDGET = 2000


@dataclass(frozen=True)
class ProspectChanges:
    """Fields given by the client; None means unchanged, `cleared` names fields to empty."""

    name: str | None = None
    phone: str | None = None
    email: str | None = None
    company: str | None = None
    status: str | None = None
    time_zone: str | None = None
    priority: int | None = None
    cleared: tuple[str, ...] = ()


def encode_cursor(record: asyncpg.Record) -> str:
    """An opaque cursor for a row's place in the (created_at, id) order."""
    raw = f"{record['created_at'].isoformat()}|{record['id']}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """The (created_at, id) a cursor stands for, or BAD_USER_INPUT."""
    try:
        created_at, prospect_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        at = datetime.fromisoformat(created_at)
        if at.tzinfo is None:
            raise ValueError("cursor time without a zone")
        # In UTC, so a time at the edge of the calendar fails here rather than in the driver.
        return at.astimezone(UTC), UUID(prospect_id)
    except (ValueError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise BadUserInput("after is not a valid cursor", field="after") from None


async def get_prospect(pool: asyncpg.Pool, prospect_id: UUID) -> asyncpg.Record:
    """One prospect, or NOT_FOUND."""
    record = await pool.fetchrow(QUERIES["prospect_by_id"], prospect_id)
    if record is None:
        raise NotFound("Prospect not found", field="id")
    return record


# The prospects_page query's parameters: status, search pattern, agent, cursor time and
# id, rows to read (one more than the page, to tell whether more follow), phone digits,
# walk budget.
PageParameters = tuple[
    str | None, str | None, UUID | None, datetime | None, UUID | None, int, str | None, int
]


def page_parameters(
    *,
    first: int,
    after: str | None,
    status: str | None,
    search: str | None,
    assigned_to: UUID | None,
) -> PageParameters:
    """The prospects_page query's parameters for a page, or BAD_USER_INPUT; shared with
    the compiled reads (graph/read_plans.py), so both ask prospects_page() the same."""
    if not 0 <= first <= MAX_PAGE_SIZE:
        raise BadUserInput(f"first must be between 0 and {MAX_PAGE_SIZE}", field="first")
    if search is not None:
        search = search.strip() or None
    if search is not None and len(search) > MAX_SEARCH_LENGTH:
        raise BadUserInput("search is too long", field="search")
    cursor_at, cursor_id = decode_cursor(after) if after else (None, None)
    pattern = like_pattern(search) if search else None
    digits = phone_digits(search) if search else None
    return status, pattern, assigned_to, cursor_at, cursor_id, first + 1, digits, walk_budget(first)


async def list_prospects(
    pool: asyncpg.Pool,
    *,
    first: int,
    after: str | None,
    status: str | None,
    search: str | None,
    assigned_to: UUID | None,
) -> tuple[list[asyncpg.Record], bool]:
    """One page of prospects, newest first, and whether more follow."""
    parameters = page_parameters(
        first=first, after=after, status=status, search=search, assigned_to=assigned_to
    )
    # A filter or cursor the database cannot take (a NUL byte, a date out of range) is bad input.
    with database_errors():
        rows = await pool.fetch(QUERIES["prospects_page"], *parameters)
    return list(rows[:first]), len(rows) > first


def walk_budget(first: int) -> int:
    """How many prospects a page of `first` walks before an index finds the rest.

    Walking costs about (rows wanted) / (density of matches); the index costs about the
    number of matches, (density) x (prospects). The two meet where the walk has read
    sqrt(rows wanted x prospects), so the budget grows with the square root of the page.
    """
    return round(FILTER_WALK_BUDGET * math.sqrt(max(first, 20) / 20))


def like_pattern(search: str) -> str:
    """The search text as a LIKE pattern that matches it literally: its wildcards escaped,
    so a search for "50%" means the text "50%"."""
    return search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _clean_text(value: str | None) -> str | None:
    return value.strip() if value is not None else None


async def check_time_zone(pool: asyncpg.Pool, time_zone: str | None) -> None:
    """BAD_USER_INPUT unless the zone is an IANA name the database knows."""
    if time_zone is not None and not await pool.fetchval(QUERIES["time_zone_exists"], time_zone):
        raise BadUserInput("timeZone is not a known IANA time zone", field="timeZone")


def check_priority(priority: int | None) -> None:
    """BAD_USER_INPUT for priorities outside MIN_PRIORITY..MAX_PRIORITY."""
    if priority is not None and not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise BadUserInput(
            f"priority must be between {MIN_PRIORITY} and {MAX_PRIORITY}", field="priority"
        )


async def create_prospect(
    pool: asyncpg.Pool, actor: Actor, changes: ProspectChanges, phone_region: str
) -> asyncpg.Record:
    """A new prospect with its phone in E.164; CONFLICT when the phone is taken."""
    if changes.name is None or changes.phone is None:
        raise BadUserInput("name and phone are required")
    phone = normalize_phone(changes.phone, phone_region)
    check_priority(changes.priority)
    await check_time_zone(pool, changes.time_zone)
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute("SELECT set_config('app.user_id', $1, true)", str(actor.id))
        with database_errors():
            record = await connection.fetchrow(
                QUERIES["insert_prospect"],
                changes.name.strip(),
                phone,
                _clean_text(changes.email) or None,
                _clean_text(changes.company) or None,
                changes.status,
                changes.time_zone,
                phone_time_zones(phone),
                changes.priority,
            )
    assert record is not None
    return record


async def update_prospect(
    pool: asyncpg.Pool,
    actor: Actor,
    prospect_id: UUID,
    changes: ProspectChanges,
    phone_region: str,
) -> asyncpg.Record:
    """The prospect after applying changes, by an actor who may claim it (agents: their own
    and unassigned prospects); the status trigger logs who changed it."""
    phone = normalize_phone(changes.phone, phone_region) if changes.phone is not None else None
    name = _clean_text(changes.name)
    check_priority(changes.priority)
    await check_time_zone(pool, changes.time_zone)
    with database_errors():
        record = await pool.fetchrow(
            QUERIES["update_prospect"],
            actor.id,
            prospect_id,
            name,
            phone,
            _clean_text(changes.email),
            _clean_text(changes.company),
            changes.status,
            list(changes.cleared),
            changes.time_zone,
            phone_time_zones(phone) if phone is not None else None,
            changes.priority,
        )
    assert record is not None
    return record


async def prospects_by_ids(pool: asyncpg.Pool, ids: Sequence[UUID]) -> list[asyncpg.Record | None]:
    """Prospects in the order of ids (None where missing), for a DataLoader."""
    rows = {row["id"]: row for row in await pool.fetch(QUERIES["prospects_by_ids"], list(ids))}
    return [rows.get(prospect_id) for prospect_id in ids]


async def assignments_for_prospects(
    pool: asyncpg.Pool, ids: Sequence[UUID]
) -> list[asyncpg.Record | None]:
    """The live assignment of each prospect (None where unassigned), for a DataLoader."""
    rows = {
        row["prospect_id"]: row
        for row in await pool.fetch(QUERIES["assignments_for_prospects"], list(ids))
    }
    return [rows.get(prospect_id) for prospect_id in ids]


async def histories_for_prospects(
    pool: asyncpg.Pool, query_name: str, keys: Sequence[tuple[UUID, int]]
) -> list[list[asyncpg.Record]]:
    """Per (prospect id, limit) key, the newest history rows; one query per distinct limit."""
    by_limit: dict[int, list[UUID]] = defaultdict(list)
    for prospect_id, limit in keys:
        by_limit[limit].append(prospect_id)
    found: dict[tuple[UUID, int], list[asyncpg.Record]] = defaultdict(list)
    for limit, ids in by_limit.items():
        for row in await pool.fetch(QUERIES[query_name], ids, limit):
            found[(row["prospect_id"], limit)].append(row)
    return [found.get(key, []) for key in keys]
