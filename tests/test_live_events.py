"""activeCallEvents over graphql-transport-ws, driven by LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
import websockets
from helpers import (
    EVENTS,
    START_CALL,
    Api,
    Team,
    add_prospect,
    add_user,
    end,
    event_of,
    listening,
    next_phone,
    open_subscription,
    running_server,
    start,
    subscribe,
    wait_until,
)

from graph.subscriptions import AsgiChannel, RawFrameChannel
from resolvers.events import CallEvent, Hub
from settings import Settings

HEARTBEAT = "mutation($c: ID!) { heartbeatCall(callLogId: $c) { leaseExpiresAt } }"


async def test_snapshot_then_deltas_in_commit_order(api: Api, team: Team) -> None:
    token = team.agent["token"]
    first = await add_prospect(api, token, next_phone(), name="First")
    second = await add_prospect(api, token, next_phone(), name="Second")
    call = await start(api, token, first["id"])
    async with subscribe(api, team.manager["token"]) as stream:
        snapshot = await stream.next()
        assert snapshot["type"] == "SNAPSHOT"
        assert [c["callLogId"] for c in snapshot["activeCalls"]] == [call["callLogId"]]
        assert snapshot["activeCalls"][0]["prospectName"] == "First"

        other = await start(api, team.agents[1]["token"], second["id"])
        await end(api, token, first["id"], call["callLogId"], "Voicemail")

        started = await stream.next()
        assert started["type"] == "STARTED"
        assert started["seq"] == snapshot["seq"] + 1
        assert started["activeCall"]["callLogId"] == other["callLogId"]
        assert started["activeCall"]["prospectName"] == "Second"
        assert started["activeCall"]["callerName"] == "agent2"
        assert started["activeCall"]["phoneNumber"].startswith("+1212555")

        ended = await stream.next()
        assert ended["type"] == "ENDED"
        assert ended["seq"] == started["seq"] + 1
        assert ended["outcome"] == "Voicemail"
        assert ended["activeCall"]["callLogId"] == call["callLogId"]


async def test_agent_filter_narrows_the_stream(api: Api, team: Team) -> None:
    mine = await add_prospect(api, team.agent["token"], next_phone())
    theirs = await add_prospect(api, team.agent["token"], next_phone())
    async with subscribe(api, team.manager["token"], agent=team.agents[1]["id"]) as stream:
        assert (await stream.next())["activeCalls"] == []
        await start(api, team.agents[0]["token"], mine["id"])
        call = await start(api, team.agents[1]["token"], theirs["id"])
        event = await stream.next()
        assert event["type"] == "STARTED"
        assert event["activeCall"]["callLogId"] == call["callLogId"]


async def test_a_rolled_back_call_never_shows(api: Api, team: Team, pool: asyncpg.Pool) -> None:
    doomed = await add_prospect(api, team.agent["token"], next_phone())
    kept = await add_prospect(api, team.agent["token"], next_phone())
    async with subscribe(api, team.manager["token"]) as stream:
        snapshot = await stream.next()
        async with pool.acquire() as connection:
            transaction = connection.transaction()
            await transaction.start()
            await connection.fetchrow(
                "SELECT * FROM start_call($1, $2, NULL, NULL)", doomed["id"], team.agent["id"]
            )
            await transaction.rollback()
        call = await start(api, team.agent["token"], kept["id"])
        event = await stream.next()
        assert event["activeCall"]["callLogId"] == call["callLogId"]
        assert event["seq"] == snapshot["seq"] + 1  # no gap: the rollback took no number


async def test_bad_or_missing_token_closes_with_4403(api: Api, team: Team) -> None:
    url = api.base_url.replace("http", "ws") + "/graphql"
    # A null payload is allowed by the protocol and carries no token: 4403 too, not 4400.
    for payload in ({"token": "not-a-token"}, {}, {"Authorization": "Bearer nope"}, None):
        async with websockets.connect(url, subprotocols=["graphql-transport-ws"]) as socket:
            await socket.send(json.dumps({"type": "connection_init", "payload": payload}))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(socket.recv(), 5)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 4403
    # The Authorization form is accepted too.
    async with websockets.connect(url, subprotocols=["graphql-transport-ws"]) as socket:
        init = {"Authorization": f"Bearer {team.agent['token']}"}
        await socket.send(json.dumps({"type": "connection_init", "payload": init}))
        assert json.loads(await asyncio.wait_for(socket.recv(), 5))["type"] == "connection_ack"


async def test_logout_closes_the_socket(api: Api, team: Team) -> None:
    url = api.base_url.replace("http", "ws") + "/graphql"
    token = team.agent["token"]
    async with websockets.connect(url, subprotocols=["graphql-transport-ws"]) as socket:
        await socket.send(json.dumps({"type": "connection_init", "payload": {"token": token}}))
        assert json.loads(await socket.recv())["type"] == "connection_ack"
        await socket.send(
            json.dumps({"id": "1", "type": "subscribe", "payload": {"query": EVENTS}})
        )
        assert json.loads(await socket.recv())["payload"]["data"]["activeCallEvents"]["type"] == (
            "SNAPSHOT"
        )
        assert (await api.data("mutation { logout }", token=token))["logout"] is True
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(drain(socket), 5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4403


async def test_deactivating_a_user_closes_their_socket(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    url = api.base_url.replace("http", "ws") + "/graphql"
    async with websockets.connect(url, subprotocols=["graphql-transport-ws"]) as socket:
        init = {"token": team.agent["token"]}
        await socket.send(json.dumps({"type": "connection_init", "payload": init}))
        assert json.loads(await socket.recv())["type"] == "connection_ack"
        await pool.execute("UPDATE users SET active = false WHERE id = $1", team.agent["id"])
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), 5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4403


async def test_subscriptions_per_connection_are_bounded(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    async with running_server(replace(settings, max_subscriptions_per_connection=2)) as api:
        agent = await add_user(pool, api, "many@test.example", "agent")
        url = api.base_url.replace("http", "ws") + "/graphql"
        async with websockets.connect(url, subprotocols=["graphql-transport-ws"]) as socket:
            init = {"token": agent["token"]}
            await socket.send(json.dumps({"type": "connection_init", "payload": init}))
            assert json.loads(await socket.recv())["type"] == "connection_ack"
            for number in range(3):
                message = {"id": str(number), "type": "subscribe", "payload": {"query": EVENTS}}
                await socket.send(json.dumps(message))
            replies = [json.loads(await asyncio.wait_for(socket.recv(), 5)) for _ in range(3)]
            assert sorted(r["type"] for r in replies) == ["error", "next", "next"]
            [refused] = [r for r in replies if r["type"] == "error"]
            assert refused["id"] == "2"
            assert [error["extensions"]["code"] for error in refused["payload"]] == [
                "TOO_MANY_REQUESTS"
            ]
            assert refused["payload"][0]["message"] == "At most 2 subscriptions per connection"


async def test_a_slow_subscriber_gets_a_snapshot_and_never_delays_others(
    pool: asyncpg.Pool, database_url: str
) -> None:
    """The fan-out never waits: an overflowing queue is replaced by one RESYNC."""
    hub = Hub(pool, queue_size=4)
    async with (
        listening(database_url, hub),
        hub.subscription(uuid_of(1), "slow") as slow,
        hub.subscription(uuid_of(2), "fast") as fast,
    ):
        assert (await anext(slow)).type == "SNAPSHOT"
        assert (await anext(fast)).type == "SNAPSHOT"
        seq = hub.last_seq
        received = []
        for number in range(1, 21):
            hub.publish(fake_event(seq + number))  # never blocks, whoever is slow
            received.append((await anext(fast)).seq)
        assert received == [seq + n for n in range(1, 21)]
        # The slow one kept no backlog: it gets a fresh snapshot instead.
        assert (await asyncio.wait_for(anext(slow), 5)).type == "SNAPSHOT"


async def drain(socket: Any) -> None:
    """Read until the server closes the socket."""
    while True:
        await socket.recv()


def uuid_of(number: int) -> Any:
    return uuid.UUID(int=number)


def fake_event(seq: int) -> CallEvent:
    call = {"caller_id": str(uuid_of(9)), "id": str(uuid_of(seq))}
    return CallEvent("STARTED", seq, datetime.now(UTC), active_call=call)


async def test_listener_loss_reconnects_and_loses_no_event(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    """Events wait in call_events: a call started while the LISTEN connection is away
    arrives as its event, numbered next, with no resync."""
    prospect = await add_prospect(api, team.agent["token"], next_phone())
    listener = api.app.state.listener
    async with subscribe(api, team.manager["token"]) as stream:
        snapshot = await stream.next()
        old_pid = listener.connection.get_server_pid()
        assert await pool.fetchval("SELECT pg_terminate_backend($1)", old_pid)
        await wait_until(lambda: not listener.connected.is_set(), 10, "the loss went unnoticed")
        call = await start(api, team.agent["token"], prospect["id"])
        started = await stream.next(within=15)
        assert (started["type"], started["seq"]) == ("STARTED", snapshot["seq"] + 1)
        assert started["activeCall"]["callLogId"] == call["callLogId"]
        await wait_until(listener.connected.is_set, 15, "the listener never came back")
        assert listener.connection.get_server_pid() != old_pid
        await end(api, team.agent["token"], prospect["id"], call["callLogId"])
        ended = await stream.next()
        assert (ended["type"], ended["seq"]) == ("ENDED", started["seq"] + 1)
        assert ended["activeCall"]["callLogId"] == call["callLogId"]


async def test_stale_calls_expire_and_heartbeats_keep_them(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """Time is moved in the database, not waited for: each round takes 40 s off every
    one-minute lease. The call that heartbeats after each round outlives twice its lease;
    the other lapses in the second round and the sweep expires it."""
    leased = replace(settings, active_call_timeout_seconds=60, stale_call_sweep_seconds=0.05)
    async with running_server(leased) as api:
        agent = await add_user(pool, api, "stale@test.example", "agent")
        kept = await add_prospect(api, agent["token"], next_phone(), name="Kept")
        lost = await add_prospect(api, agent["token"], next_phone(), name="Lost")

        async def lease_of(call: dict[str, Any]) -> datetime | None:
            lease: datetime | None = await pool.fetchval(
                "SELECT lease_expires_at FROM active_calls WHERE call_log_id = $1",
                call["callLogId"],
            )
            return lease

        async with subscribe(api, agent["token"]) as stream:
            await stream.next()
            kept_call = await start(api, agent["token"], kept["id"])
            lost_call = await start(api, agent["token"], lost["id"])
            for _ in range(3):
                await pool.execute(
                    "UPDATE active_calls SET lease_expires_at = lease_expires_at"
                    " - interval '40 seconds'"
                )
                beat = await api.data(HEARTBEAT, {"c": kept_call["callLogId"]}, agent["token"])
                # A full minute again from now, whatever the rounds took off.
                lease = await lease_of(kept_call)
                assert lease is not None, "the heartbeating call was expired"
                assert datetime.fromisoformat(beat["heartbeatCall"]["leaseExpiresAt"]) == lease
                assert lease > await pool.fetchval("SELECT now() + interval '50 seconds'")
            expired = await stream.next_of("EXPIRED")
            assert expired["activeCall"]["callLogId"] == lost_call["callLogId"]
            assert expired["outcome"] == "Expired"
            assert await lease_of(lost_call) is None
        # 120 s off a 60 s lease, and the heartbeats kept it: still active, not ended.
        assert await lease_of(kept_call) is not None
        outcomes = dict(await pool.fetch("SELECT id::text, outcome FROM call_logs"))
        assert outcomes == {kept_call["callLogId"]: None, lost_call["callLogId"]: "Expired"}
        status = await pool.fetchval("SELECT status FROM prospects WHERE id = $1", lost["id"])
        assert status == "New"  # Expired sets no status


async def test_replicas_expiring_at_once_expire_each_call_once(
    database_url: str, pool: asyncpg.Pool
) -> None:
    agent = await pool.fetchval(
        "INSERT INTO users (email, password_hash, role) VALUES ('x@test.example', 'x', 'agent')"
        " RETURNING id"
    )
    replicas = [await asyncpg.connect(database_url) for _ in range(3)]
    try:
        for round_number in range(10):
            await pool.execute(
                """
                WITH p AS (
                    INSERT INTO prospects (name, phone)
                    SELECT 'S', '+1212' || lpad((5550000 + $1 * 50 + i)::text, 7, '0')
                    FROM generate_series(0, 29) i RETURNING id, phone
                ), c AS (
                    INSERT INTO call_logs (prospect_id, caller_id, phone_number)
                    SELECT id, $2, phone FROM p RETURNING id, prospect_id, phone_number
                )
                INSERT INTO active_calls (prospect_id, caller_id, call_log_id, phone_number,
                                          lease_expires_at)
                SELECT prospect_id, $2, id, phone_number, now() - interval '1 second' FROM c
                """,
                round_number,
                agent,
            )
            counts = await asyncio.gather(
                *(r.fetchval("SELECT expire_active_calls(NULL)") for r in replicas)
            )
            assert sum(counts) == 30, counts
            assert await pool.fetchval("SELECT count(*) FROM active_calls") == 0
        expired = await pool.fetchval("SELECT count(*) FROM call_logs WHERE outcome = 'Expired'")
        assert expired == 300
    finally:
        for replica in replicas:
            await replica.close()


async def test_managers_release_stale_calls(api: Api, team: Team, pool: asyncpg.Pool) -> None:
    prospect = await add_prospect(api, team.agent["token"], next_phone())
    call = await start(api, team.agent["token"], prospect["id"])
    release = "mutation($s: Int!) { releaseStaleCalls(olderThan: $s) }"
    assert await api.error_code(release, {"s": 0}, team.agent["token"]) == "FORBIDDEN"
    assert (await api.data(release, {"s": 3600}, team.manager["token"]))["releaseStaleCalls"] == 0
    await pool.execute("UPDATE active_calls SET started_at = now() - interval '2 hours'")
    assert (await api.data(release, {"s": 3600}, team.manager["token"]))["releaseStaleCalls"] == 1
    outcome = await pool.fetchval("SELECT outcome FROM call_logs WHERE id = $1", call["callLogId"])
    assert outcome == "Expired"
    assert await api.error_code(START_CALL, {"p": prospect["id"]}, team.agent["token"]) == (
        "RECENTLY_CALLED"
    )


async def test_a_dead_client_is_found_by_pings_and_freed(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    async with running_server(replace(settings, ws_ping_seconds=0.3)) as api:
        agent = await add_user(pool, api, "gone@test.example", "agent")
        hub = api.app.state.hub
        url = api.base_url.replace("http", "ws") + "/graphql"
        async with websockets.connect(
            url, subprotocols=["graphql-transport-ws"], ping_interval=None
        ) as socket:
            init = {"token": agent["token"]}
            await socket.send(json.dumps({"type": "connection_init", "payload": init}))
            assert json.loads(await socket.recv())["type"] == "connection_ack"
            await socket.send(
                json.dumps({"id": "1", "type": "subscribe", "payload": {"query": EVENTS}})
            )
            await socket.recv()
            assert len(hub.subscribers) == 1
            # The client freezes (a closed laptop): it stops reading, so it answers no pings.
            socket.transport.pause_reading()
            await wait_until(
                lambda: not hub.subscribers, 10, "the dead client's subscription was never freed"
            )


async def test_many_subscribers_of_one_event_all_receive_it(api: Api, team: Team) -> None:
    """Subscribers share one execution per event and query; each still gets its own view."""
    prospect = await add_prospect(api, team.agent["token"], next_phone())
    async with (
        subscribe(api, team.manager["token"]) as first,
        subscribe(api, team.agents[1]["token"]) as second,
        subscribe(api, team.manager["token"], agent=team.agents[1]["id"]) as narrowed,
    ):
        for stream in (first, second, narrowed):
            await stream.next()
        call = await start(api, team.agent["token"], prospect["id"])
        one, two = await first.next(), await second.next()
        assert one == two
        assert one["activeCall"]["callLogId"] == call["callLogId"]
        other = await add_prospect(api, team.agent["token"], next_phone())
        theirs = await start(api, team.agents[1]["token"], other["id"])
        assert (await narrowed.next())["activeCall"]["callLogId"] == theirs["callLogId"]
        assert (await first.next())["activeCall"]["callLogId"] == theirs["callLogId"]


async def test_snapshots_raced_against_commits_show_every_event_once(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """Subscribers join while agents start and end calls as fast as they can: each one's
    SNAPSHOT plus the events after it, applied in order, must be the database's active
    calls, with numbers following on without gaps and no call started or ended twice."""
    watchers_count, calls_between_joins = 20, 4
    async with running_server(replace(settings, min_call_interval_seconds=0)) as api:
        agents = [await add_user(pool, api, f"racer{i}@test.example", "agent") for i in range(6)]
        prospects = [await add_prospect(api, agents[0]["token"], next_phone()) for _ in range(12)]
        marker = await add_prospect(api, agents[0]["token"], next_phone(), name="Marker")
        cycles = 0
        joined = 0
        writing = True

        async def work(agent: dict[str, Any], mine: list[dict[str, Any]]) -> None:
            nonlocal cycles
            while writing:
                for prospect in mine:
                    body = await api.graphql(START_CALL, {"p": prospect["id"]}, agent["token"])
                    if body.get("errors"):
                        continue
                    call = body["data"]["startCall"]
                    await end(api, agent["token"], prospect["id"], call["callLogId"])
                    cycles += 1

        async def watch(turn: int) -> tuple[set[str], list[int]]:
            """Join once the writers have made turn * calls_between_joins calls; return
            the active calls seen and the numbers received."""
            nonlocal joined
            await wait_until(lambda: cycles >= turn * calls_between_joins, 60, "writers")
            active: set[str] = set()
            numbers: list[int] = []
            async with subscribe(api, agents[0]["token"]) as stream:
                snapshot = await stream.next(within=30)
                joined += 1
                assert snapshot["type"] == "SNAPSHOT"
                active = {call["callLogId"] for call in snapshot["activeCalls"]}
                numbers.append(snapshot["seq"])
                while True:
                    event = await stream.next(within=30)
                    if event["type"] == "SNAPSHOT":  # resynced: start over from it
                        active = {call["callLogId"] for call in event["activeCalls"]}
                        numbers = [event["seq"]]
                        continue
                    numbers.append(event["seq"])
                    call_log = event["activeCall"]["callLogId"]
                    if event["type"] == "STARTED":
                        assert call_log not in active, "started twice"
                        active.add(call_log)
                    else:
                        assert call_log in active, "ended a call never seen"
                        active.discard(call_log)
                    if event["activeCall"]["prospectId"] == marker["id"]:
                        return active, numbers

        pairs = [prospects[i::6] for i in range(6)]
        writers = [
            asyncio.create_task(work(agent, mine))
            for agent, mine in zip(agents, pairs, strict=True)
        ]
        watchers = [asyncio.create_task(watch(turn)) for turn in range(watchers_count)]
        # Writers keep going until every watcher has joined in the middle of their work.
        await wait_until(lambda: joined == watchers_count, 120, "every watcher to join")
        writing = False
        await asyncio.gather(*writers)
        # Everything committed before the marker reaches every watcher before it.
        marked = await start(api, agents[0]["token"], marker["id"])
        results = await asyncio.gather(*watchers)
        in_database = {
            row["call_log_id"]
            for row in await pool.fetch("SELECT call_log_id::text FROM active_calls")
        }
        assert marked["callLogId"] in in_database
        for active, numbers in results:
            assert active == in_database
            assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
        assert cycles >= watchers_count * calls_between_joins
        calls = await pool.fetchval("SELECT count(*) FROM call_logs")
        assert calls > 20, "the writers hardly wrote: the race did not happen"


async def test_subscribers_of_one_document_are_sent_the_same_bytes(api: Api, team: Team) -> None:
    """An event is rendered once per document and variables: every socket subscribed with
    them is sent the very same message but for the subscription's id, written straight to
    the socket; a subscription narrowed to an agent has a feed of its own."""
    hub = api.app.state.hub
    prospect = await add_prospect(api, team.agent["token"], next_phone())
    first = await open_subscription(api, team.manager["token"], "a")
    second = await open_subscription(api, team.agents[1]["token"], "subscription-2")
    narrowed = await open_subscription(api, team.manager["token"], "n", agent=team.agent["id"])
    try:
        assert len(hub.feeds) == 2
        assert {type(s.sink) for s in hub.subscribers} == {RawFrameChannel}
        # The handshake's request and response are let go once a subscription runs.
        protocols = [s.sink._protocol for s in hub.subscribers]
        assert all(p.request is None and p.response is None for p in protocols)
        call = await start(api, team.agent["token"], prospect["id"])
        one = await asyncio.wait_for(first.recv(), 10)
        two = await asyncio.wait_for(second.recv(), 10)
        assert one.startswith('{"id":"a",')
        assert one.replace('{"id":"a",', '{"id":"subscription-2",', 1) == two
        assert event_of(one)["activeCall"]["callLogId"] == call["callLogId"]
        mine = json.loads(await asyncio.wait_for(narrowed.recv(), 10))
        assert mine["id"] == "n"
        assert mine["payload"] == json.loads(one)["payload"]
    finally:
        for socket in (first, second, narrowed):
            await socket.close()
    await wait_until(lambda: not hub.feeds, 10, "the feeds outlived their subscribers")


def big_event(seq: int, agent_id: str, name: str) -> CallEvent:
    """A STARTED event of the agent whose prospect's name is name."""
    now = datetime.now(UTC).isoformat()
    call = {
        "id": str(uuid_of(seq)),
        "prospect_id": str(uuid_of(seq)),
        "caller_id": agent_id,
        "call_log_id": str(uuid_of(seq)),
        "phone_number": "+12125550100",
        "started_at": now,
        "lease_expires_at": now,
        "prospect_name": name,
        "caller_name": "stalled",
    }
    return CallEvent("STARTED", seq, datetime.now(UTC), active_call=call)


