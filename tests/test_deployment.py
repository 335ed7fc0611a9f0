"""What docs/deploy.md promises operators: replicas restart one at a time without losing a
request or a call, and a PostgreSQL failover leaves calls and subscribers as the new
primary has them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
import websockets
from helpers import (
    EVENTS,
    LOGIN,
    PASSWORD,
    START_CALL,
    Api,
    Proxy,
    add_floor,
    add_prospect,
    add_user,
    drop_database,
    end,
    next_phone,
    post_graphql,
    running_server,
    serving,
    start,
    subscribe,
    wait_until,
)

from settings import Settings
from sql import database


async def open_board(base_url: str, token: str) -> Any:
    """A raw graphql-transport-ws subscription to activeCallEvents; (socket, snapshot)."""
    socket = await websockets.connect(
        base_url.replace("http", "ws") + "/graphql", subprotocols=["graphql-transport-ws"]
    )
    await socket.send(json.dumps({"type": "connection_init", "payload": {"token": token}}))
    assert json.loads(await socket.recv())["type"] == "connection_ack"
    await socket.send(
        json.dumps({"id": "1", "type": "subscribe", "payload": {"query": EVENTS, "variables": {}}})
    )
    return socket


async def next_event(socket: Any) -> dict[str, Any]:
    message = json.loads(await asyncio.wait_for(socket.recv(), 10))
    assert message["type"] == "next", message
    event: dict[str, Any] = message["payload"]["data"]["activeCallEvents"]
    return event


async def test_a_rolling_restart_finishes_requests_and_subscribers_resync(
    database_url: str, pool: asyncpg.Pool, data_dir: Path
) -> None:
    """Replica one is stopped (SIGTERM, as a rolling restart does) while a request is in
    flight and a wallboard is subscribed: the request completes, the socket is closed
    with 1012 (service restart), and the wallboard, reconnecting to replica two, is sent
    a snapshot holding every call, including those started meanwhile."""
    prospects = await add_floor(pool, "Rolling", 7100, 3)
    common = {"DATABASE_URL": database_url}
    with serving(data_dir, stop=signal.SIGTERM, **common) as (two, _):
        token = post_graphql(two, LOGIN, e="floor@test.example", p=PASSWORD)["login"]["token"]
        with serving(data_dir, stop=signal.SIGTERM, **common) as (one, first):
            board = await open_board(str(one.base_url).rstrip("/"), token)
            assert (await next_event(board))["type"] == "SNAPSHOT"
            call = await asyncio.to_thread(post_graphql, two, START_CALL, token, p=prospects[0])
            assert (await next_event(board))["type"] == "STARTED"

            async with pool.acquire() as holder, holder.transaction():
                await holder.execute(
                    "SELECT 1 FROM prospects WHERE id = $1 FOR UPDATE", prospects[1]
                )
                in_flight = asyncio.ensure_future(
                    asyncio.to_thread(post_graphql, one, START_CALL, token, p=prospects[1])
                )

                async def blocked() -> bool:
                    waiting = await pool.fetchval(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                    return bool(waiting)

                await wait_until(blocked, 10, "the request never reached the lock")
                first.process.send_signal(signal.SIGTERM)
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(board.recv(), 20)
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 1012
                assert first.process.poll() is None, "it stopped before its request finished"
            # The lock is gone: the request in flight finishes, then the replica exits.
            answer = await in_flight
            assert answer["startCall"]["callLogId"]
            await asyncio.to_thread(first.process.wait, 30)
        assert first.status == 0
        assert "Application shutdown complete" in first.output

        # Meanwhile, through the other replica; then the wallboard comes back there.
        third = await asyncio.to_thread(post_graphql, two, START_CALL, token, p=prospects[2])
        api_two = Api(base_url=str(two.base_url).rstrip("/"), client=None, app=None)
        async with subscribe(api_two, token) as stream:
            snapshot = await stream.next()
            assert snapshot["type"] == "SNAPSHOT"
            assert {c["callLogId"] for c in snapshot["activeCalls"]} == {
                call["startCall"]["callLogId"],
                answer["startCall"]["callLogId"],
                third["startCall"]["callLogId"],
            }
    assert await pool.fetchval("SELECT count(*) FROM active_calls") == 3


@contextlib.asynccontextmanager
async def proxied(database_url: str) -> AsyncIterator[Proxy]:
    proxy = Proxy(database_url)
    await proxy.start()
    try:
        yield proxy
    finally:
        with contextlib.suppress(Exception):
            await proxy.cut()


async def test_a_failover_keeps_what_the_new_primary_has(
    settings: Settings, admin_url: str, database_url: str
) -> None:
    """PostgreSQL fails over to a replica that has every commit up to a point (as an
    asynchronous standby may): calls in progress then carry on, subscribers are resynced
    to what the new primary holds (events already sent may be gone from it), and a call
    committed after that point is gone. Losing the connections alone resyncs no one."""
    name = urlsplit(database_url).path.lstrip("/")
    standby, retired = f"{name}_standby", f"{name}_retired"
    setup = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    assert setup is not None
    async with proxied(database_url) as proxy:
        try:
            async with running_server(replace(settings, database_url=proxy.url)) as api:
                agent = await add_user(setup, api, "failover@test.example", "agent")
                kept = await add_prospect(api, agent["token"], next_phone(), name="Kept")
                lost = await add_prospect(api, agent["token"], next_phone(), name="Lost")
                await setup.close()
                async with subscribe(api, agent["token"]) as stream:
                    await stream.next()
                    in_progress = await start(api, agent["token"], kept["id"])
                    await stream.next_of("STARTED")

                    # The standby's copy: every commit so far.
                    await proxy.cut()
                    await copy_database(admin_url, name, standby)
                    await proxy.start()
                    await wait_healthy(api)
                    # Committed on the old primary only: replication had not sent it yet.
                    gone = await start(api, agent["token"], lost["id"])
                    # The next event, numbered on: the same database, nothing missed.
                    started = await stream.next(within=20)
                    assert started["type"] == "STARTED"
                    assert started["activeCall"]["callLogId"] == gone["callLogId"]

                    # Failover: the standby becomes the primary, at the same address.
                    await proxy.cut()
                    await swap_databases(admin_url, name, standby, retired)
                    await proxy.start()
                    resync = await stream.next_of("SNAPSHOT", within=20)
                    await wait_healthy(api)
                    assert [c["callLogId"] for c in resync["activeCalls"]] == [
                        in_progress["callLogId"]
                    ]
                    refused = await api.graphql(
                        "mutation($p: ID!, $c: ID!) { endCall(prospectId: $p, callLogId: $c,"
                        ' outcome: "Busy") { id } }',
                        {"p": lost["id"], "c": gone["callLogId"]},
                        agent["token"],
                    )
                    assert refused["errors"][0]["extensions"]["code"] in {
                        "NOT_FOUND",
                        "CALL_NOT_ACTIVE",
                    }
                    ended = await end(api, agent["token"], kept["id"], in_progress["callLogId"])
                    assert ended["outcome"] == "No Answer"
                    assert (await stream.next_of("ENDED"))["activeCall"]["callLogId"] == (
                        in_progress["callLogId"]
                    )
        finally:
            await drop_database(admin_url, retired)
            await drop_database(admin_url, standby)


async def wait_healthy(api: Api) -> None:
    async def healthy() -> bool:
        return (await api.client.get("/healthz")).status_code == 200

    await wait_until(healthy, 20, "the server did not recover", interval=0.2)


async def copy_database(admin_url: str, source: str, copy: str) -> None:
    """A copy of source as it is now (no one may be connected to it meanwhile)."""
    connection = await asyncpg.connect(admin_url)
    try:
        await connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", source
        )
        await database.ensure_database(admin_url, copy, template=source)
    finally:
        await connection.close()


async def swap_databases(admin_url: str, primary: str, standby: str, retired: str) -> None:
    """The standby takes the primary's name; the old primary is kept aside."""
    connection = await asyncpg.connect(admin_url)
    try:
        quoted = [
            await connection.fetchval("SELECT quote_ident($1)", name)
            for name in (primary, standby, retired)
        ]
        await connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", primary
        )
        await connection.execute(f"ALTER DATABASE {quoted[0]} RENAME TO {quoted[2]}")
        await connection.execute(f"ALTER DATABASE {quoted[1]} RENAME TO {quoted[0]}")
    finally:
        await connection.close()
