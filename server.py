"""The app factory and its lifespan (pool, listener, sweep); `python server.py` runs the
command line (command_line.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import asyncpg
from cross_web import AsyncHTTPRequestAdapter, HTTPException
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.http.websocket_origin import normalize_allowed_origins
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionResult

import metrics
import rest
from graph.context import Context, Loaders
from graph.extensions import present_error
from graph.reads import CompiledReads, Rules
from graph.responses import GRAPHQL_RESPONSE_JSON, is_request_error, prefers_graphql_response
from graph.schema import create_schema
from graph.subscriptions import SubscriptionHandler, WebSocketSendMiddleware
from request_size import RequestSizeLimit
from resolvers import calls, reports
from resolvers.auth import authenticate, bearer_token, hash_token
from resolvers.dialing import HeldBackCache
from resolvers.events import Hub, Listener, prune_call_events
from settings import Settings
from sql import database

log = logging.getLogger("callfloor")
WALLBOARD_PAGE = Path(__file__).resolve().parent / "graph" / "wallboard.html"


class GraphQLApp(GraphQL[Context, None]):
    """Strawberry's ASGI view with our context: pool, settings, actor, loaders and hub."""

    # Subscriptions' events go straight to the sockets (graph/subscriptions.py).
    graphql_transport_ws_handler_class = SubscriptionHandler

    async def get_context(self, request: Request | WebSocket, response: Any = None) -> Context:
        pool: asyncpg.Pool = request.app.state.pool
        return Context(
            pool=pool,
            settings=request.app.state.settings,
            token=bearer_token(request.headers.get("authorization")),
            loaders=Loaders.create(pool),
            hub=request.app.state.hub,
            held_back=request.app.state.held_back,
            request=request,
            response=response,
        )

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        """Errors raised before the operation ran (a cached parse) get their code here."""
        if result.errors:
            result.errors = [present_error(error) for error in result.errors]
        metrics.record_result(request, result.errors)
        return await super().process_result(request, result)

    async def get_sub_response(self, request: Request | WebSocket) -> Response:
        """Remember which media type the client asked for (graph/responses.py)."""
        sub_response = await super().get_sub_response(request)
        if prefers_graphql_response(request.headers.get("accept")):
            sub_response.media_type = GRAPHQL_RESPONSE_JSON
        return sub_response

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        """application/graphql-response+json when the client asked for it, a request that
        never ran then being a 400 without data; else application/json and 200, as ever."""
        graphql_response = sub_response.media_type == GRAPHQL_RESPONSE_JSON
        if graphql_response and isinstance(response_data, dict) and is_request_error(response_data):
            response_data = cast(
                GraphQLHTTPResponse,
                {key: value for key, value in response_data.items() if key != "data"},
            )
            sub_response.status_code = 400
        response = super().create_response(response_data, sub_response)
        if graphql_response:
            response.headers["content-type"] = f"{GRAPHQL_RESPONSE_JSON}; charset=utf-8"
        response.headers["vary"] = "Accept"
        return response

    async def parse_http_body(
        self, request: AsyncHTTPRequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        """As Strawberry, which checks `query` and `variables`: an `operationName` that is
        not a string makes the request malformed too, a 400 whatever the client accepts."""
        data = await super().parse_http_body(request)
        for item in data if isinstance(data, list) else [data]:
            if not isinstance(item.operation_name, str | None):
                raise HTTPException(
                    400,
                    "The GraphQL operation's `operationName` must be a string or null, "
                    "if provided.",
                )
        return data

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


async def sweep(pool: asyncpg.Pool, every_seconds: float) -> None:
    """Forever: expire calls whose lease lapsed, fold the report journal into its rollups
    so it stays short, and delete old call events. Safe on every replica at once (SKIP
    LOCKED, a fold another replica is running is skipped, pruning races harmlessly)."""
    while True:
        await asyncio.sleep(every_seconds)
        try:
            expired = await calls.expire_lapsed_calls(pool)
            await reports.fold_call_stats(pool, wait=False)
            await prune_call_events(pool)
        except Exception as error:
            log.warning("sweep failed: %r", error)
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
            session=settings.session,
            pooler=settings.pooler,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            on_connect=on_connect,
        )
        hub = Hub(pool, queue_size=settings.subscriber_queue_size, observer=metrics.HubMetrics())
        listener = Listener(
            settings.listen_url(database_url), hub, health_interval=settings.listener_health_seconds
        )
        app.state.pool, app.state.hub, app.state.listener = pool, hub, listener
        app.state.held_back = HeldBackCache(settings.held_back_cache_seconds)
        app.state.metrics_sampled = {}
        tasks = [
            asyncio.create_task(listener.run(), name="call-event-listener"),
            asyncio.create_task(sweep(pool, settings.stale_call_sweep_seconds), name="sweep"),
        ]
        if settings.metrics_token:
            metrics.forget_dead_workers()
            tasks.append(asyncio.create_task(metrics.sample_forever(pool, listener)))
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(listener.connected.wait(), 10)
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await pool.close()
            metrics.forget_this_worker()

    schema = create_schema(
        max_depth=settings.max_query_depth,
        max_aliases=settings.max_aliases,
        max_bytes=settings.max_query_bytes,
        max_fields=settings.max_query_fields,
    )
    graphql = GraphQLApp(
        schema,
        graphql_ide="graphiql" if settings.graphiql else None,
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
        max_subscriptions_per_connection=settings.max_subscriptions_per_connection,
        allowed_origins=settings.allowed_origins,
        connection_init_wait_timeout=timedelta(seconds=10),
    )

    # Reads the compiler knows skip the view: one statement each (graph/reads.py).
    endpoint: Any = graphql
    if settings.compiled_reads:
        rules = Rules(limits=schema.document_limits, validation_rules=schema.validation_rules)
        endpoint = CompiledReads(graphql, schema._schema, rules)

    async def home(request: Request) -> Response:
        return RedirectResponse("/graphql")

    async def wallboard(request: Request) -> Response:
        return FileResponse(WALLBOARD_PAGE, media_type="text/html")

    app = Starlette(
        routes=[
            Route("/", home),
            *rest.routes,
            Route("/graphql", endpoint, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            Route("/wallboard", wallboard),
            *metrics.routes,
        ],
        middleware=[
            # Outermost, so it sees the server's own send (the fast path for events).
            Middleware(WebSocketSendMiddleware),
            Middleware(metrics.MetricsMiddleware),
            # Pages on ALLOWED_ORIGINS (the origins that may open WebSockets) may call the
            # API from the browser too. Bearer tokens travel in a header, never a cookie:
            # no credentials mode, so no page can ride on what a browser holds.
            Middleware(
                CORSMiddleware,
                allow_origins=sorted(normalize_allowed_origins(settings.allowed_origins)),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type"],
                expose_headers=["Retry-After"],
            ),
            # Inside CORS, so a browser can read the 413 of a body too large.
            Middleware(RequestSizeLimit, max_bytes=settings.max_request_bytes),
        ],
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.compiled_reads = endpoint if isinstance(endpoint, CompiledReads) else None
    return app


def app_from_environment() -> Starlette:
    """The app for a uvicorn worker process: configured from the environment alone."""
    settings = Settings.from_environment()
    assert settings.database_url, "workers are started with DATABASE_URL set"
    return create_app(settings, settings.database_url)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python server.py`: the command line (command_line.py)."""
    # Imported here, not at the top: command_line imports create_app from this module.
    import command_line

    return command_line.main(argv)


if __name__ == "__main__":
    sys.exit(main())
