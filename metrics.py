"""Prometheus metrics: what an operator watches, scraped from /metrics in the text format.

Recorded by a few hooks: an ASGI middleware (request latency, open WebSockets), a schema
extension (operation names), the view (outcome and error codes), the live-events
subscription (event delay, resyncs, open subscriptions), nextLead and login; and a
sampler that reads each process's pool and listener every second. /metrics is off
unless METRICS_TOKEN is set, and then answers only `Authorization: Bearer <METRICS_TOKEN>`
(docs/deploy.md says why).

With WEB_CONCURRENCY > 1 every worker writes its figures to files in
PROMETHEUS_MULTIPROC_DIR (the library's multiprocess mode, chosen when it is imported:
`serve` sets the directory up before starting the workers), and whichever worker answers
a scrape reads them all. Gauges say how the workers' values combine: summed, one series
per worker (a `pid` label), or the most recent.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    multiprocess,
)
from prometheus_client.exposition import choose_encoder
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.extensions import SchemaExtension

from resolvers.events import HubObserver

log = logging.getLogger("callfloor.metrics")

MULTIPROCESS_DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"
SAMPLE_SECONDS = 1.0
ACTIVE_CALLS_TIMEOUT_SECONDS = 2.0
# Operation names come from clients: past this many distinct ones a process counts the
# rest as "other", so a client cannot grow the metrics without bound.
MAX_OPERATION_NAMES = 100
OPERATION_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]{0,63}")
GRAPHQL_PATH = "/graphql"

# In multiprocess mode the library opens its files as each metric is made, below.
if os.environ.get(MULTIPROCESS_DIRECTORY):
    Path(os.environ[MULTIPROCESS_DIRECTORY]).mkdir(parents=True, exist_ok=True)

REQUESTS = Counter(
    "callfloor_graphql_requests",
    "GraphQL requests over HTTP, by operation name and outcome: OK, or the code of the "
    "first error (HTTP_<status> for a request refused before GraphQL ran).",
    ["operation", "outcome"],
)
REQUEST_SECONDS = Histogram(
    "callfloor_graphql_request_duration_seconds",
    "Time from a GraphQL request's arrival to the end of its response.",
    ["operation", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ERRORS = Counter(
    "callfloor_graphql_errors",
    "GraphQL errors in HTTP responses, by extensions.code.",
    ["code"],
)
ACTIVE_CALLS = Gauge(
    "callfloor_active_calls",
    "Calls in progress (the active_calls table), read at each scrape.",
    multiprocess_mode="mostrecent",
)
SUBSCRIPTIONS = Gauge(
    "callfloor_subscriptions", "Open activeCallEvents subscriptions.", multiprocess_mode="livesum"
)
WEBSOCKETS = Gauge("callfloor_websockets", "Open WebSockets.", multiprocess_mode="livesum")
EVENT_DELAY = Histogram(
    "callfloor_event_delay_seconds",
    "From a call event's commit (its 'at', clock_timestamp() in publish_call_event) to its "
    "write to the sockets of every subscriber of one document (the last of them); one "
    "observation per event and distinct subscription document in each process.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RESYNCS = Counter(
    "callfloor_event_resyncs",
    "Fresh snapshots sent in place of events a subscriber may have missed (the database "
    "restarted or failed over, events were pruned before this process read them, or the "
    "subscriber fell SUBSCRIBER_QUEUE_SIZE events behind).",
)
LISTENER_CONNECTED = Gauge(
    "callfloor_listener_connected",
    "1 while the process's LISTEN connection is up, else 0; one series per worker.",
    multiprocess_mode="liveall",
)
LISTENER_RECONNECTS = Counter(
    "callfloor_listener_reconnects", "Times a LISTEN connection was lost and made again."
)
POOL_CONNECTIONS = Gauge(
    "callfloor_database_pool_connections",
    "Open connections of the database pools, by state (idle or busy).",
    ["state"],
    multiprocess_mode="livesum",
)
POOL_MAX_CONNECTIONS = Gauge(
    "callfloor_database_pool_max_connections",
    "The most connections the database pools may open (DB_POOL_MAX_SIZE per worker).",
    multiprocess_mode="livesum",
)
POOL_WAITERS = Gauge(
    "callfloor_database_pool_waiters",
    "Requests waiting for a free pool connection.",
    multiprocess_mode="livesum",
)
NEXT_LEAD = Counter(
    "callfloor_next_lead",
    "nextLead answers by outcome: started, nothing_callable, or the error's code.",
    ["outcome"],
)
LOGIN_FAILURES = Counter(
    "callfloor_login_failures",
    "Failed sign-ins (GraphQL and REST) by code: UNAUTHENTICATED (wrong email or password), "
    "TOO_MANY_REQUESTS (throttled), BAD_USER_INPUT.",
    ["code"],
)

# The *_created series say when each series was first seen in this process: noise next to
# counters that restart with the process anyway (and absent in multiprocess mode).
disable_created_metrics()  # type: ignore[no-untyped-call]

_operation_names: set[str] = set()


def operation_label(name: object) -> str:
    """The operation label for a name a client chose (or sent as anything at all):
    bounded in length and number."""
    if name is None or name == "":
        return "anonymous"
    if not isinstance(name, str) or not OPERATION_NAME.fullmatch(name):
        return "unknown"
    if name not in _operation_names and len(_operation_names) >= MAX_OPERATION_NAMES:
        return "other"
    _operation_names.add(name)
    return name


# ---------------------------------------------------------------------------------------
# Requests: the middleware times them; the extension says which operation and outcome.

SCOPE_KEY = "callfloor.metrics"


@dataclass
class RequestLabels:
    """What a GraphQL request over HTTP was: its operation's name (OperationMetrics) and
    its outcome (record_result, from the view)."""

    operation: str | None = None
    outcome: str | None = None


class MetricsMiddleware:
    """Times GraphQL requests over HTTP and counts open WebSockets."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            WEBSOCKETS.inc()
            try:
                await self.app(scope, receive, send)
            finally:
                WEBSOCKETS.dec()
            return
        if scope["type"] != "http" or scope["path"] != GRAPHQL_PATH:
            await self.app(scope, receive, send)
            return
        labels = scope[SCOPE_KEY] = RequestLabels()
        status = 500
        started = time.perf_counter()

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            seconds = time.perf_counter() - started
            ran = labels.operation is not None or labels.outcome is not None
            if ran or status >= 400:  # else it was GraphiQL's page, not an operation
                # Refused before a result was made (not JSON, no such operation...): by status.
                outcome = labels.outcome or (f"HTTP_{status}" if status >= 400 else "OK")
                observe_request(labels.operation or "unknown", outcome, seconds)


