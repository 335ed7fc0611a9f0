"""Calls: may this caller call now, starting and ending calls, and the active board."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from resolvers.auth import Actor
from resolvers.errors import BadUserInput, NotFound, database_errors
from resolvers.events import wake_listeners
from resolvers.limits import (
    MAX_DURATION_SECONDS,
    MAX_NOTES_LENGTH,
    MAX_RECORDING_URL_LENGTH,
    MIN_DURATION_SECONDS,
)
from resolvers.phones import normalize_phone
from sql.queries import QUERIES


@dataclass(frozen=True)
class CallOutcome:
    """What the agent reports when a call ends."""

    outcome: str
    duration: int | None = None
    notes: str | None = None
    recording_url: str | None = None
    callback_at: datetime | None = None

    def validate(self) -> None:
        """BAD_USER_INPUT for values no call can have (the database checks them too)."""
        duration = self.duration
        if duration is not None and not MIN_DURATION_SECONDS <= duration <= MAX_DURATION_SECONDS:
            raise BadUserInput(
                f"duration must be between {MIN_DURATION_SECONDS} and {MAX_DURATION_SECONDS} "
                "seconds",
                field="duration",
            )
        if self.notes is not None and len(self.notes) > MAX_NOTES_LENGTH:
            raise BadUserInput(
                f"notes must be at most {MAX_NOTES_LENGTH} characters", field="notes"
            )
        if self.recording_url is not None:
            if len(self.recording_url) > MAX_RECORDING_URL_LENGTH:
                raise BadUserInput("recordingUrl is too long", field="recordingUrl")
            if not self.recording_url.startswith(("https://", "http://")):
                raise BadUserInput("recordingUrl must be an http(s) URL", field="recordingUrl")


async def explain_eligibility(
    pool: asyncpg.Pool, actor: Actor, prospect_id: UUID, at: datetime | None = None
) -> list[asyncpg.Record]:
    """Every call rule, in order, and whether it blocks the actor now (or at `at`)."""
    rules = await pool.fetch(QUERIES["call_eligibility"], prospect_id, actor.id, at)
    if rules and rules[0]["code"] == "NOT_FOUND":
        raise NotFound("Prospect not found", field="prospectId")
    return list(rules)


async def check_call(pool: asyncpg.Pool, actor: Actor, prospect_id: UUID) -> asyncpg.Record:
    """The first rule refusing the actor a call to the prospect now (code None when none)
    and the prospect's last call; NOT_FOUND for an unknown prospect."""
    check = await pool.fetchrow(QUERIES["call_refusal"], prospect_id, actor.id)
    assert check is not None
    if check["code"] == "NOT_FOUND":
        raise NotFound("Prospect not found", field="prospectId")
    return check


async def can_call_prospect(pool: asyncpg.Pool, actor: Actor, prospect_id: UUID) -> object:
    """The seed's JSON answer from can_call_prospect()."""
    return await pool.fetchval(QUERIES["can_call_prospect"], prospect_id, actor.id)


async def start_call(
    pool: asyncpg.Pool,
    actor: Actor,
    prospect_id: UUID,
    phone_number: str | None,
    from_number: str | None,
    phone_region: str,
) -> asyncpg.Record:
    """Check the rules and start a call in one statement; the caller is always the actor."""
    phone = normalize_phone(phone_number, phone_region, "phoneNumber") if phone_number else None
    caller_line = normalize_phone(from_number, phone_region, "fromNumber") if from_number else None
    with database_errors():
        async with pool.acquire() as connection:
            record = await connection.fetchrow(
                QUERIES["start_call"], prospect_id, actor.id, phone, caller_line
            )
            await wake_listeners(connection)  # committed: its event is in call_events
    assert record is not None
    return record


async def end_call(
    pool: asyncpg.Pool, actor: Actor, prospect_id: UUID, call_log_id: UUID, result: CallOutcome
) -> asyncpg.Record:
    """End a call in one statement: clear the lock, log the outcome, apply its status."""
    result.validate()
    with database_errors():
        async with pool.acquire() as connection:
            record = await connection.fetchrow(
                QUERIES["end_call"],
                prospect_id,
                call_log_id,
                actor.id,
                result.outcome,
                result.duration,
                result.notes,
                result.recording_url,
                result.callback_at,
            )
            await wake_listeners(connection)  # committed: its event is in call_events
    assert record is not None
    return record


async def heartbeat_call(pool: asyncpg.Pool, actor: Actor, call_log_id: UUID) -> dict[str, Any]:
    """Extend the lease of an active call (agents only their own); the call as JSON."""
    with database_errors():
        call: dict[str, Any] = await pool.fetchval(QUERIES["heartbeat_call"], call_log_id, actor.id)
    return call


async def release_stale_calls(pool: asyncpg.Pool, older_than_seconds: int) -> int:
    """End, as Expired, the active calls that started more than older_than_seconds ago."""
    if not 0 <= older_than_seconds <= 10 * 365 * 86_400:
        raise BadUserInput("olderThan must be a number of seconds, 0 or more", field="olderThan")
    released = int(await pool.fetchval(QUERIES["release_calls_started_before"], older_than_seconds))
    if released:
        await wake_listeners(pool)
    return released


async def expire_lapsed_calls(pool: asyncpg.Pool) -> int:
    """End, as Expired, the active calls whose lease lapsed (the background sweep)."""
    expired = int(await pool.fetchval(QUERIES["expire_lapsed_calls"]))
    if expired:
        await wake_listeners(pool)
    return expired


async def list_active_calls(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    """Every active call, oldest first."""
    return await pool.fetch(QUERIES["active_calls"])


async def active_calls_for_prospects(
    pool: asyncpg.Pool, ids: Sequence[UUID]
) -> list[asyncpg.Record | None]:
    """The active call of each prospect (None where idle), for a DataLoader."""
    rows = {
        row["prospect_id"]: row
        for row in await pool.fetch(QUERIES["active_calls_for_prospects"], list(ids))
    }
    return [rows.get(prospect_id) for prospect_id in ids]


async def list_dispositions(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    """The outcomes a call can end with."""
    return await pool.fetch(QUERIES["list_dispositions"])
