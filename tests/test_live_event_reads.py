"""Call events read from call_events by snapshot: each once, in commit order, whoever
wrote them and whether or not anyone woke the readers; pruning forces a resync."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from helpers import Api, Team, add_prospect, listening, next_phone, subscribe, wait_until

from resolvers.events import CallEvent, Hub, prune_call_events, wake_listeners
from sql import database

WRITERS = 6
PROSPECTS_PER_WRITER = 3
WATCHERS = 40


@asynccontextmanager
async def quick_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool whose calls may start again at once (no minimum gap between calls)."""
    pool = await database.create_pool(
        database_url,
        session=database.SessionSettings(min_call_interval_seconds=0),
        min_size=1,
        max_size=WRITERS + 4,
    )
    try:
        yield pool
    finally:
        await pool.close()


async def add_agent(pool: asyncpg.Pool, email: str) -> Any:
    return await pool.fetchval(
        "INSERT INTO users (email, password_hash, role) VALUES ($1, 'x', 'agent') RETURNING id",
        email,
    )


async def add_prospects(pool: asyncpg.Pool, count: int) -> list[Any]:
    return [
        await pool.fetchval(
            "INSERT INTO prospects (name, phone) VALUES ('Raced', $1) RETURNING id",
            next_phone().replace(" ", ""),
        )
        for _ in range(count)
    ]


class Watcher:
    """A subscriber that applies its SNAPSHOT and the events after it to a set of calls,
    checking each is new or known, and that the numbers follow on."""

    def __init__(self) -> None:
        self.active: set[str] = set()
        self.numbers: list[int] = []
        self.events: list[CallEvent] = []

    def apply(self, event: CallEvent) -> None:
        if event.type == "SNAPSHOT":
            assert event.active_calls is not None
            self.active = {call["call_log_id"] for call in event.active_calls}
            self.numbers, self.events = [event.seq], []
            return
        assert event.active_call is not None
        self.numbers.append(event.seq)
        self.events.append(event)
        call_log = event.active_call["call_log_id"]
        if event.type == "STARTED":
            assert call_log not in self.active, "started twice"
            self.active.add(call_log)
        else:
            assert call_log in self.active, "ended a call never seen"
            self.active.discard(call_log)


