"""Bring a database up to date: numbered migrations once each, then the code files.

sql/migrations/NNN_verb_object.sql hold tables, data and one-off changes: each applies
once, in order, and is recorded with its checksum; an edited one is refused.
sql/functions/<noun>.sql hold every function, view and trigger, each defined once: the
current truth. Whenever one of those files changes, or a migration ran, every function,
view and trigger the application owns is dropped and the files are applied again, in one
transaction (Flyway's "repeatable migrations"), so the database holds exactly what the
files say. A function that a table itself depends on (a column default, an index, a
constraint) is kept and replaced in place instead, so it must keep its signature.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from asyncpg.pool import PoolConnectionProxy

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
FUNCTIONS_DIR = Path(__file__).resolve().parent / "functions"
# Any constant will do: every server takes the same advisory lock before migrating.
MIGRATION_LOCK_KEY = 7_243_311_001

log = logging.getLogger("callfloor.migrator")

# Drops every trigger, view and function of the public schema that no extension owns,
# except the functions that something other than code depends on (a column default, an
# index): the function files create them all again.
DROP_APPLICATION_CODE = """
DO $$
DECLARE
    v_trigger record;
    v_views text;
    v_functions text;
BEGIN
    FOR v_trigger IN
        SELECT quote_ident(t.tgname) AS name, t.tgrelid::regclass::text AS on_table
        FROM pg_trigger t
        JOIN pg_class c ON c.oid = t.tgrelid
        WHERE NOT t.tgisinternal AND c.relnamespace = 'public'::regnamespace
    LOOP
        EXECUTE format('DROP TRIGGER %s ON %s', v_trigger.name, v_trigger.on_table);
    END LOOP;

    SELECT string_agg(c.oid::regclass::text, ', ') INTO v_views
    FROM pg_class c
    WHERE c.relkind = 'v' AND c.relnamespace = 'public'::regnamespace
      AND NOT EXISTS (SELECT 1 FROM pg_depend d
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                        AND d.deptype = 'e');
    IF v_views IS NOT NULL THEN
        EXECUTE 'DROP VIEW ' || v_views || ' CASCADE';
    END IF;

    SELECT string_agg(p.oid::regprocedure::text, ', ') INTO v_functions
    FROM pg_proc p
    WHERE p.pronamespace = 'public'::regnamespace AND p.prokind IN ('f', 'p')
      AND NOT EXISTS (SELECT 1 FROM pg_depend d
                      WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                        AND d.deptype = 'e')
      AND NOT EXISTS (SELECT 1 FROM pg_depend d
                      WHERE d.refclassid = 'pg_proc'::regclass AND d.refobjid = p.oid
                        AND d.classid <> 'pg_proc'::regclass);
    IF v_functions IS NOT NULL THEN
        EXECUTE 'DROP ROUTINE ' || v_functions;
    END IF;
END
$$
"""


class MigrationError(RuntimeError):
    """A landed migration was edited or removed, or the directory is malformed."""


@dataclass(frozen=True)
class SqlFile:
    """One file of sql/migrations or sql/functions."""

    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file's text: an edited file no longer matches."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def read_migrations(directory: Path = MIGRATIONS_DIR) -> list[SqlFile]:
    """The migrations in the order they apply (NNN_verb_object.sql)."""
    migrations = [SqlFile(path.stem, path.read_text()) for path in sorted(directory.glob("*.sql"))]
    numbers = [m.name.split("_", 1)[0] for m in migrations]
    if len(set(numbers)) != len(numbers) or not all(n.isdigit() for n in numbers):
        raise MigrationError(f"migration names must start with a unique number: {numbers}")
    return migrations


def read_function_files(directory: Path = FUNCTIONS_DIR) -> list[SqlFile]:
    """The function files, by name."""
    return [SqlFile(path.name, path.read_text()) for path in sorted(directory.glob("*.sql"))]


async def migrate(
    connection: asyncpg.Connection,
    directory: Path = MIGRATIONS_DIR,
    functions_directory: Path = FUNCTIONS_DIR,
) -> list[str]:
    """Apply what is missing, under an advisory lock; returns what was applied: the
    migrations by name, then the function files whose text changed (functions/<file>)."""
    migrations = read_migrations(directory)
    function_files = read_function_files(functions_directory)
    # A migration's warnings are meant for the operator (018's, when pg_trgm is missing).
    connection.add_log_listener(_log_warning)
    await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await connection.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                name        text PRIMARY KEY,
                checksum    text NOT NULL,
                applied_at  timestamptz NOT NULL DEFAULT now()
            );
            CREATE TABLE IF NOT EXISTS schema_functions (
                name        text PRIMARY KEY,
                checksum    text NOT NULL,
                applied_at  timestamptz NOT NULL DEFAULT now()
            );
            """
        )
        done = await _apply_migrations(connection, migrations, directory)
        changed = await _apply_function_files(connection, function_files, force=bool(done))
        return done + changed
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
        connection.remove_log_listener(_log_warning)


