"""What more than one test file needs, in one place: test files import helpers from here
only, never from each other. Fixtures live in conftest.py, which builds on these."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import uvicorn
import websockets
from gql import Client, GraphQLRequest
from gql.transport.websockets import WebsocketsTransport
from websockets.typing import Subprotocol

from resolvers.events import POLL_SECONDS as READER_POLL_SECONDS
from resolvers.events import Hub, Listener
from resolvers.users import create_user
from server import ConnectionHook, create_app
from settings import Settings

try:
    from playwright import async_api as playwright_api
except ImportError:
    playwright_api = None

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"
# In CI (CI set, as .ci/run sets it) a test that cannot run for want of a tool fails rather
# than skips, so a green CI run ran everything.
IN_CI = os.environ.get("CI", "").lower() not in {"", "0", "false", "no"}

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

# Tests about other things must not depend on the hour CI runs at or trip attempt caps;
# tests of the dialing rules set the rules they test (see test_dialing_rules.py).
OPEN_ALL_HOURS_WITHOUT_CAPS = """
UPDATE calling_hours SET opens_at = '00:00', closes_at = '24:00';
UPDATE dialing_rules SET max_attempts_total = 1000000, max_attempts_per_day = 1000000,
                         max_attempts_per_number_24h = 1000000;
"""


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


def only_error(body: dict[str, Any]) -> dict[str, Any]:
    """The single error of a response whose data holds nothing."""
    errors = body.get("errors")
    assert errors, body
    assert len(errors) == 1, body
    assert not any((body.get("data") or {}).values()), body
    error: dict[str, Any] = errors[0]
    return error


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
        headers = {"content-type": "application/json", **(bearer(token) if token else {})}
        # json.dumps escapes what is not ASCII, so a test may send any str, an unpaired
        # surrogate included (httpx's own encoder would refuse to encode one).
        body = json.dumps({"query": query, "variables": variables or {}})
        response = await self.client.post("/graphql", content=body, headers=headers)
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


@asynccontextmanager
async def client_from(base_url: str, address: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client whose connections come from another loopback address (127.0.0.2,
    127.0.0.3, ...): to the server, a real socket peer other than 127.0.0.1."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(base_url=base_url, transport=transport, timeout=30) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    """An Authorization header for a token."""
    return {"authorization": f"Bearer {token}"}


@asynccontextmanager
async def serve_app(app: Any, port: int = 0, **options: Any) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on a loopback port (free by default) in this event
    loop; yields its base URL."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        # Longer than httpx keeps an idle connection (5 s): with both at 5 s, a request sent
        # on a connection the server is just closing fails with ReadError on a busy machine.
        timeout_keep_alive=60,
        **options,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await wait_until(
        lambda: server.started or task.done(), 60, "the test server did not start", interval=0.01
    )
    if task.done():
        task.result()  # the reason it stopped
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def running_server(
    settings: Settings, on_connect: ConnectionHook | None = None, port: int = 0
) -> AsyncIterator[Api]:
    """Serve the app as `server.py serve` does, on a loopback port, in this event loop."""
    app = create_app(settings, settings.database_url or "", on_connect=on_connect)
    async with (
        serve_app(
            app,
            port,
            ws_ping_interval=settings.ws_ping_seconds,
            ws_ping_timeout=settings.ws_ping_seconds,
            ws_per_message_deflate=settings.ws_compression,
            ws=settings.ws_implementation,
            # X-Forwarded-For from the trusted proxies only.
            proxy_headers=True,
            forwarded_allow_ips=settings.forwarded_allow_ips,
        ) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30) as client,
    ):
        yield Api(base_url=base_url, client=client, app=app)


# ---------------------------------------------------------------------------------------
# Plans: what PostgreSQL runs, nested statements included.


@asynccontextmanager
async def traced_connection(
    database_url: str, arrange: str = ""
) -> AsyncIterator[tuple[asyncpg.Connection, list[str]]]:
    """A connection whose every statement, those run inside functions included, logs its
    plan to us through auto_explain (read them with read_plans), after running `arrange`
    untraced; skips where auto_explain is missing."""
    connection = await asyncpg.connect(database_url)
    plans: list[str] = []
    try:
        if arrange:
            await connection.execute(arrange)
        try:
            await connection.execute("LOAD 'auto_explain'")
        except asyncpg.PostgresError as error:
            pytest.skip(f"auto_explain cannot be loaded on this server: {error}")
        await connection.execute(
            """
            SET auto_explain.log_min_duration = 0;
            SET auto_explain.log_nested_statements = on;
            SET auto_explain.log_verbose = on;
            SET auto_explain.log_format = json;
            SET client_min_messages = log;
            """
        )
        connection.add_log_listener(lambda _c, message: plans.append(str(message.message)))
        yield connection, plans
    finally:
        await connection.close()


def read_plans(messages: list[str]) -> list[dict[str, Any]]:
    """The plan trees auto_explain logged (JSON after "plan:")."""
    return [json.loads(m.split("plan:", 1)[1])["Plan"] for m in messages if "plan:" in m]


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of a JSON plan."""
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


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


