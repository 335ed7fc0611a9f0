"""The whole API and the live events through a real PgBouncer in transaction mode.

The pool goes through PgBouncer (DATABASE_POOLING=transaction, asyncpg's statement cache
off, as PgBouncer 1.18 needs); the LISTEN connection and the migrator go around it
(DATABASE_LISTEN_URL). PgBouncer lends each of a few server connections to one
transaction at a time, so every setting the SQL functions read must travel with each
transaction: these tests run with non-default ones and check the database honoured them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import websockets
from helpers import (
    LOGIN,
    PGBOUNCER_POOL_SIZE,
    ROOT,
    START_CALL,
    Api,
    PgBouncer,
    Team,
    add_prospect,
    add_user,
    assert_in_call,
    bearer,
    end,
    next_phone,
    post_graphql,
    run,
    running_server,
    serving,
    start,
    subscribe,
    wait_until,
)

from settings import Settings

SAMPLES = ROOT / "samples"
# Not the defaults (300 s, 3600 s, 90 days): each must reach the SQL functions.
MIN_CALL_INTERVAL_SECONDS = 3600
ACTIVE_CALL_TIMEOUT_SECONDS = 1234
CALLBACK_MAX_DAYS = 7


@pytest.fixture
def bounced(settings: Settings, pgbouncer: PgBouncer, database_url: str) -> Settings:
    """The server's settings with its pool behind PgBouncer and LISTEN around it."""
    return replace(
        settings,
        database_url=pgbouncer.url(database_url),
        database_listen_url=database_url,
        database_pooling="transaction",
        statement_cache_size=0,
        min_call_interval_seconds=MIN_CALL_INTERVAL_SECONDS,
        active_call_timeout_seconds=ACTIVE_CALL_TIMEOUT_SECONDS,
        callback_max_days=CALLBACK_MAX_DAYS,
    )


@pytest.fixture
async def api(bounced: Settings) -> AsyncIterator[Api]:
    """A real server whose pool goes through PgBouncer (overrides conftest's)."""
    async with running_server(bounced) as client:
        yield client


async def test_the_api_and_live_events_work_through_pgbouncer(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    agent, other = team.agents
    async with subscribe(api, team.manager["token"]) as stream:
        snapshot = await stream.next()
        assert (snapshot["type"], snapshot["activeCalls"]) == ("SNAPSHOT", [])

        prospect = await add_prospect(api, agent["token"], next_phone(), name="Bounced")
        call = await start(api, agent["token"], prospect["id"])
        await assert_in_call(pool, call, prospect["id"], agent["id"])
        started = await stream.next()
        assert (started["type"], started["seq"]) == ("STARTED", snapshot["seq"] + 1)
        assert started["activeCall"]["callLogId"] == call["callLogId"]

        heartbeat = await api.data(
            "mutation($c: ID!) { heartbeatCall(callLogId: $c) { leaseExpiresAt } }",
            {"c": call["callLogId"]},
            agent["token"],
        )
        assert heartbeat["heartbeatCall"]["leaseExpiresAt"]
        ended = await end(api, agent["token"], prospect["id"], call["callLogId"], "Voicemail")
        assert ended["outcome"] == "Voicemail"
        event = await stream.next()
        assert (event["type"], event["seq"], event["outcome"]) == (
            "ENDED",
            started["seq"] + 1,
            "Voicemail",
        )

        # nextLead: one statement that picks, starts and notifies.
        fresh = await add_prospect(api, agent["token"], next_phone(), name="Next")
        lead = await api.data(
            "mutation { nextLead { prospect { id } callLogId nothingCallable } }",
            token=other["token"],
        )
        assert lead["nextLead"]["prospect"]["id"] == fresh["id"]
        assert (await stream.next())["activeCall"]["callLogId"] == lead["nextLead"]["callLogId"]

    # A page with nested fields (DataLoaders, concurrent reads), reports, REST.
    page = await api.data(
        "{ prospects(first: 10) { edges { node { id name activeCall { callerId }"
        " callHistory(first: 5) { outcome } assignment { agentId } } } } }",
        token=team.manager["token"],
    )
    names = {edge["node"]["name"]: edge["node"] for edge in page["prospects"]["edges"]}
    assert names["Bounced"]["callHistory"] == [{"outcome": "Voicemail"}]
    assert names["Next"]["activeCall"] == {"callerId": other["id"]}
    now = datetime.now(UTC)
    stats = await api.data(
        "query($f: DateTime!, $t: DateTime!) { callStats(from: $f, to: $t) { calls } }",
        {"f": (now - timedelta(days=1)).isoformat(), "t": (now + timedelta(days=1)).isoformat()},
        team.manager["token"],
    )
    assert stats["callStats"]["calls"] == 2
    rest = await api.client.get("/api/active-calls", headers=bearer(team.manager["token"]))
    assert [row["prospect_id"] for row in rest.json()] == [fresh["id"]]

    # An import: temporary tables, COPY and the merge, in one transaction.
    imported = await api.data(
        "mutation($csv: String!) { importProspects(csv: $csv) { inserted } }",
        {"csv": "name,phone\nImported One,+1 212 555 0901\nImported Two,+1 212 555 0902\n"},
        team.manager["token"],
    )
    assert imported["importProspects"]["inserted"] == 2
    assert await pool.fetchval("SELECT count(*) FROM prospects WHERE name LIKE 'Imported%'") == 2

    # A logout reaches every socket of that token through the direct LISTEN connection.
    async with websockets.connect(
        api.base_url.replace("http", "ws") + "/graphql", subprotocols=["graphql-transport-ws"]
    ) as socket:
        await socket.send(
            json.dumps({"type": "connection_init", "payload": {"token": other["token"]}})
        )
        assert "connection_ack" in await socket.recv()
        await api.data("mutation { logout }", token=other["token"])
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), 10)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4403