def observe_request(operation: str, outcome: str, seconds: float) -> None:
    """Count and time one GraphQL request."""
    REQUESTS.labels(operation, outcome).inc()
    REQUEST_SECONDS.labels(operation, outcome).observe(seconds)


class OperationMetrics(SchemaExtension):
    """Labels an HTTP request with its operation's name, once the document is parsed (or
    has failed to be)."""

    def on_operation(self) -> Iterator[None]:
        try:
            yield
        finally:  # a document that does not parse ends the operation with an exception
            request = getattr(self.execution_context.context, "request", None)
            labels = getattr(request, "scope", {}).get(SCOPE_KEY)
            if isinstance(labels, RequestLabels):
                try:
                    name: object = self.execution_context.operation_name
                except Exception:  # no document to read it from
                    name = None
                labels.operation = operation_label(name)


def record_result(request: Any, errors: list[Any] | None) -> None:
    """A GraphQL response over HTTP as the client gets it: its errors counted by code,
    and its outcome (OK, or the first error's code) noted for the request's metrics."""
    codes = [
        str((error.extensions or {}).get("code", "INTERNAL_SERVER_ERROR")) for error in errors or []
    ]
    for code in codes:
        ERRORS.labels(code).inc()
    labels = getattr(request, "scope", {}).get(SCOPE_KEY)
    if isinstance(labels, RequestLabels):
        labels.outcome = codes[0] if codes else "OK"


# ---------------------------------------------------------------------------------------
# Live events, nextLead and logins.


class HubMetrics(HubObserver):
    """Subscriptions as the Hub sees them: open ones, resyncs, and the delay of events
    written to the sockets straight from the Hub (once per event and document)."""

    def opened(self) -> None:
        SUBSCRIPTIONS.inc()

    def closed(self) -> None:
        SUBSCRIPTIONS.dec()

    def resynced(self) -> None:
        RESYNCS.inc()

    def delivered(self, at: datetime) -> None:
        EVENT_DELAY.observe(max(0.0, time.time() - at.timestamp()))


class SubscriptionMetrics:
    """One subscription's events as Strawberry sends them (a subscription the Hub does
    not write to itself: another protocol than graphql-transport-ws)."""

    def __init__(self) -> None:
        self.snapshots = 0

    def sending(self, kind: str) -> None:
        """An event is about to go out: every snapshot after the first is a resync."""
        if kind == "SNAPSHOT":
            self.snapshots += 1
            if self.snapshots > 1:
                RESYNCS.inc()

    def sent(self, kind: str, at: datetime) -> None:
        """An event went out: a call event's delay is from its commit to now."""
        if kind != "SNAPSHOT":
            EVENT_DELAY.observe(max(0.0, time.time() - at.timestamp()))