async def add_floor(pool: asyncpg.Pool, name: str, first_phone: int, count: int) -> list[str]:
    """A manager, floor@test.example with PASSWORD, and count prospects named "<name> <n>"
    on +1 212 555 <first_phone + n>, written straight to the database; their ids, for tests
    whose servers are separate processes."""
    await create_user(
        pool,
        email="floor@test.example",
        name="Floor",
        password=PASSWORD,
        role="manager",
        bcrypt_rounds=4,
    )
    return [
        await pool.fetchval(
            "INSERT INTO prospects (name, phone) VALUES ($1, $2) RETURNING id::text",
            f"{name} {n}",
            f"+1212555{first_phone + n:04d}",
        )
        for n in range(count)
    ]


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
    # Without XDG_RUNTIME_DIR, as under a service manager, in a container or in CI.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_URL", "DB_", "TEST_DATABASE_URL", "XDG_RUNTIME_DIR"))
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
    """A `serve` process; what it printed and its exit status, once it has stopped."""

    process: subprocess.Popen[str]
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
    served.process = process

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


# ---------------------------------------------------------------------------------------
# A real browser: Debian's Chromium driven by Playwright (no browser download).

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Headless as root, with nothing reaching out to the network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def missing_browser() -> str | None:
    """Why a browser test cannot run here, or None when it can."""
    if playwright_api is None:
        return "playwright is not installed (make install, or pip install -e '.[dev]')"
    if CHROMIUM is None:
        return "no Chromium (apt-get install chromium, or run .ci/run)"
    return None


@asynccontextmanager
async def browser_page() -> AsyncIterator[Any]:
    """A fresh page in headless Chromium."""
    assert playwright_api is not None
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield await browser.new_page()
        finally:
            await browser.close()


# ---------------------------------------------------------------------------------------
# PgBouncer, Debian's package, in front of the test server.

PGBOUNCER_POOL_SIZE = 3


def find_pgbouncer() -> str | None:
    """The pgbouncer binary (Debian installs it in /usr/sbin), or None."""
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")


