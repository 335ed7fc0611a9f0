"""While the database is unreachable the API answers with a code, and recovers by itself.

The server reaches PostgreSQL through a TCP proxy the test controls, so a test can cut
the network (resetting every connection and refusing new ones) or make it go silent.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace

import asyncpg
import pytest
from helpers import (
    Api,
    Proxy,
    add_prospect,
    add_user,
    next_phone,
    running_server,
    start,
    subscribe,
    wait_until,
)

from settings import Settings


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
            await stream.next()
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
            # The listener came back too: a fresh snapshot, then events again.
            await stream.next_of("SNAPSHOT", within=20)
            call = await start(api, agent["token"], prospect["id"])
            event = await stream.next_of("STARTED", within=10)
            assert event["activeCall"]["callLogId"] == call["callLogId"]
    assert await pool.fetchval("SELECT count(*) FROM call_logs") == 1


async def test_a_silent_network_is_noticed_and_resynced(
    settings: Settings, pool: asyncpg.Pool, proxy: Proxy
) -> None:
    async with running_server(replace(settings, database_url=proxy.url)) as api:
        agent = await add_user(pool, api, "silent@test.example", "agent")
        prospect = await add_prospect(api, agent["token"], next_phone())
        listener = api.app.state.listener
        async with subscribe(api, agent["token"]) as stream:
            await stream.next()
            proxy.flowing.clear()
            # Written straight to the database while the server hears nothing.
            await pool.fetchrow(
                "SELECT * FROM start_call($1, $2, NULL, NULL)", prospect["id"], agent["id"]
            )
            await wait_until(
                lambda: not listener.connected.is_set(), 10, "the dead listener went unnoticed"
            )
            proxy.flowing.set()
            resync = await stream.next_of("SNAPSHOT", within=20)
            assert [c["prospectId"] for c in resync["activeCalls"]] == [prospect["id"]]