def _log_warning(
    connection: asyncpg.Connection | PoolConnectionProxy, message: asyncpg.PostgresLogMessage
) -> None:
    if message.severity_en == "WARNING":
        log.warning("%s", message.message)


async def _apply_migrations(
    connection: asyncpg.Connection, migrations: list[SqlFile], directory: Path
) -> list[str]:
    applied = {
        row["name"]: row["checksum"]
        for row in await connection.fetch("SELECT name, checksum FROM schema_migrations")
    }
    missing = sorted(set(applied) - {m.name for m in migrations})
    if missing:
        raise MigrationError(f"applied migrations are missing from {directory}: {missing}")
    done: list[str] = []
    for migration in migrations:
        if migration.name in applied:
            if applied[migration.name] != migration.checksum:
                raise MigrationError(
                    f"migration {migration.name} was edited after it was applied; "
                    "write a new migration instead"
                )
            continue
        async with connection.transaction():
            await connection.execute(migration.sql)
            await connection.execute(
                "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)",
                migration.name,
                migration.checksum,
            )
        log.info("applied migration %s", migration.name)
        done.append(migration.name)
    return done


async def _apply_function_files(
    connection: asyncpg.Connection, files: list[SqlFile], *, force: bool
) -> list[str]:
    """Re-create all application code from the files when any changed (or force)."""
    recorded = {
        row["name"]: row["checksum"]
        for row in await connection.fetch("SELECT name, checksum FROM schema_functions")
    }
    current = {file.name: file.checksum for file in files}
    if recorded == current and not force:
        return []
    async with connection.transaction():
        await connection.execute(DROP_APPLICATION_CODE)
        # Function bodies are checked when they run: a file may call one defined later.
        await connection.execute("SET LOCAL check_function_bodies = off")
        await _apply_in_dependency_order(connection, files)
        await connection.execute("DELETE FROM schema_functions")
        await connection.executemany(
            "INSERT INTO schema_functions (name, checksum) VALUES ($1, $2)",
            list(current.items()),
        )
    changed = [f"functions/{name}" for name in current if recorded.get(name) != current[name]]
    log.info("applied function files%s", f" ({', '.join(changed)})" if changed else "")
    return changed


# What a view over a function or view of a later file fails with.
_NOT_YET_DEFINED = (
    asyncpg.UndefinedFunctionError,
    asyncpg.UndefinedTableError,
    asyncpg.UndefinedObjectError,
)


async def _apply_in_dependency_order(connection: asyncpg.Connection, files: list[SqlFile]) -> None:
    """Apply each file in its own savepoint, by name; a file whose view needs something a
    later file defines is tried again after the others, until a round makes no progress."""
    pending = files
    while pending:
        waiting: list[tuple[SqlFile, asyncpg.PostgresError]] = []
        for file in pending:
            try:
                async with connection.transaction():
                    await connection.execute(file.sql)
            except _NOT_YET_DEFINED as error:
                waiting.append((file, error))
        if len(waiting) == len(pending):
            stuck, reason = waiting[0]
            raise MigrationError(f"functions/{stuck.name}: {reason}") from reason
        pending = [file for file, _ in waiting]
