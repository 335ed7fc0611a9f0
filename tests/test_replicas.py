"""Two real server processes on one database each deliver every event."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
from helpers import LOGIN, PASSWORD, Api, add_floor, post_graphql, serving, subscribe

START = "mutation($p: ID!) { startCall(prospectId: $p) { callLogId } }"
END = (
    'mutation($p: ID!, $c: ID!) { endCall(prospectId: $p, callLogId: $c, outcome: "Busy") { id } }'
)


async def test_two_processes_see_each_others_events(
    database_url: str, pool: asyncpg.Pool, data_dir: Path
) -> None:
    prospects = await add_floor(pool, "Replica", 7000, 2)
    with (
        serving(data_dir, DATABASE_URL=database_url) as (one, _),
        serving(data_dir, DATABASE_URL=database_url) as (two, _),
    ):
        tokens = [
            post_graphql(c, LOGIN, e="floor@test.example", p=PASSWORD)["login"]["token"]
            for c in (one, two)
        ]
        apis = [
            Api(base_url=str(c.base_url).rstrip("/"), client=None, app=None) for c in (one, two)
        ]
        async with subscribe(apis[0], tokens[0]) as on_one, subscribe(apis[1], tokens[1]) as on_two:
            await on_one.next()
            await on_two.next()
            # A call started through process two, ended through process one.
            call = await asyncio.to_thread(post_graphql, two, START, tokens[1], p=prospects[0])
            log_id = call["startCall"]["callLogId"]
            for stream in (on_one, on_two):
                event = await stream.next()
                assert (event["type"], event["activeCall"]["callLogId"]) == ("STARTED", log_id)
            await asyncio.to_thread(post_graphql, one, END, tokens[0], p=prospects[0], c=log_id)
            for stream in (on_one, on_two):
                event = await stream.next()
                assert (event["type"], event["outcome"]) == ("ENDED", "Busy")
