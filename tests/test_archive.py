"""Archiving: the command line, exactly which rows move, and archiving beside live calls."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from helpers import Api, Team, add_user, run, running_server

from resolvers import archive, reports
from settings import Settings
from sql import database

OLD = datetime.now(UTC) - timedelta(days=400)  # older than the default 365 days
RECENT = datetime.now(UTC) - timedelta(days=30)


def run_archive(database_url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`server.py archive ...` as an operator runs it, against the test database."""
    return run(tmp_path, "archive", *args, DATABASE_URL=database_url)


async def add_prospect_row(pool: asyncpg.Pool, name: str, phone: str) -> UUID:
    prospect_id: UUID = await pool.fetchval(
        "INSERT INTO prospects (name, phone, last_call) VALUES ($1, $2, $3) RETURNING id",
        name,
        phone,
        RECENT,
    )
    return prospect_id


async def add_call(
    pool: asyncpg.Pool, caller: str, prospect: UUID, started_at: datetime, ended: bool = True
) -> UUID:
    call_id: UUID = await pool.fetchval(
        """
        INSERT INTO call_logs (prospect_id, caller_id, phone_number, started_at, ended_at,
                               outcome, duration, notes)
        VALUES ($1, $2, '+12125550100', $3, $4, $5, $6, 'kept as is') RETURNING id
        """,
        prospect,
        UUID(caller),
        started_at,
        started_at + timedelta(minutes=2) if ended else None,
        "Connected" if ended else None,
        120 if ended else None,
    )
    return call_id


async def add_status_change(pool: asyncpg.Pool, prospect: UUID, created_at: datetime) -> int:
    change_id: int = await pool.fetchval(
        """
        INSERT INTO prospect_status_log (prospect_id, old_status, new_status, created_at)
        VALUES ($1, 'New', 'Attempted', $2) RETURNING id
        """,
        prospect,
        created_at,
    )
    return change_id


class History:
    """Old and recent calls and status changes, and old calls that must stay."""

    def __init__(self) -> None:
        self.old_calls: list[UUID] = []
        self.recent_calls: list[UUID] = []
        self.unended_call: UUID | None = None
        self.active_call_log: UUID | None = None
        self.old_changes: list[int] = []
        self.recent_changes: list[int] = []


@pytest.fixture
async def history(pool: asyncpg.Pool, team: Team) -> History:
    agent = team.agent["id"]
    made = History()
    p1 = await add_prospect_row(pool, "Old Timer", "+12125550111")
    p2 = await add_prospect_row(pool, "Still Talking", "+12125550112")
    for days in range(5):
        made.old_calls.append(await add_call(pool, agent, p1, OLD - timedelta(days=days)))
        made.old_changes.append(await add_status_change(pool, p1, OLD - timedelta(days=days)))
    for days in range(3):
        made.recent_calls.append(await add_call(pool, agent, p1, RECENT + timedelta(days=days)))
        made.recent_changes.append(await add_status_change(pool, p1, RECENT + timedelta(days=days)))
    # An old call that never ended, and an old call still on the active-call board: neither
    # may move (active_calls references its call log).
    made.unended_call = await add_call(pool, agent, p1, OLD, ended=False)
    made.active_call_log = await add_call(pool, agent, p2, OLD, ended=False)
    await pool.execute(
        """
        INSERT INTO active_calls (prospect_id, caller_id, call_log_id, phone_number, started_at)
        VALUES ($1, $2, $3, '+12125550112', $4)
        """,
        p2,
        UUID(agent),
        made.active_call_log,
        OLD,
    )
    return made


async def ids(pool: asyncpg.Pool, table: str) -> set[Any]:
    return {row["id"] for row in await pool.fetch(f"SELECT id FROM {table}")}


async def snapshot(pool: asyncpg.Pool) -> dict[str, Any]:
    """Everything archiving must leave as it was, whatever table a row lives in."""
    return {
        "calls": [
            dict(r)
            for r in await pool.fetch(
                "SELECT id, prospect_id, caller_id, phone_number, started_at, ended_at, outcome,"
                " duration, notes FROM call_logs_with_archive ORDER BY id"
            )
        ],
        "changes": [
            dict(r)
            for r in await pool.fetch(
                "SELECT id, prospect_id, old_status, new_status, created_at"
                " FROM prospect_status_log_with_archive ORDER BY id"
            )
        ],
        "last_call": await pool.fetch("SELECT id, last_call FROM prospects ORDER BY id"),
        "active": await pool.fetch("SELECT * FROM active_calls ORDER BY id"),
    }