@pytest.mark.parametrize("round_number", range(3))
async def test_reads_raced_against_commits_deliver_each_event_once_in_commit_order(
    database_url: str, round_number: int
) -> None:
    """Writers start and end calls straight in SQL as fast as they can, half of them
    waking the readers, half leaving it to the poll; watchers join at random moments
    throughout. Each watcher's SNAPSHOT plus its events is the database's state, with
    numbers following on; the first watcher, there before any write, gets every row of
    call_events as an event, each once, and each call's events
    come in the order they committed (started before ended, a prospect's calls one after
    another)."""
    async with quick_pool(database_url) as pool:
        hub = Hub(pool, queue_size=100_000)
        agents = [await add_agent(pool, f"reader{n}@test.example") for n in range(WRITERS)]
        prospects = [await add_prospects(pool, PROSPECTS_PER_WRITER) for _ in agents]
        marker_agent = await add_agent(pool, "marker@test.example")
        [marker] = await add_prospects(pool, 1)
        writing = True
        cycles = 0

        async def write(agent: Any, mine: list[Any], wake: bool) -> None:
            nonlocal cycles
            async with pool.acquire() as connection:
                while writing:
                    for prospect in mine:
                        started = await connection.fetchrow(
                            "SELECT call_log_id FROM start_call($1, $2, NULL, NULL)",
                            prospect,
                            agent,
                        )
                        if wake:
                            await wake_listeners(connection)
                        await connection.fetchrow(
                            "SELECT id FROM end_call($1, $2, $3, 'No Answer', 1, NULL, NULL, NULL)",
                            prospect,
                            started["call_log_id"],
                            agent,
                        )
                        if wake:
                            await wake_listeners(connection)
                        cycles += 1

        async def watch(watcher: Watcher, delay: float) -> None:
            await asyncio.sleep(delay)
            async with hub.subscription(marker_agent, "watcher") as stream:
                async for event in stream:
                    watcher.apply(event)
                    call = event.active_call
                    if event.type == "STARTED" and call and call["prospect_id"] == str(marker):
                        return

        # A short poll: many reads race the commits, not only the wake-ups.
        async with listening(database_url, hub, poll=0.005):
            first = Watcher()
            first_task = asyncio.create_task(watch(first, 0))
            await wait_until(lambda: bool(first.numbers), 10, "the first snapshot")
            writers = [
                asyncio.create_task(write(agent, mine, wake=n % 2 == 0))
                for n, (agent, mine) in enumerate(zip(agents, prospects, strict=True))
            ]
            rng = random.Random(round_number)
            watchers = [Watcher() for _ in range(WATCHERS)]
            watching = [
                asyncio.create_task(watch(watcher, rng.uniform(0.05, 4.0))) for watcher in watchers
            ]
            await wait_until(
                lambda: all(watcher.numbers for watcher in watchers), 60, "every watcher to join"
            )
            writing = False
            await asyncio.gather(*writers)
            # Everything committed before the marker reaches every watcher before it.
            await pool.fetchrow(
                "SELECT * FROM start_call($1, $2, NULL, NULL)", marker, marker_agent
            )
            await asyncio.wait_for(asyncio.gather(first_task, *watching), 30)

        assert cycles >= 200, f"the writers hardly wrote ({cycles} cycles): no race"
        in_database = {
            str(row["call_log_id"])
            for row in await pool.fetch("SELECT call_log_id FROM active_calls")
        }
        for watcher in [first, *watchers]:
            assert watcher.active == in_database
            assert watcher.numbers == list(
                range(watcher.numbers[0], watcher.numbers[0] + len(watcher.numbers))
            )
        # No event was written before the first watcher's snapshot: it saw them all.
        rows = await pool.fetch(
            "SELECT e.xid::text, e.payload FROM call_events e ORDER BY e.xid, e.id"
        )
        delivered = [
            (event.xid, event.type, event.active_call["call_log_id"])
            for event in first.events
            if event.active_call is not None
        ]
        written = [
            (int(row["xid"]), row["payload"]["type"], row["payload"]["active_call"]["call_log_id"])
            for row in rows
        ]
        assert len(delivered) == len(set(delivered)), "an event came twice"
        assert sorted(delivered, key=str) == sorted(written, key=str)
        # Not necessarily in transaction id order overall: a start takes its id, then
        # checks every rule, so ids are not commit order, and a batch read later comes
        # later. Order holds wherever it can be told, below.
        # Per prospect, the events alternate as the calls did: started, ended, started...
        by_prospect: dict[str, list[str]] = {}
        for event in first.events:
            assert event.active_call is not None
            by_prospect.setdefault(event.active_call["prospect_id"], []).append(event.type)
        for prospect, types in by_prospect.items():
            expected = ["STARTED", "ENDED"] * (len(types) // 2 + 1)
            assert types == expected[: len(types)], prospect
        # And in commit order: a call's end, which waited for its start to commit, never
        # comes before it (checked by Watcher.apply), and an end's xid is above its start's.
        started_at: dict[str, int] = {}
        for event in first.events:
            assert event.active_call is not None
            assert event.xid is not None
            call_log = event.active_call["call_log_id"]
            if event.type == "STARTED":
                started_at[call_log] = event.xid
            else:
                assert event.xid > started_at[call_log]


async def test_a_change_made_in_plain_sql_arrives_by_the_poll(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    """No one wakes the readers after a call started from psql: the poll reads it."""
    prospect = await add_prospect(api, team.agent["token"], next_phone())
    async with subscribe(api, team.manager["token"]) as stream:
        snapshot = await stream.next()
        row = await pool.fetchrow(
            "SELECT call_log_id FROM start_call($1, $2, NULL, NULL)",
            prospect["id"],
            team.agent["id"],
        )
        started = await stream.next(within=10)
        assert (started["type"], started["seq"]) == ("STARTED", snapshot["seq"] + 1)
        assert started["activeCall"]["callLogId"] == str(row["call_log_id"])


async def test_events_missed_while_not_reading_are_read_from_the_table(
    database_url: str,
) -> None:
    """A reader that was away (no wake-up, no poll) reads every event committed meanwhile
    on its next read, in order: a reconnect loses nothing."""
    async with quick_pool(database_url) as pool:
        hub = Hub(pool)
        agent = await add_agent(pool, "away@test.example")
        prospects = await add_prospects(pool, 5)
        async with hub.subscription(agent, "away") as stream:
            snapshot = await anext(stream)
            assert snapshot.type == "SNAPSHOT"
            calls = [
                await pool.fetchval(
                    "SELECT call_log_id::text FROM start_call($1, $2, NULL, NULL)", prospect, agent
                )
                for prospect in prospects
            ]
            hub.wake()
            events = [await asyncio.wait_for(anext(stream), 10) for _ in calls]
        assert [event.type for event in events] == ["STARTED"] * 5
        assert [event.active_call["call_log_id"] for event in events if event.active_call] == calls
        assert [event.seq for event in events] == list(range(snapshot.seq + 1, snapshot.seq + 6))


async def test_pruned_events_force_a_resync_and_only_for_readers_that_missed_them(
    database_url: str,
) -> None:
    """A reader whose last snapshot does not show an event pruning deleted resyncs its
    subscribers with a fresh snapshot; one that had read it carries on."""
    async with quick_pool(database_url) as pool:
        behind, current = Hub(pool), Hub(pool)
        agent = await add_agent(pool, "pruned@test.example")
        [first, second] = await add_prospects(pool, 2)
        async with (
            behind.subscription(agent, "behind") as behind_stream,
            current.subscription(agent, "current") as current_stream,
        ):
            assert (await anext(behind_stream)).type == "SNAPSHOT"
            assert (await anext(current_stream)).type == "SNAPSHOT"
            call = await pool.fetchval(
                "SELECT call_log_id::text FROM start_call($1, $2, NULL, NULL)", first, agent
            )
            current.wake()
            assert (await asyncio.wait_for(anext(current_stream), 10)).type == "STARTED"
            # Kept for less than the retention: nothing goes.
            assert await prune_call_events(pool) == 0
            await pool.execute("UPDATE call_events SET created_at = created_at - interval '1 day'")
            assert await prune_call_events(pool) == 1
            assert await pool.fetchval("SELECT count(*) FROM call_events") == 0

            behind.wake()
            resync = await asyncio.wait_for(anext(behind_stream), 10)
            assert resync.type == "SNAPSHOT"
            assert [c["call_log_id"] for c in resync.active_calls or []] == [call]

            other = await pool.fetchval(
                "SELECT call_log_id::text FROM start_call($1, $2, NULL, NULL)", second, agent
            )
            current.wake()
            behind.wake()
            for stream in (current_stream, behind_stream):
                event = await asyncio.wait_for(anext(stream), 10)
                assert event.type == "STARTED"
                assert event.active_call is not None
                assert event.active_call["call_log_id"] == other