def count_next_lead(outcome: str) -> None:
    """A nextLead answer: started, nothing_callable, or an error's code."""
    NEXT_LEAD.labels(outcome).inc()


@contextlib.contextmanager
def counting_failures(counter: Counter) -> Iterator[None]:
    """Count an error with a code (a DomainError) raised in the block, by that code."""
    try:
        yield
    except Exception as error:
        code = getattr(error, "code", None)
        if isinstance(code, str):
            counter.labels(code).inc()
        raise


def counting_login_failures() -> contextlib.AbstractContextManager[None]:
    """Count a failed sign-in raised in the block, by its code."""
    return counting_failures(LOGIN_FAILURES)


def counting_next_lead_errors() -> contextlib.AbstractContextManager[None]:
    """Count a nextLead refused in the block, by its code."""
    return counting_failures(NEXT_LEAD)


# ---------------------------------------------------------------------------------------
# Sampling the process's pool and listener.


def sample(pool: Any, listener: Any, state: dict[str, int]) -> None:
    """Set the gauges that describe this process's pool and listener now."""
    size, idle = pool.get_size(), pool.get_idle_size()
    POOL_CONNECTIONS.labels("idle").set(idle)
    POOL_CONNECTIONS.labels("busy").set(size - idle)
    POOL_MAX_CONNECTIONS.set(pool.get_max_size())
    # asyncpg does not say how many wait; they wait on its queue of free connections.
    # (tests/test_metrics.py fails if that stops being so.)
    queue = getattr(pool, "_queue", None)
    POOL_WAITERS.set(len(getattr(queue, "_getters", ())))
    LISTENER_CONNECTED.set(1 if listener.connected.is_set() else 0)
    reconnects = int(listener.reconnects)
    if reconnects > state.get("reconnects", 0):
        LISTENER_RECONNECTS.inc(reconnects - state.get("reconnects", 0))
    state["reconnects"] = reconnects


async def sample_forever(pool: Any, listener: Any) -> None:
    """Sample every SAMPLE_SECONDS until cancelled, so that a scrape answered by another
    worker sees this one's figures too."""
    state: dict[str, int] = {}
    while True:
        try:
            sample(pool, listener, state)
        except Exception as error:  # never let metrics take the server down
            log.warning("could not sample metrics: %r", error)
        await asyncio.sleep(SAMPLE_SECONDS)


# ---------------------------------------------------------------------------------------
# The endpoint and the multiprocess directory.


def is_multiprocess() -> bool:
    """Whether this process records to PROMETHEUS_MULTIPROC_DIR (decided at import)."""
    return MULTIPROCESS_DIRECTORY in os.environ


async def metrics_endpoint(request: Request) -> Response:
    """GET /metrics: 404 while METRICS_TOKEN is unset; 401 without it; else the scrape."""
    token: str | None = request.app.state.settings.metrics_token
    if not token:
        return PlainTextResponse("Not Found", status_code=404)
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip(), token):
        return PlainTextResponse(
            "Unauthorized", status_code=401, headers={"WWW-Authenticate": "Bearer"}
        )
    state = request.app.state
    sample(state.pool, state.listener, state.metrics_sampled)
    # The database may be down, or the pool exhausted: then the last count stays.
    with contextlib.suppress(Exception):
        count = state.pool.fetchval("SELECT count(*) FROM active_calls")
        ACTIVE_CALLS.set(await asyncio.wait_for(count, ACTIVE_CALLS_TIMEOUT_SECONDS))
    registry = REGISTRY
    if is_multiprocess():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    # The format the scraper asks for: Prometheus's text format 0.0.4 unless it says.
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(registry), headers={"content-type": content_type})


routes = [Route("/metrics", metrics_endpoint, methods=["GET"])]


def prepare_directory(directory: Path) -> None:
    """Make PROMETHEUS_MULTIPROC_DIR ready for a new run of the server: every file of an
    earlier run removed (their counts would be added to this run's), this process's own
    kept (the library may have opened them already)."""
    directory.mkdir(parents=True, exist_ok=True)
    own = f"_{os.getpid()}.db"
    for path in directory.iterdir():
        if path.name.endswith(own):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def forget_dead_workers() -> None:
    """Drop the live gauges of workers that are gone (a worker killed without shutting
    down, which uvicorn replaces); a worker calls it when it starts and stops."""
    directory = os.environ.get(MULTIPROCESS_DIRECTORY)
    if not directory:
        return
    for path in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        pid = int(path.rsplit("_", 1)[1].removesuffix(".db"))
        if pid != os.getpid() and not _alive(pid):
            multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def forget_this_worker() -> None:
    """At shutdown: this worker's live gauges no longer count."""
    if is_multiprocess():
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
