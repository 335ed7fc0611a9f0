"""The migrator: migrations once each, code from sql/functions, safe when servers race."""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from helpers import drop_database

from sql import database
from sql.migrator import (
    FUNCTIONS_DIR,
    MIGRATIONS_DIR,
    MigrationError,
    migrate,
    read_function_files,
    read_migrations,
)

QUERIES_DIR = MIGRATIONS_DIR.parent / "queries"
_DEFINITION = re.compile(
    r"\bCREATE\s+(?:OR\s+REPLACE\s+)?(FUNCTION|VIEW|TRIGGER)\s+([a-z_0-9.]+)", re.IGNORECASE
)

# Everything that makes up the schema, one line per object, in a stable order.
CATALOG = """
SELECT 'function ' || pg_get_functiondef(p.oid)
FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace
UNION ALL
SELECT 'view ' || c.relname || ' ' || pg_get_viewdef(c.oid)
FROM pg_class c WHERE c.relkind = 'v' AND c.relnamespace = 'public'::regnamespace
UNION ALL
SELECT 'trigger ' || pg_get_triggerdef(t.oid) FROM pg_trigger t WHERE NOT t.tgisinternal
UNION ALL
SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
FROM pg_constraint WHERE connamespace = 'public'::regnamespace
UNION ALL
SELECT 'index ' || pg_get_indexdef(i.indexrelid)
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE c.relnamespace = 'public'::regnamespace
UNION ALL
SELECT 'column ' || a.attrelid::regclass || '.' || a.attname || ' '
       || format_type(a.atttypid, a.atttypmod) || ' not null ' || a.attnotnull
       || ' generated ' || a.attgenerated::text || ' default '
       || coalesce(pg_get_expr(d.adbin, d.adrelid), '-')
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid AND c.relnamespace = 'public'::regnamespace
                AND c.relkind IN ('r', 'v')
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attnum > 0 AND NOT a.attisdropped
ORDER BY 1
"""


async def catalog(url: str) -> list[str]:
    """The schema of the database at url, as comparable lines."""
    connection = await asyncpg.connect(url)
    try:
        return [row[0] for row in await connection.fetch(CATALOG)]
    finally:
        await connection.close()


def definitions() -> Counter[tuple[str, str]]:
    """(kind, name) of every function, view and trigger defined in sql/functions."""
    found: Counter[tuple[str, str]] = Counter()
    for path in FUNCTIONS_DIR.glob("*.sql"):
        for kind, name in _DEFINITION.findall(path.read_text()):
            found[(kind.lower(), name.lower())] += 1
    return found


class Databases:
    """Makes empty databases on the test server and drops them."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.names: dict[str, str] = {}

    async def new(self) -> str:
        """An empty database's URL."""
        name = f"empty_{len(self.names)}_{id(self)}"
        await drop_database(self.admin_url, name)
        await database.ensure_database(self.admin_url, name)
        url = database.with_database(self.admin_url, name)
        self.names[url] = name
        return url

    async def drop(self, url: str) -> None:
        """Drop one made by new()."""
        await drop_database(self.admin_url, self.names.pop(url))


@pytest.fixture
async def databases(admin_url: str) -> AsyncIterator[Databases]:
    made = Databases(admin_url)
    yield made
    for url in list(made.names):
        await made.drop(url)


@pytest.fixture
async def empty_url(databases: Databases) -> str:
    return await databases.new()


async def migrated(url: str, *args: Path) -> list[str]:
    """Run the migrator on a connection of its own."""
    connection = await asyncpg.connect(url)
    try:
        return await migrate(connection, *args)
    finally:
        await connection.close()


