"""What more than one test file needs, in one place: test files import helpers from here
only, never from each other. Fixtures live in conftest.py, which builds on these."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
import websockets
from gql import Client, GraphQLRequest
from gql.transport.websockets import WebsocketsTransport
from websockets.typing import Subprotocol

from resolvers.users import create_user
from server import ConnectionHook, create_app
from settings import Settings

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"

# ---------------------------------------------------------------------------------------
# Waiting: a poll with a deadline, never a sleep that hopes.

POLL_SECONDS = 0.05


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]],
    within: float = 10,
    message: str = "the condition never held",
    interval: float = POLL_SECONDS,
) -> None:
    """Poll predicate (plain or async) until it is true; fail with message once `within`
    seconds have passed. (A deadline on polling, not a cancel scope: asyncio.timeout would
    cut a predicate's request short mid-flight.)"""
    deadline = time.monotonic() + within
    while True:
        answer = predicate()
        if inspect.isawaitable(answer):
            answer = await answer
        if answer:
            return
        if time.monotonic() >= deadline:
            pytest.fail(f"{message} (waited {within:g} s)", pytrace=False)
        await asyncio.sleep(interval)


def wait_until_blocking(
    predicate: Callable[[], bool],
    within: float = 10,
    message: str = "the condition never held",
    interval: float = POLL_SECONDS,
) -> None:
    """wait_until for code outside the event loop (subprocesses and their sync clients)."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() >= deadline:
            pytest.fail(f"{message} (waited {within:g} s)", pytrace=False)
        time.sleep(interval)


# ---------------------------------------------------------------------------------------
# Databases.


async def drop_database(admin_url: str, name: str) -> None:
    """Drop a database even if something still holds a connection to it."""
    connection = await asyncpg.connect(admin_url)
    try:
        quoted = await connection.fetchval("SELECT quote_ident($1)", name)
        await connection.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
    finally:
        await connection.close()


async def table_rows(
    pool: asyncpg.Pool, tables: tuple[str, ...]
) -> dict[str, list[dict[str, Any]]]:
    """Every row of these tables (by primary key), to prove what a request did not write."""
    return {
        table: [dict(row) for row in await pool.fetch(f"SELECT * FROM {table} ORDER BY 1")]
        for table in tables
    }


def query_database(database_url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    """Rows of one query, for a test that is not a coroutine (it drives a subprocess)."""

    async def fetch() -> list[asyncpg.Record]:
        connection = await asyncpg.connect(database_url)
        try:
            return await connection.fetch(query, *args)
        finally:
            await connection.close()

    return asyncio.run(fetch())


# ---------------------------------------------------------------------------------------
# A real server and a real HTTP client.


class GraphQLError(Exception):
    """A GraphQL response with errors, when the test expected data."""


@dataclass
class Api:
    """A real HTTP client against a real server."""

    base_url: str
    client: httpx.AsyncClient
    app: Any

    async def graphql(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> dict[str, Any]:
        """POST /graphql; returns the whole response body."""
        headers = bearer(token) if token else {}
        response = await self.client.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def data(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> dict[str, Any]:
        """POST /graphql expecting no errors; returns data."""
        body = await self.graphql(query, variables, token)
        if body.get("errors"):
            raise GraphQLError(body["errors"])
        data: dict[str, Any] = body["data"]
        return data

    async def error_code(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> str:
        """POST /graphql expecting exactly one error; returns its extensions.code."""
        body = await self.graphql(query, variables, token)
        assert body.get("errors"), body
        assert len(body["errors"]) == 1, body
        code: str = body["errors"][0]["extensions"]["code"]
        return code

    async def login(self, email: str, password: str = PASSWORD) -> str:
        """A bearer token for the user."""
        data = await self.data(
            "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }",
            {"e": email, "p": password},
        )
        token: str = data["login"]["token"]
        return token


def bearer(token: str) -> dict[str, str]:
    """An Authorization header for a token."""
    return {"authorization": f"Bearer {token}"}


@asynccontextmanager
async def running_server(
    settings: Settings, on_connect: ConnectionHook | None = None, port: int = 0
) -> AsyncIterator[Api]:
    """Serve the app with uvicorn on a loopback port (free by default) in this event loop."""
    app = create_app(settings, settings.database_url or "", on_connect=on_connect)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        ws_ping_interval=settings.ws_ping_seconds,
        ws_ping_timeout=settings.ws_ping_seconds,
        ws_per_message_deflate=settings.ws_compression,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await wait_until(
        lambda: server.started or task.done(), 60, "the test server did not start", interval=0.01
    )
    if task.done():
        task.result()  # the reason it stopped
    port = server.servers[0].sockets[0].getsockname()[1]
    base_url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            yield Api(base_url=base_url, client=client, app=app)
    finally:
        server.should_exit = True
        await task


# ---------------------------------------------------------------------------------------
# Users and prospects.


@dataclass
class Team:
    """Users of every role, signed in."""

    admin: dict[str, Any]
    manager: dict[str, Any]
    agents: list[dict[str, Any]] = field(default_factory=list)

    @property
    def agent(self) -> dict[str, Any]:
        """The first agent."""
        return self.agents[0]


async def add_user(pool: asyncpg.Pool, api: Api, email: str, role: str) -> dict[str, Any]:
    """Create a user through the resolver and sign in through the API."""
    record = await create_user(
        pool, email=email, name=email.split("@")[0], password=PASSWORD, role=role, bcrypt_rounds=4
    )
    return {"id": str(record["id"]), "email": email, "role": role, "token": await api.login(email)}


CREATE_PROSPECT = """
mutation($input: CreateProspectInput!) {
  createProspect(input: $input) { id name phone email company status }
}
"""


async def add_prospect(
    api: Api, token: str, phone: str = "(212) 555-0123", name: str = "Pat Prospect"
) -> dict[str, Any]:
    """Create a prospect through the API."""
    data = await api.data(CREATE_PROSPECT, {"input": {"name": name, "phone": phone}}, token)
    prospect: dict[str, Any] = data["createProspect"]
    return prospect


_phones = itertools.count(2000)


def next_phone() -> str:
    """A fresh valid New York (+1 212) number for each prospect a test makes."""
    return f"+1 212 555 {next(_phones) % 10000:04d}"


# ---------------------------------------------------------------------------------------
# Calls.

START_CALL = """
mutation($p: ID!) { startCall(prospectId: $p) { activeCallId callLogId activeCall { callerId } } }
"""
END_CALL = """
mutation($p: ID!, $c: ID!, $o: String!, $d: Int) {
  endCall(prospectId: $p, callLogId: $c, outcome: $o, duration: $d) {
    id outcome duration endedAt callerId
  }
}
"""


async def start(api: Api, token: str, prospect_id: str) -> dict[str, Any]:
    """Start a call that must start; returns {activeCallId, callLogId, activeCall}."""
    data = await api.data(START_CALL, {"p": prospect_id}, token)
    result: dict[str, Any] = data["startCall"]
    return result


async def end(
    api: Api, token: str, prospect_id: str, call_log_id: str, outcome: str = "No Answer"
) -> dict[str, Any]:
    """End a call that must end; returns the call log."""
    data = await api.data(END_CALL, {"p": prospect_id, "c": call_log_id, "o": outcome}, token)
    result: dict[str, Any] = data["endCall"]
    return result


async def assert_in_call(
    pool: asyncpg.Pool, started: dict[str, Any], prospect_id: str, caller_id: str
) -> None:
    """The call startCall answered is the prospect's one active call, by that caller, with
    an open call log: the call really started, as who the test says."""
    active = await pool.fetch(
        "SELECT id::text, call_log_id::text, caller_id::text FROM active_calls"
        " WHERE prospect_id = $1",
        prospect_id,
    )
    assert [dict(row) for row in active] == [
        {"id": started["activeCallId"], "call_log_id": started["callLogId"], "caller_id": caller_id}
    ]
    log = await pool.fetchrow(
        "SELECT prospect_id::text, caller_id::text, ended_at FROM call_logs WHERE id = $1",
        started["callLogId"],
    )
    assert log is not None, "startCall answered a call log that is not in the database"
    assert dict(log) == {"prospect_id": prospect_id, "caller_id": caller_id, "ended_at": None}
    assert started["activeCall"]["callerId"] == caller_id


# ---------------------------------------------------------------------------------------
# Live events: activeCallEvents over graphql-transport-ws.

EVENTS = """
subscription($agent: ID) {
  activeCallEvents(agentId: $agent) {
    type seq outcome
    activeCall { id callLogId prospectId callerId prospectName callerName phoneNumber startedAt }
    activeCalls { id callLogId callerId prospectId prospectName }
  }
}
"""


async def open_subscription(
    api: Api, token: str, operation_id: str = "1", agent: str | None = None, **options: Any
) -> Any:
    """A bare graphql-transport-ws connection (the `websockets` client) with one
    activeCallEvents subscription, its first message (the SNAPSHOT) read; close it."""
    url = api.base_url.replace("http", "ws") + "/graphql"
    socket = await websockets.connect(
        url, subprotocols=[Subprotocol("graphql-transport-ws")], **options
    )
    await socket.send(json.dumps({"type": "connection_init", "payload": {"token": token}}))
    assert json.loads(await asyncio.wait_for(socket.recv(), 10))["type"] == "connection_ack"
    subscribe = {"query": EVENTS, "variables": {"agent": agent}}
    await socket.send(json.dumps({"id": operation_id, "type": "subscribe", "payload": subscribe}))
    first = json.loads(await asyncio.wait_for(socket.recv(), 10))
    assert first["payload"]["data"]["activeCallEvents"]["type"] == "SNAPSHOT", first
    return socket


def event_of(message: str | bytes) -> dict[str, Any]:
    """The activeCallEvents object of a raw `next` message."""
    event: dict[str, Any] = json.loads(message)["payload"]["data"]["activeCallEvents"]
    return event


class Stream:
    """A live subscription read one event at a time, with a timeout."""

    def __init__(self, iterator: AsyncIterator[dict[str, Any]]) -> None:
        self.iterator = iterator

    async def next(self, within: float = 10) -> dict[str, Any]:
        """The next event, failing the test if none comes within the time."""
        result = await asyncio.wait_for(self.iterator.__anext__(), within)
        event: dict[str, Any] = result["activeCallEvents"]
        return event

    async def next_of(self, kind: str, within: float = 10) -> dict[str, Any]:
        """Skip to the next event of a type (e.g. past a resync's SNAPSHOT)."""
        while True:
            event = await self.next(within)
            if event["type"] == kind:
                return event


@asynccontextmanager
async def subscribe(api: Api, token: str, agent: str | None = None) -> AsyncIterator[Stream]:
    """Subscribe with gql's graphql-transport-ws client, a real third-party client."""
    transport = WebsocketsTransport(
        url=api.base_url.replace("http", "ws") + "/graphql",
        init_payload={"token": token},
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
    )
    async with Client(transport=transport) as session:
        request = GraphQLRequest(EVENTS, variable_values={"agent": agent})
        iterator = session.subscribe(request)
        try:
            yield Stream(iterator)
        finally:
            await iterator.aclose()


# ---------------------------------------------------------------------------------------
# server.py as operators run it: real processes.

LOGIN = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }"


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def environment(data_dir: Path, **extra: str) -> dict[str, str]:
    """This process's environment without its database settings, plus the given ones."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_URL", "DB_", "TEST_DATABASE_URL"))
    }
    env.update(DATA_DIR=str(data_dir), BCRYPT_ROUNDS="4", **extra)
    return env


def run(
    data_dir: Path, *args: str, stdin: str = "", **extra: str
) -> subprocess.CompletedProcess[str]:
    """`server.py ARGS...` to completion, with extra environment variables."""
    return subprocess.run(
        [sys.executable, str(ROOT / "server.py"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=environment(data_dir, **extra),
        cwd=ROOT,
        timeout=120,
        check=False,
    )


class Served:
    """What a `serve` process printed and its exit status, filled in once it has stopped."""

    output = ""
    status: int | None = None


@contextmanager
def serving(
    data_dir: Path, stop: signal.Signals = signal.SIGINT, **extra: str
) -> Iterator[tuple[httpx.Client, Served]]:
    """`server.py serve` on a free port until the block ends, then stopped with `stop`."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "server.py"), "serve"],
        env=environment(data_dir, PORT=str(port), **extra),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    served = Served()

    def healthy() -> bool:
        if process.poll() is not None:
            pytest.fail("server exited: " + process.communicate()[0])
        try:
            return client.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until_blocking(healthy, 60, "server did not come up", interval=0.2)
        yield client, served
    finally:
        client.close()
        process.send_signal(stop)
        served.output = process.communicate(timeout=30)[0]
        served.status = process.returncode


def post_graphql(
    client: httpx.Client, query: str, token: str | None = None, **variables: object
) -> dict[str, Any]:
    """POST /graphql with a blocking client, expecting no errors; returns data."""
    headers = bearer(token) if token else {}
    response = client.post(
        "/graphql", json={"query": query, "variables": variables}, headers=headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert not body.get("errors"), body
    data: dict[str, Any] = body["data"]
    return data
