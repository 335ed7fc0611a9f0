"""While the database is unreachable the API answers with a code, and recovers by itself.

The server reaches PostgreSQL through a TCP proxy the test controls, so a test can cut
the network (resetting every connection and refusing new ones) or make it go silent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg
import pytest
from helpers import (
    Api,
    add_prospect,
    add_user,
    next_phone,
    running_server,
    start,
    subscribe,
    wait_until,
)

from settings import Settings


class Proxy:
    """A loopback TCP proxy to PostgreSQL that can be cut or silenced."""

    def __init__(self, database_url: str) -> None:
        parts = urlsplit(database_url)
        socket_dir = parse_qs(parts.query).get("host", [None])[0]
        self.port = 0
        self.unix_path = f"{socket_dir}/.s.PGSQL.{parts.port or 5432}" if socket_dir else None
        self.tcp_target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self.database_url = database_url
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.flowing = asyncio.Event()
        self.flowing.set()

    @property
    def url(self) -> str:
        """The database URL through the proxy."""
        parts = urlsplit(self.database_url)
        credentials = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return urlunsplit(parts._replace(netloc=f"{credentials}127.0.0.1:{self.port}", query=""))

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and reset the open ones."""
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.unix_path:
            up_reader, up_writer = await asyncio.open_unix_connection(self.unix_path)
        else:
            up_reader, up_writer = await asyncio.open_connection(*self.tcp_target)
        self.writers |= {writer, up_writer}
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        self.writers -= {writer, up_writer}

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self.flowing.wait()  # a network gone quiet: bytes go nowhere
                writer.write(data)
                await writer.drain()
        finally:
            with contextlib.suppress(Exception):
                writer.transport.abort()


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
