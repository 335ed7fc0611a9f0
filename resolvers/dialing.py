"""Dialing rules: the next lead, Do-Not-Call, calling hours, caps, callbacks, outcomes."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import datetime, time
from time import monotonic
from uuid import UUID

import asyncpg

from resolvers.auth import Actor
from resolvers.errors import BadUserInput, NotFound, database_errors
from resolvers.events import wake_listeners
from resolvers.limits import MAX_WEEKDAY, MIN_ATTEMPTS, MIN_WEEKDAY
from resolvers.phones import normalize_phone
from sql.queries import QUERIES

MAX_LIST = 500
# The API's ceiling on a cap; the database asks only that a cap be at least MIN_ATTEMPTS.
MAX_ATTEMPTS = 1_000_000
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$|^24:00$")


@dataclass(frozen=True)
class HeldBack:
    """How many open prospects one rule holds back."""

    code: str
    prospects: int


@dataclass(frozen=True)
class NextLead:
    """The call nextLead started, or the counts of what holds prospects back."""

    call: asyncpg.Record | None
    held_back: list[HeldBack]


@dataclass(frozen=True)
class HeldBackCounts:
    """The held-back counts that are the same for every agent (held_back_shared()), as
    read at one moment (time.monotonic())."""

    counts: dict[str, int]
    read_at: float


class HeldBackCache:
    """The part of nextLead's heldBack counts that is the same for every agent, read at
    most once per `seconds` in this process.

    It reads every prospect (about a second per million), and an exhausted queue has every
    agent asking at once and again every few seconds: they share one read, so the answer
    may be up to `seconds` old. Requests that arrive while a read runs wait for that read.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._last: HeldBackCounts | None = None
        self._reading: asyncio.Task[HeldBackCounts] | None = None

    async def get(self, pool: asyncpg.Pool) -> HeldBackCounts:
        """The counts, read now unless a read under `seconds` old (or running) serves."""
        last = self._last
        if last is not None and monotonic() - last.read_at < self.seconds:
            return last
        if self._reading is None:
            self._reading = asyncio.create_task(self._read(pool))
        reading = self._reading
        try:
            # Shielded: one request giving up must not cancel the read the others wait on.
            return await asyncio.shield(reading)
        finally:
            if reading.done() and self._reading is reading:
                self._reading = None

    async def _read(self, pool: asyncpg.Pool) -> HeldBackCounts:
        started = monotonic()
        rows = await pool.fetch(QUERIES["held_back_shared"])
        self._last = HeldBackCounts({r["code"]: r["prospects"] for r in rows}, started)
        return self._last


async def next_lead(pool: asyncpg.Pool, actor: Actor, held_back: HeldBackCache) -> NextLead:
    """Start a call on the best callable prospect for the actor, or say why none is."""
    with database_errors():
        async with pool.acquire() as connection:
            call = await connection.fetchrow(QUERIES["next_lead"], actor.id)
            if call is not None:
                await wake_listeners(connection)  # committed: its event is in call_events
    if call is not None:
        return NextLead(call=call, held_back=[])
    shared = await held_back.get(pool)
    own = {r["code"]: r["prospects"] for r in await pool.fetch(QUERIES["held_back_own"], actor.id)}
    held = [HeldBack(code, count - own.get(code, 0)) for code, count in shared.counts.items()]
    held.sort(key=lambda h: (-h.prospects, h.code))
    return NextLead(call=None, held_back=held)


async def add_do_not_call(
    pool: asyncpg.Pool,
    actor: Actor,
    *,
    phone: str,
    region: str,
    reason: str | None,
    scope: str | None,
    expires_at: datetime | None,
) -> asyncpg.Record:
    """List a number (E.164); listing a listed number returns its entry."""
    number = normalize_phone(phone, region)
    if expires_at is not None and expires_at <= datetime.now(expires_at.tzinfo):
        raise BadUserInput("expiresAt must be in the future", field="expiresAt")
    with database_errors():
        record = await pool.fetchrow(
            QUERIES["add_do_not_call"], number, scope, "api", reason, expires_at, actor.id
        )
    assert record is not None
    return record


async def remove_do_not_call(
    pool: asyncpg.Pool, actor: Actor, *, phone: str, region: str, reason: str | None
) -> bool:
    """Take a number off the list (the entry stays, marked removed); False if not listed."""
    number = normalize_phone(phone, region)
    with database_errors():
        return (
            await pool.fetchval(QUERIES["remove_do_not_call"], number, actor.id, reason) is not None
        )


async def list_do_not_call(
    pool: asyncpg.Pool, *, phone: str | None, region: str, include_removed: bool, first: int
) -> list[asyncpg.Record]:
    """Listed numbers, newest first."""
    if not 1 <= first <= MAX_LIST:
        raise BadUserInput(f"first must be between 1 and {MAX_LIST}", field="first")
    number = normalize_phone(phone, region) if phone else None
    return list(await pool.fetch(QUERIES["list_do_not_call"], number, include_removed, first))


def parse_clock(value: str, field: str) -> time:
    """'HH:MM' (or '24:00' for the end of the day) as a time."""
    if not _CLOCK.match(value):
        raise BadUserInput(f"{field} must be HH:MM", field=field)
    if value == "24:00":
        return time.max
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