async def test_a_socket_that_stops_reading_is_resynced_and_never_delays_others(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """A client that stops reading fills its socket's buffers; every event still reaches
    the others before the next is published, and the stalled one, once it reads again,
    gets what was buffered, then a SNAPSHOT instead of the backlog, then what follows."""
    async with running_server(replace(settings, subscriber_queue_size=4)) as api:
        agent = await add_user(pool, api, "stalled@test.example", "agent")
        hub = api.app.state.hub
        stalled = await open_subscription(api, agent["token"], "s")
        reader = await open_subscription(api, agent["token"], "r")
        try:
            stalled.transport.pause_reading()
            seq = hub.last_seq
            name = "x" * 65536  # ~64 KiB per message: the buffers fill in a few hundred
            for number in range(1, 301):
                hub.publish(big_event(seq + number, agent["id"], name))
                event = event_of(await asyncio.wait_for(reader.recv(), 10))
                assert event["seq"] == seq + number
            assert [s.pending is not None for s in hub.subscribers].count(True) == 1, (
                "the stalled socket was never found behind"
            )
            stalled.transport.resume_reading()
            numbers = []
            while (event := event_of(await asyncio.wait_for(stalled.recv(), 10)))["type"] != (
                "SNAPSHOT"
            ):
                numbers.append(event["seq"])
            assert numbers == list(range(seq + 1, seq + 1 + len(numbers)))
            assert len(numbers) < 300
            assert event["seq"] == seq + 300
            hub.publish(big_event(seq + 301, agent["id"], "after"))
            after = event_of(await asyncio.wait_for(stalled.recv(), 10))
            assert (after["seq"], after["activeCall"]["prospectName"]) == (seq + 301, "after")
            assert event_of(await asyncio.wait_for(reader.recv(), 10))["seq"] == seq + 301
        finally:
            await stalled.close()
            await reader.close()


async def test_compressed_sockets_are_sent_every_event_through_asgi(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """With permessage-deflate the frames are the WebSocket library's to write: events go
    through ASGI instead, still in order and each once."""
    async with running_server(replace(settings, ws_compression=True)) as api:
        agent = await add_user(pool, api, "deflate@test.example", "agent")
        hub = api.app.state.hub
        socket = await open_subscription(api, agent["token"], compression="deflate")
        try:
            assert socket.protocol.extensions, "the client and server agreed no compression"
            assert {type(s.sink) for s in hub.subscribers} == {AsgiChannel}
            prospects = [await add_prospect(api, agent["token"], next_phone()) for _ in range(3)]
            calls = [await start(api, agent["token"], p["id"]) for p in prospects]
            events = [event_of(await asyncio.wait_for(socket.recv(), 10)) for _ in calls]
            assert [e["activeCall"]["callLogId"] for e in events] == [c["callLogId"] for c in calls]
            assert [e["seq"] for e in events] == list(range(events[0]["seq"], events[0]["seq"] + 3))
        finally:
            await socket.close()


async def test_subscriptions_hold_no_task_and_end_when_completed(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """Once its SNAPSHOT is sent, a subscription is the hub's alone: no task waits for its
    events. It still counts towards the limit, ends when the client completes it (its id
    free again), and each open one gets every event once."""
    async with running_server(replace(settings, max_subscriptions_per_connection=5)) as api:
        agent = await add_user(pool, api, "idle@test.example", "agent")
        hub = api.app.state.hub
        url = api.base_url.replace("http", "ws") + "/graphql"
        async with websockets.connect(url, subprotocols=["graphql-transport-ws"]) as socket:

            async def subscribe_as(operation_id: str) -> dict[str, Any]:
                payload = {"query": EVENTS}
                message = {"id": operation_id, "type": "subscribe", "payload": payload}
                await socket.send(json.dumps(message))
                reply: dict[str, Any] = json.loads(await asyncio.wait_for(socket.recv(), 10))
                return reply

            await socket.send(
                json.dumps({"type": "connection_init", "payload": {"token": agent["token"]}})
            )
            assert json.loads(await socket.recv())["type"] == "connection_ack"
            tasks = len(asyncio.all_tasks())
            for number in range(5):
                assert (await subscribe_as(str(number)))["type"] == "next"
            await wait_until(
                lambda: len(asyncio.all_tasks()) <= tasks, 10, "subscriptions kept tasks"
            )
            assert len(hub.subscribers) == 5
            assert (await subscribe_as("5"))["type"] == "error"  # the limit holds

            await socket.send(json.dumps({"id": "0", "type": "complete"}))
            await wait_until(lambda: len(hub.subscribers) == 4, 10, "complete left it on")
            again = await subscribe_as("0")
            assert event_of(json.dumps(again))["type"] == "SNAPSHOT"

            prospect = await add_prospect(api, agent["token"], next_phone())
            call = await start(api, agent["token"], prospect["id"])
            messages = [json.loads(await asyncio.wait_for(socket.recv(), 10)) for _ in range(5)]
            assert sorted(m["id"] for m in messages) == ["0", "1", "2", "3", "4"]
            assert {event_of(json.dumps(m))["activeCall"]["callLogId"] for m in messages} == {
                call["callLogId"]
            }
        await wait_until(lambda: not hub.subscribers and not hub.feeds, 10, "left subscribed")


async def test_events_that_arrive_together_are_written_together_in_order(
    api: Api, team: Team
) -> None:
    """Events published before the fan-out gets to run are written to each socket in one
    go: every one still arrives as a message of its own, once, in order."""
    hub = api.app.state.hub
    socket = await open_subscription(api, team.manager["token"])
    try:
        seq = hub.last_seq
        for number in range(1, 51):
            hub.publish(big_event(seq + number, team.agent["id"], f"p{number}"))
        events = [event_of(await asyncio.wait_for(socket.recv(), 10)) for _ in range(50)]
        assert [e["seq"] for e in events] == list(range(seq + 1, seq + 51))
        assert [e["activeCall"]["prospectName"] for e in events] == [
            f"p{number}" for number in range(1, 51)
        ]
    finally:
        await socket.close()