class PgBouncer:
    """A PgBouncer in transaction mode on a loopback port, in front of one PostgreSQL
    server: every database of the server under its own name, PGBOUNCER_POOL_SIZE server
    connections per database, clients trusted as the server's user."""

    def __init__(self, binary: str, admin_url: str) -> None:
        parts = urlsplit(admin_url)
        socket_dir = parse_qs(parts.query).get("host", [None])[0]
        self.host = socket_dir or parts.hostname or "127.0.0.1"
        self.server_port = parts.port or 5432
        self.user = unquote(parts.username or "postgres")
        self.password = unquote(parts.password or "")
        self.port = free_port()
        self.binary = binary
        self.directory = Path(tempfile.mkdtemp(prefix="cf-bouncer-"))
        self.process: subprocess.Popen[str] | None = None

    def url(self, database_url: str) -> str:
        """database_url (a database of the same server) through PgBouncer."""
        name = urlsplit(database_url).path
        credentials = self.user + (":" + self.password if self.password else "")
        return urlunsplit(("postgresql", f"{credentials}@127.0.0.1:{self.port}", name, "", ""))

    def start(self) -> None:
        """Write the configuration and start PgBouncer; return once it accepts connections."""
        server = f"host={self.host} port={self.server_port} user={self.user}"
        if self.password:
            server += f" password={self.password}"
        (self.directory / "users.txt").write_text(f'"{self.user}" ""\n')
        (self.directory / "pgbouncer.ini").write_text(
            f"""[databases]
* = {server}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
pool_mode = transaction
default_pool_size = {PGBOUNCER_POOL_SIZE}
max_client_conn = 500
auth_type = trust
auth_file = {self.directory / "users.txt"}
logfile = {self.directory / "pgbouncer.log"}
pidfile = {self.directory / "pgbouncer.pid"}
"""
        )
        command = [self.binary, "-q"]
        if os.geteuid() == 0:
            # PgBouncer refuses to run as root. It runs as whoever owns the server's socket
            # directory (the embedded server's own user), so that it may open the socket.
            owner = os.stat(self.host).st_uid if self.host.startswith("/") else None
            user = pwd.getpwuid(owner).pw_name if owner else "nobody"
            shutil.chown(self.directory, user)
            for child in self.directory.iterdir():
                shutil.chown(child, user)
            command += ["-u", user]
        self.process = subprocess.Popen(
            [*command, str(self.directory / "pgbouncer.ini")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

        def accepting() -> bool:
            if self.process is not None and self.process.poll() is not None:
                log = self.directory / "pgbouncer.log"
                pytest.fail(
                    "pgbouncer exited: "
                    + self.process.communicate()[0]
                    + (log.read_text() if log.exists() else "")
                )
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", self.port)) == 0

        wait_until_blocking(accepting, 20, "pgbouncer did not start")

    def stop(self) -> None:
        """Stop PgBouncer and remove its files."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
            self.process.communicate(timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# Prometheus scrapes.


@dataclass
class Scrape:
    """One /metrics answer, parsed by prometheus_client's own parser."""

    samples: list[Any]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called name whose labels include these."""
        return sum(
            sample.value
            for sample in self.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    def series(self, name: str) -> list[Any]:
        """Every sample called name."""
        return [sample for sample in self.samples if sample.name == name]


def parse_scrape(text: str) -> Scrape:
    """A scrape's text format, parsed."""
    from prometheus_client.parser import text_string_to_metric_families

    return Scrape([s for f in text_string_to_metric_families(text) for s in f.samples])


# ---------------------------------------------------------------------------------------
# A TCP proxy between a server and PostgreSQL, to cut.


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


# ---------------------------------------------------------------------------------------
# The event reader of a hub, and a statement stuck on a lock.


@asynccontextmanager
async def listening(
    database_url: str, hub: Hub, poll: float = READER_POLL_SECONDS
) -> AsyncIterator[Listener]:
    """A hub with its process's listener and poll, as the server runs them."""
    listener = Listener(database_url, hub, poll_interval=poll)
    task = asyncio.create_task(listener.run())
    try:
        await asyncio.wait_for(listener.connected.wait(), 10)
        yield listener
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def wait_until_locked_out(pool: asyncpg.Pool, function: str) -> None:
    """Wait until a statement calling function (by name) waits on a lock."""

    async def waiting() -> bool:
        return bool(
            await pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%'",
                function,
            )
        )

    await wait_until(waiting, 20, f"no statement calling {function}() waited on a lock")