async def test_racing_agents_through_pgbouncer_start_one_call(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    """Twenty agents on a few shared server connections, ten rounds: one call each round."""
    agents = [await add_user(pool, api, f"racer{n}@test.example", "agent") for n in range(20)]
    for _ in range(10):
        prospect = await add_prospect(api, team.manager["token"], next_phone())
        answers = await asyncio.gather(
            *(api.graphql(START_CALL, {"p": prospect["id"]}, a["token"]) for a in agents)
        )
        winners = [a for a in answers if not a.get("errors")]
        codes = {a["errors"][0]["extensions"]["code"] for a in answers if a.get("errors")}
        assert len(winners) == 1, answers
        assert codes == {"ALREADY_IN_CALL"}
        assert (
            await pool.fetchval(
                "SELECT count(*) FROM call_logs WHERE prospect_id = $1", prospect["id"]
            )
            == 1
        )


async def test_settings_reach_the_sql_functions_through_pgbouncer(
    api: Api, team: Team, pool: asyncpg.Pool, pgbouncer: PgBouncer, database_url: str
) -> None:
    """MIN_CALL_INTERVAL_SECONDS, ACTIVE_CALL_TIMEOUT_SECONDS and CALLBACK_MAX_DAYS are
    honoured in transactions and in single statements alike, and never stay behind on a
    server connection another client is lent."""
    agent = team.agent
    prospect = await add_prospect(api, agent["token"], next_phone())
    call = await start(api, agent["token"], prospect["id"])
    lease = await pool.fetchrow(
        "SELECT started_at, lease_expires_at FROM active_calls WHERE call_log_id = $1",
        call["callLogId"],
    )
    assert lease is not None
    assert (lease["lease_expires_at"] - lease["started_at"]).total_seconds() == (
        ACTIVE_CALL_TIMEOUT_SECONDS
    )
    await end(api, agent["token"], prospect["id"], call["callLogId"])
    # Ten minutes ago: past the default gap of five, well inside this server's hour.
    await pool.execute("UPDATE call_logs SET started_at = started_at - interval '10 minutes'")
    await pool.execute("UPDATE prospects SET last_call = last_call - interval '10 minutes'")

    refused = await api.graphql(START_CALL, {"p": prospect["id"]}, agent["token"])
    assert refused["errors"][0]["extensions"]["code"] == "RECENTLY_CALLED"
    assert refused["errors"][0]["message"] == "Prospect was called recently (within 60 minutes)"
    # canCall is a single statement outside any transaction.
    can = await api.data(
        "query($p: ID!) { canCall(prospectId: $p) { allowed code } }",
        {"p": prospect["id"]},
        agent["token"],
    )
    assert can["canCall"] == {"allowed": False, "code": "RECENTLY_CALLED"}
    rest = await api.client.get(
        f"/api/prospects/{prospect['id']}/can-call", headers=bearer(agent["token"])
    )
    assert rest.json()["allowed"] is False

    later = await api.graphql(
        "mutation($p: ID!, $at: DateTime!) { scheduleCallback(prospectId: $p, at: $at) { id } }",
        {"p": prospect["id"], "at": datetime.now().astimezone().replace(year=2099).isoformat()},
        agent["token"],
    )
    assert later["errors"][0]["message"] == "at must be within 7 days"

    # Another client of the same PgBouncer, without the settings, gets the defaults on
    # whichever server connection it is lent: nothing stayed behind on the session.
    plains = [
        await asyncpg.connect(pgbouncer.url(database_url), statement_cache_size=0)
        for _ in range(PGBOUNCER_POOL_SIZE * 2)
    ]
    try:
        for _ in range(4):
            answers = await asyncio.gather(
                *(
                    plain.fetchrow("SELECT pg_backend_pid() AS pid, min_call_interval() AS gap")
                    for plain in plains
                )
            )
            assert {row["gap"].total_seconds() for row in answers} == {300}
        # ... and those were the server connections the server's requests were lent too.
        assert len({row["pid"] for row in answers}) <= PGBOUNCER_POOL_SIZE
    finally:
        for plain in plains:
            await plain.close()
    assert await pool.fetchval("SELECT count(*) FROM call_logs") == 1


async def test_listen_through_a_transaction_pooler_misses_events(
    pgbouncer: PgBouncer, database_url: str, pool: asyncpg.Pool
) -> None:
    """Why DATABASE_LISTEN_URL goes around PgBouncer: a LISTEN through it lasts one
    transaction on a server connection that is then lent to others."""
    heard: list[str] = []
    through = await asyncpg.connect(pgbouncer.url(database_url), statement_cache_size=0)
    direct = await asyncpg.connect(database_url)
    direct_heard: list[str] = []
    try:
        await through.add_listener("cf_probe", lambda *a: heard.append(a[3]))
        await direct.add_listener("cf_probe", lambda *a: direct_heard.append(a[3]))
        for n in range(5):
            await pool.execute("SELECT pg_notify('cf_probe', $1)", str(n))
        await wait_until(lambda: len(direct_heard) == 5, 10, "the direct listener heard nothing")

        # PgBouncer got each notification on a server connection lent to nobody, and
        # dropped it.
        def dropped() -> int:
            log = (pgbouncer.directory / "pgbouncer.log").read_text()
            return log.count("got packet 'A' from server when not linked")

        await wait_until(lambda: dropped() >= 5, 10, "PgBouncer never saw the notifications")
        assert await through.fetchval("SELECT 1") == 1
        assert heard == []
    finally:
        await direct.close()
        through.terminate()


def test_the_commands_run_through_pgbouncer(
    pgbouncer: PgBouncer, database_url: str, data_dir: Path
) -> None:
    """serve, create-user and import-csv as operators run them behind PgBouncer: pools
    through it, the migrator's lock and LISTEN around it (DATABASE_LISTEN_URL)."""
    behind = {
        "DATABASE_URL": pgbouncer.url(database_url),
        "DATABASE_LISTEN_URL": database_url,
        "DATABASE_POOLING": "transaction",
    }
    made = run(
        data_dir,
        "create-user",
        "--from-file",
        "-",
        stdin="email,role,password\nfloor@example.com,manager,floor-password\n",
        **behind,
    )
    assert made.returncode == 0, made.stderr
    imported = run(data_dir, "import-csv", str(SAMPLES / "prospects.csv"), **behind)
    assert imported.returncode == 1, imported.stderr  # the sample has one bad row
    with serving(data_dir, **behind) as (client, _):
        token = post_graphql(client, LOGIN, e="floor@example.com", p="floor-password")["login"][
            "token"
        ]
        page = post_graphql(client, "{ prospects(first: 100) { edges { node { id } } } }", token)
        assert len(page["prospects"]["edges"]) == 4