async def test_a_dry_run_counts_and_writes_nothing(
    pool: asyncpg.Pool, history: History, database_url: str, tmp_path: Path
) -> None:
    before = await snapshot(pool)
    hot = await ids(pool, "call_logs")
    done = await asyncio.to_thread(run_archive, database_url, tmp_path, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "archiving what is older than 365 days" in done.stdout
    assert "to move: 5 call logs, 5 status changes" in done.stdout
    assert "left in place: 2 old calls still in progress" in done.stdout
    assert "dry run: nothing was written" in done.stdout
    assert await ids(pool, "call_logs") == hot
    assert await ids(pool, "call_logs_archive") == set()
    assert await ids(pool, "prospect_status_log_archive") == set()
    assert await snapshot(pool) == before


async def test_archive_moves_exactly_the_old_ended_rows(
    api: Api, team: Team, pool: asyncpg.Pool, history: History, database_url: str, tmp_path: Path
) -> None:
    before = await snapshot(pool)
    performance = await reports.agent_performance(
        pool, OLD - timedelta(days=10), OLD + timedelta(days=1)
    )
    done = await asyncio.to_thread(
        run_archive, database_url, tmp_path, "--older-than", "365d", "--batch-size", "2"
    )
    assert done.returncode == 0, done.stderr
    assert "to move: 5 call logs, 5 status changes" in done.stdout
    assert "moved 5 call logs and 5 status changes to the archive in 6 batches" in done.stdout

    assert await ids(pool, "call_logs_archive") == set(history.old_calls)
    assert await ids(pool, "call_logs") == {
        *history.recent_calls,
        history.unended_call,
        history.active_call_log,
    }
    assert await ids(pool, "prospect_status_log_archive") == set(history.old_changes)
    assert await ids(pool, "prospect_status_log") == set(history.recent_changes)
    # Moved, not changed: the same rows, the same active call, the same last_call.
    assert await snapshot(pool) == before
    # Reports count archived calls as before.
    assert (
        await reports.agent_performance(pool, OLD - timedelta(days=10), OLD + timedelta(days=1))
        == performance
    )
    # The call still on the board can be ended.
    ended = await api.data(
        """
        mutation($p: ID!, $c: ID!) {
          endCall(prospectId: $p, callLogId: $c, outcome: "Busy", duration: 60) { outcome }
        }
        """,
        {
            "p": str(before["active"][0]["prospect_id"]),
            "c": str(history.active_call_log),
        },
        team.agent["token"],
    )
    assert ended["endCall"]["outcome"] == "Busy"

    # Once ended, it is old enough to move; the call that never ended stays.
    again = await asyncio.to_thread(run_archive, database_url, tmp_path)
    assert "to move: 1 call log, 0 status changes" in again.stdout
    assert "left in place: 1 old call still in progress" in again.stdout
    assert await ids(pool, "call_logs_archive") == {*history.old_calls, history.active_call_log}
    assert await pool.fetchval("SELECT count(*) FROM active_calls") == 0

    last = await asyncio.to_thread(run_archive, database_url, tmp_path)
    assert "to move: nothing" in last.stdout
    assert "moved 0 call logs and 0 status changes" in last.stdout


@pytest.mark.parametrize("age", ["12h", "0d", "365", "a year", "-5d"])
async def test_the_command_refuses_a_bad_age(database_url: str, tmp_path: Path, age: str) -> None:
    done = await asyncio.to_thread(run_archive, database_url, tmp_path, "--older-than", age)
    assert done.returncode == 2
    assert "older-than" in done.stderr


def test_parse_age() -> None:
    assert archive.parse_age("365d") == timedelta(days=365)
    assert archive.parse_age("52w") == timedelta(weeks=52)
    assert archive.parse_age("36h") == timedelta(hours=36)
    assert archive.parse_age("90m", minimum=timedelta(0)) == timedelta(minutes=90)


async def test_archive_tables_keep_the_columns_of_the_hot_tables(pool: asyncpg.Pool) -> None:
    columns = """
        SELECT attname, format_type(atttypid, atttypmod), attnotnull
        FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped
        ORDER BY attnum
    """
    for hot in ("call_logs", "prospect_status_log"):
        assert await pool.fetch(columns, hot) == await pool.fetch(columns, f"{hot}_archive")


# --- archiving while the floor is calling -----------------------------------------------

START_CALL = "mutation($p: ID!) { startCall(prospectId: $p) { callLogId } }"
END_CALL = """
mutation($p: ID!, $c: ID!) {
  endCall(prospectId: $p, callLogId: $c, outcome: "No Answer", duration: 7) { id }
}
"""
AGENTS = 10
ROUNDS = 20
_phones = itertools.count(3000)


@pytest.fixture
async def archiver_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool like the server's with a zero gap, so a call may move the moment it ends."""
    test_pool = await database.create_pool(
        database_url,
        session=database.SessionSettings(min_call_interval_seconds=0),
        min_size=1,
        max_size=3,
    )
    yield test_pool
    await test_pool.close()


async def test_archiving_beside_calls_being_started_and_ended(
    settings: Settings, pool: asyncpg.Pool, archiver_pool: asyncpg.Pool
) -> None:
    async with running_server(replace(settings, min_call_interval_seconds=0)) as api:
        agents = [
            await add_user(pool, api, f"floor{i}@test.example", "agent") for i in range(AGENTS)
        ]
        prospects = {
            agent["id"]: [
                await add_prospect_row(pool, f"Lead {i}-{j}", f"+1212555{next(_phones):04d}")
                for j in range(3)
            ]
            for i, agent in enumerate(agents)
        }
        started: list[str] = []
        errors: list[Any] = []
        still_active: dict[str, str] = {}
        calling = True

        async def agent_cycles(agent: dict[str, Any]) -> None:
            for round_number in range(ROUNDS):
                prospect = str(prospects[agent["id"]][round_number % 3])
                body = await api.graphql(START_CALL, {"p": prospect}, agent["token"])
                if body.get("errors"):
                    errors.append(body["errors"])
                    continue
                call = body["data"]["startCall"]["callLogId"]
                started.append(call)
                await asyncio.sleep(0)  # a yield, so the archiver runs between calls
                if round_number == ROUNDS - 1:
                    still_active[call] = prospect  # left on the board
                    continue
                body = await api.graphql(END_CALL, {"p": prospect, "c": call}, agent["token"])
                if body.get("errors"):
                    errors.append(body["errors"])

        async def archiver() -> tuple[int, int]:
            moved = batches = 0
            while calling:
                # Everything that has ended is old enough: the cutoff is now.
                cutoff = await archiver_pool.fetchval("SELECT now()")
                moved += await archive.archive_call_logs_batch(archiver_pool, cutoff, 3)
                batches += 1
                await reports.fold_call_stats(archiver_pool, wait=False)
            return moved, batches

        archiving = asyncio.create_task(archiver())
        await asyncio.gather(*(agent_cycles(agent) for agent in agents))
        calling = False
        moved, batches = await archiving

        assert errors == []
        assert len(started) == AGENTS * ROUNDS
        assert batches > 10
        assert moved > 0
        # Every call is in exactly one of the two tables.
        hot, archived = await ids(pool, "call_logs"), await ids(pool, "call_logs_archive")
        assert hot.isdisjoint(archived)
        assert hot | archived == {UUID(call) for call in started}
        assert len(archived) == moved
        # No active call lost, none moved; nothing that has not ended was archived.
        active = await pool.fetch("SELECT call_log_id, prospect_id FROM active_calls")
        assert {str(r["call_log_id"]): str(r["prospect_id"]) for r in active} == still_active
        assert {UUID(call) for call in still_active} <= hot
        assert (
            await pool.fetchval("SELECT count(*) FROM call_logs_archive WHERE ended_at IS NULL")
            == 0
        )
        # The reports still count every call once.
        await reports.fold_call_stats(pool)
        counted = await pool.fetchval("SELECT sum(call_count) FROM prospect_call_counts")
        assert counted == AGENTS * ROUNDS
        floor_calls = await pool.fetchval("SELECT sum(calls) FROM call_volume_stats")
        assert floor_calls == AGENTS * ROUNDS
