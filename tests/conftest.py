"""One PostgreSQL per session, a migrated template, a fresh database clone per test."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn

from resolvers.users import create_user
from server import ConnectionHook, create_app
from settings import Settings
from sql import database
from sql.migrator import migrate

PASSWORD = "correct horse battery"
# Tests about other things must not depend on the hour CI runs at or trip attempt caps;
# tests of the dialing rules set the rules they test (see test_dialing_rules.py).
OPEN_ALL_HOURS_WITHOUT_CAPS = """
UPDATE calling_hours SET opens_at = '00:00', closes_at = '24:00';
UPDATE dialing_rules SET max_attempts_total = 1000000, max_attempts_per_day = 1000000,
                         max_attempts_per_number_24h = 1000000;
"""


@pytest.fixture(scope="session")
def admin_url() -> Iterator[str]:
    """A server where tests may create databases: TEST_DATABASE_URL, or an embedded one."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield external
        return
    # Short path: the server's Unix socket lives in it (sun_path is ~100 bytes).
    directory = Path(tempfile.mkdtemp(prefix="cf-test-"))
    server = database.start_embedded_server(directory)
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def template_name(admin_url: str) -> Iterator[str]:
    """A migrated database that every test clones."""
    name = f"callfloor_template_{os.getpid()}"

    async def build() -> None:
        await drop_database(admin_url, name)
        await database.ensure_database(admin_url, name)
        connection = await asyncpg.connect(database.with_database(admin_url, name))
        try:
            await migrate(connection)
            await connection.execute(OPEN_ALL_HOURS_WITHOUT_CAPS)
        finally:
            await connection.close()

    asyncio.run(build())
    yield name
    asyncio.run(drop_database(admin_url, name))


async def drop_database(admin_url: str, name: str) -> None:
    """Drop a database even if something still holds a connection to it."""
    connection = await asyncpg.connect(admin_url)
    try:
        quoted = await connection.fetchval("SELECT quote_ident($1)", name)
        await connection.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
    finally:
        await connection.close()


@pytest.fixture
async def database_url(admin_url: str, template_name: str) -> AsyncIterator[str]:
    """A fresh clone of the migrated template, dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    await database.ensure_database(admin_url, name, template=template_name)
    yield database.with_database(admin_url, name)
    await drop_database(admin_url, name)


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Settings for a test server: cheap bcrypt, small pool, the seed's 5-minute gap, and
    "nothing callable" counts read afresh (tests check them right after arranging data;
    test_dialing_rules.py tests their sharing)."""
    return Settings(
        database_url=database_url,
        host="127.0.0.1",
        port=0,
        bcrypt_rounds=4,
        pool_min_size=1,
        pool_max_size=10,
        graphiql=True,
        held_back_cache_seconds=0,
    )


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A direct pool for arranging data and checking what landed in the database."""
    test_pool = await database.create_pool(
        database_url,
        session=database.SessionSettings(min_call_interval_seconds=300),
        min_size=1,
        max_size=5,
    )
    yield test_pool
    await test_pool.close()


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
        headers = {"authorization": f"Bearer {token}"} if token else {}
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
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    base_url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            yield Api(base_url=base_url, client=client, app=app)
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    """A real server on the test database, and a client for it."""
    async with running_server(settings) as client:
        yield client


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


@pytest.fixture
async def team(pool: asyncpg.Pool, api: Api) -> Team:
    """An admin, a manager and two agents, signed in."""
    return Team(
        admin=await add_user(pool, api, "admin@test.example", "admin"),
        manager=await add_user(pool, api, "manager@test.example", "manager"),
        agents=[await add_user(pool, api, f"agent{i}@test.example", "agent") for i in (1, 2)],
    )


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


def with_interval(settings: Settings, seconds: int) -> Settings:
    """The same settings with another minimum gap between calls."""
    return replace(settings, min_call_interval_seconds=seconds)
