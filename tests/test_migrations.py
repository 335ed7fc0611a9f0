"""The migrator: applied once, checksummed, safe when two servers start at once."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from helpers import drop_database

from sql import database
from sql.migrator import MIGRATIONS_DIR, MigrationError, migrate


@pytest.fixture
async def empty_url(admin_url: str) -> AsyncIterator[str]:
    name = f"empty_{id(object())}"
    await drop_database(admin_url, name)
    await database.ensure_database(admin_url, name)
    yield database.with_database(admin_url, name)
    await drop_database(admin_url, name)


async def test_two_servers_migrating_at_once_apply_each_migration_once(empty_url: str) -> None:
    connections = [await asyncpg.connect(empty_url) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in connections))
    finally:
        for connection in connections:
            await connection.close()
    applied = [name for result in results for name in result]
    expected = sorted(path.stem for path in MIGRATIONS_DIR.glob("*.sql"))
    assert sorted(applied) == expected
    connection = await asyncpg.connect(empty_url)
    try:
        rows = await connection.fetch("SELECT name, checksum FROM schema_migrations ORDER BY name")
        assert [r["name"] for r in rows] == expected
        assert all(len(r["checksum"]) == 64 for r in rows)
        assert await migrate(connection) == []
    finally:
        await connection.close()


async def test_an_edited_migration_is_refused(empty_url: str, tmp_path: Path) -> None:
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, copy)
    connection = await asyncpg.connect(empty_url)
    try:
        await migrate(connection, copy)
        first = sorted(copy.glob("*.sql"))[0]
        first.write_text(first.read_text() + "\n-- edited\n")
        with pytest.raises(MigrationError, match="edited"):
            await migrate(connection, copy)
    finally:
        await connection.close()


async def test_a_failing_migration_leaves_nothing_behind(empty_url: str, tmp_path: Path) -> None:
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, copy)
    (copy / "999_break_things.sql").write_text(
        "-- Fail halfway.\nCREATE TABLE half_done (id int);\nSELECT 1/0;\n"
    )
    connection = await asyncpg.connect(empty_url)
    try:
        with pytest.raises(asyncpg.DivisionByZeroError):
            await migrate(connection, copy)
        assert await connection.fetchval("SELECT to_regclass('half_done')") is None
        names = await connection.fetch("SELECT name FROM schema_migrations")
        assert "999_break_things" not in {r["name"] for r in names}
    finally:
        await connection.close()
