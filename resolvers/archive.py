"""Archiving: move old call logs and status changes out of the hot tables, in batches."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from resolvers.errors import BadUserInput
from resolvers.reports import fold_call_stats
from sql.queries import QUERIES

MAX_BATCH_SIZE = 100_000
# The gap rule and the per-day dialing caps read the newest calls of a prospect: archiving
# from the command line keeps at least a day of them hot.
MIN_AGE = timedelta(days=1)
_AGE = re.compile(r"^\s*(\d{1,7})\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True)
class ArchivePlan:
    """What an archive run would move, and the old calls it leaves in place."""

    cutoff: datetime
    call_logs: int
    calls_in_progress: int
    status_changes: int
    oldest_call: datetime | None


@dataclass
class ArchiveResult:
    """What an archive run moved so far."""

    call_logs: int = 0
    status_changes: int = 0
    batches: int = 0
    seconds: float = 0.0


def parse_age(text: str, minimum: timedelta = MIN_AGE) -> timedelta:
    """An age such as 365d, 52w, 36h or 90m (at least minimum), or BAD_USER_INPUT."""
    match = _AGE.match(text)
    if match is None:
        raise BadUserInput(
            "older-than is a number and a unit (s, m, h, d or w), e.g. 365d", field="olderThan"
        )
    age = timedelta(**{_UNITS[match[2]]: int(match[1])})
    if age < minimum:
        raise BadUserInput(
            f"older-than must be at least {describe_age(minimum)}: "
            "the call rules read recent calls",
            field="olderThan",
        )
    if age > timedelta(days=100 * 366):
        raise BadUserInput("older-than must be under a century", field="olderThan")
    return age


async def archive_cutoff(pool: asyncpg.Pool, older_than: timedelta) -> datetime:
    """now() - older_than by the database's clock: one cutoff for every batch of a run."""
    cutoff: datetime = await pool.fetchval(QUERIES["archive_cutoff"], older_than.total_seconds())
    return cutoff


async def plan_archive(pool: asyncpg.Pool, cutoff: datetime) -> ArchivePlan:
    """Count what archiving with this cutoff would move; writes nothing."""
    record = await pool.fetchrow(QUERIES["archive_plan"], cutoff)
    assert record is not None
    return ArchivePlan(
        cutoff=cutoff,
        call_logs=record["call_logs"],
        calls_in_progress=record["calls_in_progress"],
        status_changes=record["status_changes"],
        oldest_call=record["oldest_call"],
    )


def check_batch_size(batch_size: int) -> int:
    """The batch size, or BAD_USER_INPUT."""
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise BadUserInput(f"batch size must be between 1 and {MAX_BATCH_SIZE}", field="batchSize")
    return batch_size


async def archive_call_logs_batch(pool: asyncpg.Pool, cutoff: datetime, batch_size: int) -> int:
    """Move one batch of old ended call logs (one short transaction); how many moved."""
    return int(await pool.fetchval(QUERIES["archive_call_logs"], cutoff, batch_size))


async def archive_status_changes_batch(
    pool: asyncpg.Pool, cutoff: datetime, batch_size: int
) -> int:
    """Move one batch of old status changes (one short transaction); how many moved."""
    return int(await pool.fetchval(QUERIES["archive_status_changes"], cutoff, batch_size))


async def archive(
    pool: asyncpg.Pool,
    cutoff: datetime,
    batch_size: int,
    on_batch: Callable[[ArchiveResult], None] | None = None,
) -> ArchiveResult:
    """Move everything older than cutoff, batch by batch, until a batch finds nothing.

    Rows locked by someone else are skipped, not waited for; a later run moves them.
    """
    check_batch_size(batch_size)
    started = time.monotonic()
    result = ArchiveResult()
    while moved := await archive_call_logs_batch(pool, cutoff, batch_size):
        result.call_logs += moved
        result.batches += 1
        if on_batch is not None:
            on_batch(result)
    while moved := await archive_status_changes_batch(pool, cutoff, batch_size):
        result.status_changes += moved
        result.batches += 1
        if on_batch is not None:
            on_batch(result)
    # Housekeeping while here: keep the reports' journal of call changes short.
    await fold_call_stats(pool, wait=True)
    result.seconds = time.monotonic() - started
    return result


def describe_age(age: timedelta) -> str:
    """An age in the largest unit that divides it evenly, as people say it: 1 day, 36 hours."""
    seconds = int(age.total_seconds())
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"