async def test_two_servers_migrating_at_once_apply_everything_once(empty_url: str) -> None:
    connections = [await asyncpg.connect(empty_url) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in connections))
    finally:
        for connection in connections:
            await connection.close()
    applied = sorted(name for result in results for name in result)
    migrations = [m.name for m in read_migrations()]
    files = [f"functions/{f.name}" for f in read_function_files()]
    assert applied == sorted(migrations + files)
    connection = await asyncpg.connect(empty_url)
    try:
        rows = await connection.fetch("SELECT name, checksum FROM schema_migrations ORDER BY name")
        assert [r["name"] for r in rows] == migrations
        assert all(len(r["checksum"]) == 64 for r in rows)
        recorded = await connection.fetch("SELECT name FROM schema_functions ORDER BY name")
        assert [f"functions/{r['name']}" for r in recorded] == files
        assert await migrate(connection) == []
    finally:
        await connection.close()


async def test_an_edited_migration_is_refused(empty_url: str, tmp_path: Path) -> None:
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, copy)
    await migrated(empty_url, copy)
    first = sorted(copy.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(MigrationError, match="edited"):
        await migrated(empty_url, copy)


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


def test_every_function_view_and_trigger_is_defined_once() -> None:
    found = definitions()
    assert found, "no definitions found in sql/functions"
    assert {key: count for key, count in found.items() if count != 1} == {}
    for path in QUERIES_DIR.glob("*.sql"):
        assert not _DEFINITION.search(path.read_text()), f"{path.name} defines code"


async def test_the_database_holds_exactly_what_the_files_define(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        # Extensions' functions (pg_trgm's) are theirs, not the application's: the migrator
        # leaves them alone too.
        functions = await connection.fetch(
            "SELECT proname FROM pg_proc p WHERE pronamespace = 'public'::regnamespace"
            " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass"
            " AND d.objid = p.oid AND d.deptype = 'e')"
        )
        views = await connection.fetch(
            "SELECT relname FROM pg_class"
            " WHERE relkind = 'v' AND relnamespace = 'public'::regnamespace"
        )
        triggers = await connection.fetch("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
    finally:
        await connection.close()
    in_database = (
        {("function", r[0]) for r in functions}
        | {("view", r[0]) for r in views}
        | {("trigger", r[0]) for r in triggers}
    )
    assert in_database == set(definitions())


async def apply_old_migrations(url: str, count: int) -> None:
    """The database as a release whose newest migration was the count-th left it: its
    migrator applied numbered migrations only (function files came later)."""
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(
            "CREATE TABLE schema_migrations (name text PRIMARY KEY, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for migration in read_migrations()[:count]:
            async with connection.transaction():
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)",
                    migration.name,
                    migration.checksum,
                )
    finally:
        await connection.close()


async def test_upgrading_from_every_earlier_release_ends_as_a_fresh_build(
    databases: Databases,
) -> None:
    fresh = await databases.new()
    await migrated(fresh)
    expected = await catalog(fresh)

    async def upgraded_from(count: int) -> list[str]:
        url = await databases.new()
        await apply_old_migrations(url, count)
        await migrated(url)
        schema = await catalog(url)
        await databases.drop(url)
        return schema

    for count in range(1, len(read_migrations()) + 1):
        assert await upgraded_from(count) == expected, f"upgraded from migration {count}"


async def test_stale_code_is_replaced_by_what_the_files_say(
    databases: Databases,
) -> None:
    fresh = await databases.new()
    await migrated(fresh)
    expected = await catalog(fresh)
    stale = await databases.new()
    await migrated(stale)
    connection = await asyncpg.connect(stale)
    try:
        # What an older version of the files could have left: a function since removed,
        # an overload with another signature, another body, a dropped trigger, a view
        # with other columns, and a pinned function (a column default uses it) changed.
        await connection.execute(
            """
            CREATE FUNCTION removed_long_ago() RETURNS int LANGUAGE sql AS 'SELECT 1';
            CREATE FUNCTION in_queue(p_prospect prospects, p_extra int) RETURNS boolean
                LANGUAGE sql AS 'SELECT true';
            CREATE OR REPLACE FUNCTION called_recently(p_last_call timestamptz, p_at timestamptz)
                RETURNS boolean LANGUAGE sql STABLE AS 'SELECT false';
            DROP TRIGGER prospects_log_status_change ON prospects;
            DROP VIEW queue_pool;
            CREATE VIEW queue_pool AS SELECT id FROM prospects;
            CREATE OR REPLACE FUNCTION active_call_timeout() RETURNS interval
                LANGUAGE sql STABLE AS 'SELECT interval ''1 minute''';
            UPDATE schema_functions SET checksum = 'older' WHERE name = 'queue.sql';
            """
        )
    finally:
        await connection.close()
    assert await migrated(stale) == ["functions/queue.sql"]
    assert await catalog(stale) == expected


async def test_an_edited_function_file_is_applied_again(empty_url: str, tmp_path: Path) -> None:
    copy = tmp_path / "functions"
    shutil.copytree(FUNCTIONS_DIR, copy)
    await migrated(empty_url, MIGRATIONS_DIR, copy)
    assert await migrated(empty_url, MIGRATIONS_DIR, copy) == []
    errors = copy / "errors.sql"
    errors.write_text(
        errors.read_text()
        + "\nCREATE OR REPLACE FUNCTION answer() RETURNS int LANGUAGE sql AS 'SELECT 42';\n"
    )
    assert await migrated(empty_url, MIGRATIONS_DIR, copy) == ["functions/errors.sql"]
    connection = await asyncpg.connect(empty_url)
    try:
        assert await connection.fetchval("SELECT answer()") == 42
    finally:
        await connection.close()
    errors.write_text(errors.read_text().replace("SELECT 42", "SELECT 43").replace("answer", "x"))
    await migrated(empty_url, MIGRATIONS_DIR, copy)
    connection = await asyncpg.connect(empty_url)
    try:
        assert await connection.fetchval("SELECT to_regproc('answer')") is None
        assert await connection.fetchval("SELECT x()") == 43
    finally:
        await connection.close()


async def test_a_failing_function_file_leaves_the_old_code_in_place(
    empty_url: str, tmp_path: Path
) -> None:
    copy = tmp_path / "functions"
    shutil.copytree(FUNCTIONS_DIR, copy)
    await migrated(empty_url, MIGRATIONS_DIR, copy)
    before = await catalog(empty_url)
    (copy / "zzz_broken.sql").write_text(
        "-- Broken.\nCREATE VIEW broken AS SELECT no_such_function();\n"
    )
    with pytest.raises(MigrationError, match=r"zzz_broken\.sql"):
        await migrated(empty_url, MIGRATIONS_DIR, copy)
    assert await catalog(empty_url) == before


async def test_without_pg_trgm_the_search_index_is_left_out_with_a_warning(
    empty_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A role that may create tables but not extensions stands for a server without pg_trgm:
    # migration 018 warns, skips the index, and the rest of the schema is built.
    admin = await asyncpg.connect(empty_url)
    try:
        await admin.execute(
            "DROP ROLE IF EXISTS no_extensions; CREATE ROLE no_extensions LOGIN;"
            " GRANT CREATE ON SCHEMA public TO no_extensions"
        )
        parts = urlsplit(empty_url)
        url = urlunsplit(parts._replace(netloc=f"no_extensions@{parts.hostname or ''}"))
        with caplog.at_level(logging.WARNING, logger="callfloor.migrator"):
            applied = await migrated(url)
        assert "018_index_prospect_search" in applied
        assert any("pg_trgm is not available" in r.getMessage() for r in caplog.records)
        assert await admin.fetchval("SELECT to_regclass('prospects_search_idx')") is None
        assert await admin.fetchval("SELECT to_regclass('prospects_status_created_at_id_idx')")
        await admin.execute(
            "INSERT INTO prospects (name, phone) VALUES ('Zebulon Quixote', '+12125550123')"
        )
        found = await admin.fetch(
            "SELECT name FROM prospects_page(NULL, 'zebulon', NULL, NULL, NULL, NULL, 21, 1)"
        )
        assert [r["name"] for r in found] == ["Zebulon Quixote"]
    finally:
        await admin.execute("DROP OWNED BY no_extensions CASCADE; DROP ROLE no_extensions")
        await admin.close()