async def set_calling_hours(
    pool: asyncpg.Pool, week: list[tuple[int, str, str]]
) -> list[asyncpg.Record]:
    """Replace the calling window; weekdays left out are closed."""
    weekdays = [day for day, _, _ in week]
    if len(set(weekdays)) != len(weekdays) or not all(
        MIN_WEEKDAY <= day <= MAX_WEEKDAY for day in weekdays
    ):
        raise BadUserInput(
            f"weekdays must be distinct, {MIN_WEEKDAY} (Sunday) to {MAX_WEEKDAY}", field="weekday"
        )
    opens = [parse_clock(opens_at, "opensAt") for _, opens_at, _ in week]
    closes = [parse_clock(closes_at, "closesAt") for _, _, closes_at in week]
    if any(o >= c for o, c in zip(opens, closes, strict=True)):
        raise BadUserInput("opensAt must be before closesAt", field="closesAt")
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute(QUERIES["clear_calling_hours"])
        await connection.execute(QUERIES["insert_calling_hours"], weekdays, opens, closes)
        return list(await connection.fetch(QUERIES["calling_hours"]))


async def calling_hours(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    """The calling window per weekday."""
    return list(await pool.fetch(QUERIES["calling_hours"]))


async def dialing_rules(pool: asyncpg.Pool) -> asyncpg.Record:
    """The caps, callback grace and default zone."""
    record = await pool.fetchrow(QUERIES["dialing_rules"])
    assert record is not None
    return record


@dataclass(frozen=True)
class RuleChanges:
    """Settings to change; None keeps one."""

    max_attempts_total: int | None = None
    max_attempts_per_day: int | None = None
    max_attempts_per_number_24h: int | None = None
    callback_grace_seconds: int | None = None
    default_time_zone: str | None = None


async def update_dialing_rules(pool: asyncpg.Pool, changes: RuleChanges) -> asyncpg.Record:
    """Change the caps, grace or default zone."""
    for name in ("max_attempts_total", "max_attempts_per_day", "max_attempts_per_number_24h"):
        value = getattr(changes, name)
        if value is not None and not MIN_ATTEMPTS <= value <= MAX_ATTEMPTS:
            raise BadUserInput(
                f"{name} must be between {MIN_ATTEMPTS} and {MAX_ATTEMPTS}", field=name
            )
    grace = changes.callback_grace_seconds
    if grace is not None and not 0 <= grace <= 7 * 86_400:
        raise BadUserInput("callbackGraceSeconds must be 0 to 604800", field="callbackGraceSeconds")
    if changes.default_time_zone is not None and not await pool.fetchval(
        QUERIES["time_zone_exists"], changes.default_time_zone
    ):
        raise BadUserInput("defaultTimeZone is not a known IANA zone", field="defaultTimeZone")
    with database_errors():
        record = await pool.fetchrow(
            QUERIES["update_dialing_rules"],
            changes.max_attempts_total,
            changes.max_attempts_per_day,
            changes.max_attempts_per_number_24h,
            grace,
            changes.default_time_zone,
        )
    assert record is not None
    return record


async def schedule_callback(
    pool: asyncpg.Pool,
    actor: Actor,
    prospect_id: UUID,
    at: datetime,
    *,
    mine: bool,
    move_to_next_window: bool,
) -> asyncpg.Record:
    """A callback at `at` in the prospect's calling hours (or moved to the next window),
    on a prospect the actor may claim, at most CALLBACK_MAX_DAYS ahead."""
    with database_errors():
        record = await pool.fetchrow(
            QUERIES["schedule_callback"],
            prospect_id,
            at,
            actor.id if mine else None,
            actor.id,
            move_to_next_window,
        )
    assert record is not None
    return record


async def open_callbacks(
    pool: asyncpg.Pool, agent_id: UUID | None, first: int
) -> list[asyncpg.Record]:
    """Callbacks not yet taken, soonest first."""
    if not 1 <= first <= MAX_LIST:
        raise BadUserInput(f"first must be between 1 and {MAX_LIST}", field="first")
    return list(await pool.fetch(QUERIES["open_callbacks"], agent_id, first))


@dataclass(frozen=True)
class DispositionChanges:
    """What an outcome means; None keeps a field; recycle_delay_seconds -1 clears it."""

    sets_status: str | None = None
    counts_as_contact: bool | None = None
    is_final: bool | None = None
    adds_to_do_not_call: bool | None = None
    schedules_callback: bool | None = None
    recycle_delay_seconds: int | None = None


async def update_disposition(
    pool: asyncpg.Pool, name: str, changes: DispositionChanges
) -> asyncpg.Record:
    """Change what an outcome means."""
    delay = changes.recycle_delay_seconds
    if delay is not None and not -1 <= delay <= 365 * 86_400:
        raise BadUserInput(
            "recycleDelaySeconds must be -1 (none) to a year", field="recycleDelaySeconds"
        )
    with database_errors():
        record = await pool.fetchrow(
            QUERIES["update_disposition"],
            name,
            changes.sets_status,
            changes.counts_as_contact,
            changes.is_final,
            changes.adds_to_do_not_call,
            changes.schedules_callback,
            delay,
        )
    if record is None:
        raise NotFound("Unknown outcome", field="name")
    return record
