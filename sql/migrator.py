"""Apply numbered migrations once each, recording name and checksum."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import asyncpg

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Any constant will do: every server takes the same advisory lock before migrating.
MIGRATION_LOCK_KEY = 7_243_311_001

log = logging.getLogger("callfloor.migrator")


class MigrationError(RuntimeError):
    """A landed migration was edited or removed, or the directory is malformed."""


@dataclass(frozen=True)
class Migration:
    """One file of sql/migrations."""

    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file's text: an edited migration no longer matches."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def read_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migrations in the order they apply (NNN_verb_object.sql)."""
    migrations = [
        Migration(path.stem, path.read_text()) for path in sorted(directory.glob("*.sql"))
    ]
    numbers = [m.name.split("_", 1)[0] for m in migrations]
    if len(set(numbers)) != len(numbers) or not all(n.isdigit() for n in numbers):
        raise MigrationError(f"migration names must start with a unique number: {numbers}")
    return migrations


async def migrate(connection: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply what is missing, under an advisory lock; returns the names applied."""
    migrations = read_migrations(directory)
    await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await connection.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                name        text PRIMARY KEY,
                checksum    text NOT NULL,
                applied_at  timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        applied = {
            row["name"]: row["checksum"]
            for row in await connection.fetch("SELECT name, checksum FROM schema_migrations")
        }
        known = {m.name for m in migrations}
        missing = sorted(set(applied) - known)
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
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
