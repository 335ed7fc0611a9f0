"""Reports for managers: agent performance, call volume, repeat calls, recent status changes."""

from __future__ import annotations

import base64
import binascii
import zoneinfo
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg

from resolvers.errors import BadUserInput, database_errors
from sql.queries import QUERIES

MAX_RANGE = timedelta(days=366)
MAX_PAGE_SIZE = 100
MAX_MIN_CALLS = 1_000_000
BUCKETS = ("hour", "day")
MAX_TIME_ZONE_LENGTH = 64
# Above every real (call_count, prospect_id): the first page starts below it.
_FIRST_PAGE = (2**31 - 1, UUID(int=2**128 - 1))


def check_range(start: datetime, end: datetime) -> None:
    """BAD_USER_INPUT unless [start, end) is a non-empty range of at most MAX_RANGE."""
    for name, value in (("from", start), ("to", end)):
        if value.tzinfo is None or value.utcoffset() is None:
            raise BadUserInput(f"{name} needs a UTC offset, e.g. 2026-01-31T00:00:00Z", field=name)
    if start >= end:
        raise BadUserInput("from must be before to", field="from")
    if end - start > MAX_RANGE:
        raise BadUserInput(f"A report covers at most {MAX_RANGE.days} days", field="to")


def check_time_zone(name: str) -> str:
    """An IANA time zone name (e.g. America/New_York), or BAD_USER_INPUT."""
    if not name or len(name) > MAX_TIME_ZONE_LENGTH:
        raise BadUserInput("timeZone is not a known time zone", field="timeZone")
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise BadUserInput("timeZone is not a known time zone", field="timeZone") from None
    return name


async def fold_call_stats(pool: asyncpg.Pool, wait: bool = True) -> int | None:
    """Add journaled call changes into the rollups; None when not waiting and another fold runs."""
    folded = await pool.fetchval(QUERIES["fold_call_stats"], wait)
    return None if folded is None else int(folded)


async def agent_performance(
    pool: asyncpg.Pool, start: datetime, end: datetime
) -> list[asyncpg.Record]:
    """Per agent over [start, end): calls, contacts, talk time and calls per outcome."""
    check_range(start, end)
    # Exact with or without it; folding first keeps the unfolded part small.
    await fold_call_stats(pool, wait=False)
    return await pool.fetch(QUERIES["agent_performance"], start, end)


async def call_stats(
    pool: asyncpg.Pool, start: datetime, end: datetime, bucket: str, time_zone: str
) -> list[asyncpg.Record]:
    """Calls and contacts per hour or day (in time_zone) over [start, end), quiet ones too."""
    check_range(start, end)
    if bucket not in BUCKETS:
        raise BadUserInput("bucket must be hour or day", field="bucket")
    check_time_zone(time_zone)
    await fold_call_stats(pool, wait=False)
    try:
        return await pool.fetch(QUERIES["call_stats"], start, end, bucket, time_zone)
    except asyncpg.InvalidParameterValueError:
        # A zone Python knows and this PostgreSQL's time zone data does not.
        raise BadUserInput("timeZone is not a known time zone", field="timeZone") from None


def encode_count_cursor(record: asyncpg.Record) -> str:
    """An opaque cursor for a row's place in the (call_count, prospect_id) order."""
    raw = f"{record['call_count']}|{record['prospect_id']}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_count_cursor(cursor: str) -> tuple[int, UUID]:
    """The (call_count, prospect_id) a cursor stands for, or BAD_USER_INPUT."""
    try:
        count, prospect_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        value = int(count)
        if not 0 <= value < 2**31:
            raise ValueError("count out of range")
        return value, UUID(prospect_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadUserInput("after is not a valid cursor", field="after") from None


async def prospects_called_multiple_times(
    pool: asyncpg.Pool, *, min_calls: int, first: int, after: str | None
) -> tuple[list[asyncpg.Record], bool]:
    """A page of prospects with at least min_calls calls, most called first; more to come?"""
    if not 1 <= min_calls <= MAX_MIN_CALLS:
        raise BadUserInput(f"minCalls must be between 1 and {MAX_MIN_CALLS}", field="minCalls")
    if not 0 <= first <= MAX_PAGE_SIZE:
        raise BadUserInput(f"first must be between 0 and {MAX_PAGE_SIZE}", field="first")
    count, prospect_id = decode_count_cursor(after) if after else _FIRST_PAGE
    # Counts are kept by folding; wait for a running fold so none is missed.
    await fold_call_stats(pool, wait=True)
    with database_errors():
        rows = await pool.fetch(
            QUERIES["prospects_called_multiple_times"], min_calls, count, prospect_id, first + 1
        )
    return list(rows[:first]), len(rows) > first


async def recent_status_changes(pool: asyncpg.Pool, first: int) -> list[asyncpg.Record]:
    """The newest status changes across all prospects, newest first."""
    if not 0 <= first <= MAX_PAGE_SIZE:
        raise BadUserInput(f"first must be between 0 and {MAX_PAGE_SIZE}", field="first")
    return await pool.fetch(QUERIES["recent_status_changes"], first)
