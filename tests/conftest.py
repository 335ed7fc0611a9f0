"""Fixtures: one PostgreSQL per session, a migrated template, a fresh database clone per
test, and a server on it. Helpers that tests import live in helpers.py."""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from helpers import (
    IN_CI,
    OPEN_ALL_HOURS_WITHOUT_CAPS,
    Api,
    PgBouncer,
    Team,
    add_user,
    browser_page,
    drop_database,
    find_pgbouncer,
    missing_browser,
    running_server,
)

from settings import Settings
from sql import database
from sql.migrator import migrate


@pytest.fixture(scope="session")
def admin_url() -> Iterator[str]:
    """A server where tests may create databases: TEST_DATABASE_URL, or an embedded one."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield external
        return
    # Short path: the server's Unix socket lives in it (sun_path is ~100 bytes).
    directory = Path(tempfile.mkdtemp(prefix="cf-test-"))
    # The server's own exit handler takes its start lock (in directory/run) once more, after
    # the removal below: registered first, this removal runs after it (handlers run last in,
    # first out), so the directory goes for good.
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
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


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    """A real server on the test database, and a client for it."""
    async with running_server(settings) as client:
        yield client


@pytest.fixture
async def team(pool: asyncpg.Pool, api: Api) -> Team:
    """An admin, a manager and two agents, signed in."""
    return Team(
        admin=await add_user(pool, api, "admin@test.example", "admin"),
        manager=await add_user(pool, api, "manager@test.example", "manager"),
        agents=[await add_user(pool, api, f"agent{i}@test.example", "agent") for i in (1, 2)],
    )


@pytest.fixture
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DATA_DIR for a server.py process. Short: an embedded server's socket lives under it."""
    return Path(tmp_path_factory.mktemp("data"))


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    """A fresh page in headless Chromium. Without one the test skips, saying why, except
    in CI, where it fails: a green CI run opened the page."""
    missing = missing_browser()
    if missing is not None:
        if IN_CI:
            pytest.fail(f"browser test: {missing}; CI must run it", pytrace=False)
        pytest.skip(f"browser test: {missing}")
    async with browser_page() as opened:
        yield opened


@pytest.fixture(scope="session")
def pgbouncer(admin_url: str) -> Iterator[PgBouncer]:
    """Debian's PgBouncer in transaction mode in front of the test server, started once.

    Skipped where it is not installed, except in CI (.ci/run installs it), where a test
    that cannot run fails rather than passing unseen."""
    binary = find_pgbouncer()
    if binary is None:
        message = "pgbouncer is not installed (apt-get install pgbouncer; .ci/run does)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    bouncer = PgBouncer(binary, admin_url)
    bouncer.start()
    try:
        yield bouncer
    finally:
        bouncer.stop()
