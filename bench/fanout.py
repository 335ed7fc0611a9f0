"""Benchmark the fan-out of activeCallEvents: N WebSocket subscribers on one server process.

Starts its own embedded PostgreSQL in a temporary directory, creates a manager (who
watches) and an agent (who calls), and for each N serves a fresh `python server.py
serve` on 127.0.0.1, so each N starts from the same memory. Then:

    1. one warm-up subscriber and one warm-up call, so lazy start-up costs are paid;
    2. the server's RSS, then N subscribers over graphql-transport-ws (plain `websockets`,
       opened in batches), each reading its first SNAPSHOT; the server's RSS again;
    3. one probe call, timing how long one event takes to reach every subscriber;
    4. a steady stream of calls started and ended on distinct prospects, committed
       straight through the start_call/end_call SQL functions from asyncpg, so the
       server does nothing but listen and fan out. Unless --rate is given, commits come
       1.5 times slower than the probe's fan-out, so the delays are the fan-out's own
       and not a backlog's; each N streams for about --seconds;
    5. every subscriber's events, checked for gaps, duplicates and extra SNAPSHOTs.

Delay is receipt minus the event's `at`: clock_timestamp() taken in publish_call_event,
the last statement of the committing transaction, so it spans the commit, NOTIFY, the
listener, the hub, Strawberry, uvicorn and the socket. Receipt is when this process's
event loop read and decoded the frame (no task switch or JSON parsing in between: frames
are captured in the protocol callback and parsed after the run). Both timestamps come
from this machine's clock.

Usage: .venv/bin/python bench/fanout.py [--subscribers 1000,5000] [--seconds 25]
           [--calls 50] [--rate EVENTS_PER_S] [--batch 200] [--compression deflate|none]
           [--json]

This process, the server and PostgreSQL share the machine's cores: while a frame is
being sent to subscriber 5,000, the client is reading subscriber 1's, so the figures are
an upper bound for clients on their own machines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import statistics
import sys
import time
from collections.abc import Coroutine
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
import common
import psutil
from websockets.asyncio.client import ClientConnection, connect
from websockets.frames import Frame, Opcode
from websockets.typing import Subprotocol

from sql import database
from sql.queries import QUERIES

DATABASE_NAME = "callfloor_fanout"
SUBSCRIPTION = (
    "subscription { activeCallEvents { type seq at "
    "activeCall { callLogId prospectName callerName startedAt } outcome } }"
)
PROTOCOL = Subprotocol("graphql-transport-ws")
# Sockets this process and the server need besides the subscribers' (pool, log, ...).
SPARE_FILES = 256
# A handshake can wait behind a whole batch of others on a busy server.
OPEN_TIMEOUT = 60
SETTLE_SECONDS = 1.0
# After the last commit, how long to wait for stragglers once nothing arrives any more.
QUIET_SECONDS = 3.0
DRAIN_LIMIT_SECONDS = 60.0
# Without --rate, commits come HEADROOM times slower than one event takes to reach every
# subscriber (timed with a probe call), so the delay measured is the fan-out's, not a
# queue's; never faster than MAX_RATE, and never fewer than MIN_CALLS calls.
HEADROOM = 1.5
MAX_RATE = 20.0
MIN_CALLS = 3
# The bench calls around the clock: where the schema has a calling window, open it all day
# (this database is the bench's own and is thrown away).
OPEN_CALLING_HOURS = """
DO $$
BEGIN
    IF to_regclass('calling_hours') IS NOT NULL THEN
        UPDATE calling_hours SET opens_at = '00:00', closes_at = '23:59:59.999999';
    END IF;
END
$$
"""
T = TypeVar("T")


# --- the subscribers -------------------------------------------------------------------


class CapturingConnection(ClientConnection):
    """A client connection that, once capturing, keeps each data frame with its arrival time.

    Frames are taken in the protocol callback instead of being queued for recv(): no task
    wakes up per message and nothing is parsed, so the arrival time is when the event
    loop read the bytes, not when a task thousands deep in the run queue got to them.
    Identical payloads (every subscriber receives the same bytes) are stored once.
    """

    capturing = False
    captured: list[tuple[float, bytes]]
    payloads: dict[bytes, bytes]

    def process_event(self, event: Any) -> None:
        """Capture data frames once capturing; everything else as usual."""
        if (
            self.capturing
            and isinstance(event, Frame)
            and event.opcode in (Opcode.TEXT, Opcode.BINARY)
        ):
            data = bytes(event.data)
            self.captured.append((time.time(), self.payloads.setdefault(data, data)))
            return
        super().process_event(event)


@dataclass
class Subscriber:
    """One WebSocket with one activeCallEvents subscription."""

    socket: CapturingConnection
    snapshot_seq: int


async def receive_json(socket: ClientConnection, within: float) -> dict[str, Any]:
    """The next message, decoded."""
    message = await asyncio.wait_for(socket.recv(), within)
    data: dict[str, Any] = json.loads(message)
    return data


async def open_subscriber(
    url: str, token: str, compression: str | None, payloads: dict[bytes, bytes]
) -> Subscriber:
    """Connect, authenticate, subscribe and read the first SNAPSHOT; then capture."""
    socket = await connect(
        url,
        subprotocols=[PROTOCOL],
        compression=compression,
        # The server pings every socket and the client protocol answers by itself;
        # 5,000 client pings on top would only add noise.
        ping_interval=None,
        open_timeout=OPEN_TIMEOUT,
        close_timeout=5,
        create_connection=CapturingConnection,
    )
    assert isinstance(socket, CapturingConnection)
    try:
        await socket.send(json.dumps({"type": "connection_init", "payload": {"token": token}}))
        ack = await receive_json(socket, OPEN_TIMEOUT)
        if ack.get("type") != "connection_ack":
            raise RuntimeError(f"expected connection_ack, got {ack}")
        subscribe = {"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION}}
        await socket.send(json.dumps(subscribe))
        first = await receive_json(socket, OPEN_TIMEOUT)
        data = (first.get("payload") or {}).get("data") or {}
        event = data.get("activeCallEvents") or {}
        if first.get("type") != "next" or event.get("type") != "SNAPSHOT":
            raise RuntimeError(f"expected a SNAPSHOT, got {first}")
        socket.captured = []
        socket.payloads = payloads
        socket.capturing = True
        return Subscriber(socket, int(event["seq"]))
    except BaseException:
        socket.transport.abort()
        raise


async def open_subscribers(
    url: str, token: str, count: int, batch: int, compression: str | None
) -> tuple[list[Subscriber], list[BaseException]]:
    """Open count subscribers, batch at a time (the listen backlog is finite)."""
    payloads: dict[bytes, bytes] = {}
    opened: list[Subscriber] = []
    failed: list[BaseException] = []
    try:
        for first in range(0, count, batch):
            results = await asyncio.gather(
                *(
                    open_subscriber(url, token, compression, payloads)
                    for _ in range(min(batch, count - first))
                ),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, Subscriber):
                    opened.append(result)
                elif isinstance(result, Exception):
                    failed.append(result)
                else:
                    raise result  # CancelledError, KeyboardInterrupt
    except BaseException:
        abort_subscribers(opened)
        raise
    return opened, failed


async def close_subscribers(subscribers: list[Subscriber], batch: int) -> None:
    """Close politely, batch at a time; abort whatever does not close in time."""
    for first in range(0, len(subscribers), batch):
        sockets = [subscriber.socket for subscriber in subscribers[first : first + batch]]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(socket.close() for socket in sockets), return_exceptions=True),
                10,
            )
    for subscriber in subscribers:
        subscriber.socket.transport.abort()


def abort_subscribers(subscribers: list[Subscriber]) -> None:
    """Drop every connection at once (interrupted runs)."""
    for subscriber in subscribers:
        subscriber.socket.transport.abort()


# --- the database and the server process -----------------------------------------------


@dataclass
class Team:
    """Who watches, who calls, and the prospects each measurement calls (one each)."""

    manager_email: str
    agent_id: UUID
    prospects: list[UUID]
    token: str = ""


async def seed(url: str, prospect_count: int) -> Team:
    """Migrate; create a manager, an agent and prospect_count prospects."""
    await common.migrate_database(url)
    pool = await database.create_pool(
        url, session=database.SessionSettings(min_call_interval_seconds=0), min_size=1, max_size=2
    )
    try:
        manager = await common.create_bench_user(
            pool, "wallboard@bench.test", "Wallboard", "manager"
        )
        agent = await common.create_bench_user(pool, "caller@bench.test", "Bench Caller", "agent")
        now = datetime.now(UTC)
        async with pool.acquire() as connection, connection.transaction():
            prospects = [
                row["id"] for row in await common.insert_prospects(connection, prospect_count, now)
            ]
        await pool.execute(OPEN_CALLING_HOURS)
        await pool.execute("ANALYZE")
        return Team(manager_email=manager["email"], agent_id=agent["id"], prospects=prospects)
    finally:
        await pool.close()


def raise_open_files_limit(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards wanted (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


class CallStream:
    """Starts and ends calls on distinct prospects, straight through the SQL functions."""

    def __init__(self, pool: asyncpg.Pool, agent_id: UUID) -> None:
        self.pool = pool
        self.agent_id = agent_id
        self.arity: dict[str, int] = {}

    async def call(self, name: str, *arguments: object) -> asyncpg.Record:
        """Run a named query; parameters past the given ones (optional ones) go as NULL."""
        if name not in self.arity:
            async with self.pool.acquire() as connection:
                statement = await connection.prepare(QUERIES[name])
                self.arity[name] = len(statement.get_parameters())
        padding = [None] * (self.arity[name] - len(arguments))
        record = await self.pool.fetchrow(QUERIES[name], *arguments, *padding)
        assert record is not None
        return record

    async def seq(self) -> int:
        """The newest event number in the database."""
        return int(await self.pool.fetchval("SELECT seq FROM call_event_sequence"))

    async def start(self, prospect_id: UUID) -> UUID:
        """Start a call (one STARTED event); its call log id."""
        started = await self.call("start_call", prospect_id, self.agent_id)
        call_log_id: UUID = started["call_log_id"]
        return call_log_id

    async def end(self, prospect_id: UUID, call_log_id: UUID) -> None:
        """End a call (one ENDED event)."""
        await self.call("end_call", prospect_id, call_log_id, self.agent_id, common.OUTCOME)

    async def run(self, prospects: list[UUID], rate: float) -> None:
        """One commit every 1/rate seconds: start 1, end 1, start 2, end 2, ..."""
        interval = 1 / rate
        began = time.perf_counter()
        for number, prospect_id in enumerate(prospects):
            await asyncio.sleep(max(0.0, began + 2 * number * interval - time.perf_counter()))
            call_log_id = await self.start(prospect_id)
            await asyncio.sleep(max(0.0, began + (2 * number + 1) * interval - time.perf_counter()))
            await self.end(prospect_id, call_log_id)


def rss(pid: int) -> int:
    """Resident set size of a process, in bytes."""
    return int(psutil.Process(pid).memory_info().rss)


@dataclass
class Spent:
    """Wall-clock and CPU seconds of one phase."""

    seconds: float
    server: float
    bench: float


class Cpu:
    """CPU seconds (user + system) of the server and of this process since creation."""

    def __init__(self, server_pid: int) -> None:
        self.server = psutil.Process(server_pid)
        self.bench = psutil.Process()
        self.began = time.perf_counter()
        self.server_began = common.cpu_seconds(self.server)
        self.bench_began = common.cpu_seconds(self.bench)

    def spent(self) -> Spent:
        """What was spent since creation."""
        return Spent(
            seconds=time.perf_counter() - self.began,
            server=common.cpu_seconds(self.server) - self.server_began,
            bench=common.cpu_seconds(self.bench) - self.bench_began,
        )


# --- measuring -------------------------------------------------------------------------


@dataclass
class Options:
    """The command line."""

    subscribers: list[int]
    calls: int
    seconds: float
    rate: float | None
    batch: int
    compression: str
    json: bool


@dataclass
class Result:
    """One N: delays over every (subscriber, event) pair, completeness, memory, CPU."""

    subscribers: int
    connected: int
    events: int
    rate: float
    deliveries: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    first_p50_ms: float
    last_p50_ms: float
    last_max_ms: float
    probe_fan_out_ms: float
    missed: int
    subscribers_with_gaps: int
    resyncs: int
    duplicates: int
    rss_before_mib: float
    rss_after_mib: float
    rss_after_stream_mib: float
    kib_per_subscriber: float
    connect_seconds: float
    connect_server_cpu_ms_per_subscriber: float
    stream_seconds: float
    server_cpu_ms_per_event: float
    bench_cpu_ms_per_event: float
    failed_connects: int = 0
    closed_early: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class Received:
    """What one captured payload says."""

    kind: str  # the message type: next, error, complete, ping, ...
    event: str | None = None  # SNAPSHOT, STARTED, ENDED, EXPIRED
    seq: int | None = None
    at: float | None = None


def decode(payload: bytes) -> Received:
    """One graphql-transport-ws message, as far as the measurement needs it."""
    message = json.loads(payload)
    kind = str(message.get("type"))
    data = (message.get("payload") or {}).get("data") if kind == "next" else None
    event = (data or {}).get("activeCallEvents")
    if not event:
        return Received(kind)
    return Received(
        kind,
        event=event["type"],
        seq=int(event["seq"]),
        at=datetime.fromisoformat(event["at"]).timestamp(),
    )


def analyse(
    subscribers: list[Subscriber], first_seq: int, last_seq: int
) -> tuple[list[float], dict[int, list[float]], dict[str, int], list[str]]:
    """Delays per pair and per event, and the completeness counts."""
    decoded: dict[bytes, Received] = {}
    delays: list[float] = []
    per_event: dict[int, list[float]] = {}
    counts = {"missed": 0, "with_gaps": 0, "resyncs": 0, "duplicates": 0}
    errors: list[str] = []
    for subscriber in subscribers:
        seen: set[int] = set()
        for arrived, payload in subscriber.socket.captured:
            received = decoded.get(payload)
            if received is None:
                received = decoded[payload] = decode(payload)
            if received.kind != "next" or received.event is None:
                if received.kind not in ("ping", "pong") and len(errors) < 5:
                    errors.append(payload.decode(errors="replace")[:300])
                continue
            if received.event == "SNAPSHOT":
                counts["resyncs"] += 1
                continue
            assert received.seq is not None
            assert received.at is not None
            if received.seq in seen or received.seq <= subscriber.snapshot_seq:
                counts["duplicates"] += 1
                continue
            seen.add(received.seq)
            delay = arrived - received.at
            delays.append(delay)
            per_event.setdefault(received.seq, []).append(delay)
        missed = sum(1 for seq in range(first_seq, last_seq + 1) if seq not in seen)
        counts["missed"] += missed
        counts["with_gaps"] += missed > 0
    delays.sort()
    return delays, per_event, counts, errors


async def wait_for_delivery(subscribers: list[Subscriber], expected: int) -> None:
    """Until every subscriber holds expected messages, or nothing arrived for a while."""
    deadline = time.monotonic() + DRAIN_LIMIT_SECONDS
    total = -1
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        counts = [len(subscriber.socket.captured) for subscriber in subscribers]
        if all(count >= expected for count in counts):
            return
        if sum(counts) != total:
            total, quiet_since = sum(counts), time.monotonic()
        elif time.monotonic() - quiet_since > QUIET_SECONDS:
            return
        await asyncio.sleep(0.05)


def clear_captured(subscribers: list[Subscriber], seen_seq: int) -> None:
    """Forget what was captured so far; events up to seen_seq no longer count."""
    for subscriber in subscribers:
        subscriber.socket.captured = []
        subscriber.snapshot_seq = seen_seq


def slowest_delivery(subscribers: list[Subscriber]) -> float:
    """Seconds from `at` to the last subscriber's receipt, over the captured events."""
    slowest = 0.0
    for subscriber in subscribers:
        for arrived, payload in subscriber.socket.captured:
            received = decode(payload)
            if received.at is not None and received.event != "SNAPSHOT":
                slowest = max(slowest, arrived - received.at)
    return slowest


async def time_fan_out(
    stream: CallStream, subscribers: list[Subscriber], prospect_id: UUID
) -> float:
    """Start and end one call, one event at a time; the slower event's fan-out time."""
    clear_captured(subscribers, await stream.seq())
    call_log_id = await stream.start(prospect_id)
    await wait_for_delivery(subscribers, 1)
    started = slowest_delivery(subscribers)
    clear_captured(subscribers, await stream.seq())
    await stream.end(prospect_id, call_log_id)
    await wait_for_delivery(subscribers, 1)
    return max(started, slowest_delivery(subscribers))


async def measure(options: Options, url: str, team: Team, count: int, log_path: Path) -> Result:
    """Serve, subscribe count sockets, stream calls, collect; a fresh server process."""
    own = team.prospects[: options.calls + 2]
    del team.prospects[: options.calls + 2]
    warmup_prospect, probe_prospect, stream_prospects = own[0], own[1], own[2:]
    compression = None if options.compression == "none" else options.compression
    port = common.free_port()
    base_url = f"http://127.0.0.1:{port}"
    ws_url = f"ws://127.0.0.1:{port}/graphql"
    pool = await database.create_pool(
        url, session=database.SessionSettings(min_call_interval_seconds=0), min_size=1, max_size=2
    )
    stream = CallStream(pool, team.agent_id)
    subscribers: list[Subscriber] = []
    finished = False
    common.log(f"N={count}: starting the server on {base_url} ...")
    server_settings = {
        "MIN_CALL_INTERVAL_SECONDS": "0",
        # One process: the figures are per server process (WEB_CONCURRENCY > 1 forks).
        "WEB_CONCURRENCY": "1",
    }
    try:
        with common.server_process(
            url,
            port,
            log_path,
            server_settings,
            # Room for every subscriber's socket.
            preexec_fn=lambda: raise_open_files_limit(count + SPARE_FILES),
            # Thousands of sockets to close first.
            stop_seconds=20,
        ) as pid:
            try:
                await common.wait_until_healthy(base_url, pid)
                if not team.token:
                    async with common.http_client(base_url) as client:
                        variables = {"email": team.manager_email, "password": common.PASSWORD}
                        data = await common.graphql(client, common.LOGIN_MUTATION, variables)
                        team.token = data["login"]["token"]

                # Warm the whole path up once, then take the baseline.
                warm, refused = await open_subscribers(ws_url, team.token, 1, 1, compression)
                if not warm:
                    raise RuntimeError(f"the warm-up subscriber could not connect: {refused}")
                await time_fan_out(stream, warm, warmup_prospect)
                await close_subscribers(warm, 1)
                await asyncio.sleep(SETTLE_SECONDS)
                rss_before = rss(pid)

                common.log(f"N={count}: opening {count} subscribers, {options.batch} at a time ...")
                cpu = Cpu(pid)
                subscribers, failed = await open_subscribers(
                    ws_url, team.token, count, options.batch, compression
                )
                connecting = cpu.spent()
                await asyncio.sleep(SETTLE_SECONDS)
                rss_after = rss(pid)
                common.log(
                    f"N={count}: {len(subscribers)} subscribed in {connecting.seconds:.1f}s "
                    f"({len(failed)} failed; server CPU {connecting.server:.1f}s, bench CPU "
                    f"{connecting.bench:.1f}s); RSS {rss_before / 2**20:.1f} -> "
                    f"{rss_after / 2**20:.1f} MiB"
                )
                if not subscribers:
                    raise RuntimeError(f"no subscriber could connect: {failed[0]!r}")

                fan_out = await time_fan_out(stream, subscribers, probe_prospect)
                rate = options.rate or min(MAX_RATE, 1 / (HEADROOM * fan_out))
                calls = min(options.calls, max(MIN_CALLS, int(options.seconds * rate / 2)))
                common.log(
                    f"N={count}: one event reached all subscribers in {fan_out * 1000:.0f} ms; "
                    f"streaming {2 * calls} events at {rate:.2f}/s ..."
                )
                first_seq = await stream.seq() + 1
                clear_captured(subscribers, first_seq - 1)
                cpu = Cpu(pid)
                await stream.run(stream_prospects[:calls], rate)
                last_seq = await stream.seq()
                await wait_for_delivery(subscribers, last_seq - first_seq + 1)
                streaming = cpu.spent()
                rss_after_stream = rss(pid)
                closed_early = sum(s.socket.close_code is not None for s in subscribers)
                common.log(f"N={count}: closing ...")
                closing = Cpu(pid)
                await close_subscribers(subscribers, options.batch)
                common.log(f"N={count}: closed in {closing.spent().seconds:.1f}s")
                finished = True
            finally:
                if not finished:
                    abort_subscribers(subscribers)
    finally:
        await pool.close()

    delays, per_event, counts, errors = analyse(subscribers, first_seq, last_seq)
    firsts = [min(values) for values in per_event.values()]
    lasts = [max(values) for values in per_event.values()]
    errors = [f"{type(error).__name__}: {error}" for error in failed[:5]] + errors
    events = last_seq - first_seq + 1
    return Result(
        subscribers=count,
        connected=len(subscribers),
        events=events,
        rate=rate,
        deliveries=len(delays),
        p50_ms=common.percentile(delays, 0.50) * 1000,
        p99_ms=common.percentile(delays, 0.99) * 1000,
        max_ms=(delays[-1] if delays else float("nan")) * 1000,
        first_p50_ms=statistics.median(firsts) * 1000 if firsts else float("nan"),
        last_p50_ms=statistics.median(lasts) * 1000 if lasts else float("nan"),
        last_max_ms=max(lasts) * 1000 if lasts else float("nan"),
        probe_fan_out_ms=fan_out * 1000,
        missed=counts["missed"],
        subscribers_with_gaps=counts["with_gaps"],
        resyncs=counts["resyncs"],
        duplicates=counts["duplicates"],
        rss_before_mib=rss_before / 2**20,
        rss_after_mib=rss_after / 2**20,
        rss_after_stream_mib=rss_after_stream / 2**20,
        kib_per_subscriber=(rss_after - rss_before) / max(1, len(subscribers)) / 1024,
        connect_seconds=connecting.seconds,
        connect_server_cpu_ms_per_subscriber=connecting.server * 1000 / max(1, len(subscribers)),
        stream_seconds=streaming.seconds,
        server_cpu_ms_per_event=streaming.server * 1000 / max(1, events),
        bench_cpu_ms_per_event=streaming.bench * 1000 / max(1, events),
        failed_connects=len(failed),
        closed_early=closed_early,
        errors=errors,
    )


async def measure_all(options: Options, url: str, team: Team, log_path: Path) -> list[Result]:
    """Each N in turn, each on a fresh server process."""
    return [await measure(options, url, team, count, log_path) for count in options.subscribers]


# --- reporting -------------------------------------------------------------------------


def table(results: list[Result]) -> str:
    """The results as a fixed-width table."""
    header = (
        f"{'subs':>5} {'events':>6} {'ev/s':>5} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
        f"{'first':>6} {'last':>6} {'missed':>6} {'resync':>6} "
        f"{'RSS before':>10} {'RSS after':>9} {'KiB/sub':>7} {'srv cpu ms/ev':>13}"
    )
    lines = [header, "-" * len(header)]
    for result in results:
        lines.append(
            f"{result.connected:>5} {result.events:>6} {result.rate:>5.2f} "
            f"{result.p50_ms:>7.1f} {result.p99_ms:>7.1f} {result.max_ms:>7.1f} "
            f"{result.first_p50_ms:>6.1f} {result.last_p50_ms:>6.1f} {result.missed:>6} "
            f"{result.resyncs:>6} {result.rss_before_mib:>6.1f} MiB "
            f"{result.rss_after_mib:>5.1f} MiB "
            f"{result.kib_per_subscriber:>7.1f} {result.server_cpu_ms_per_event:>13.1f}"
        )
    return "\n".join(lines)


def report(options: Options, results: list[Result]) -> None:
    """Print the table (or JSON) on stdout."""
    if options.json:
        document = {
            "machine": common.machine_facts(),
            "options": asdict(options),
            "results": [asdict(result) for result in results],
        }
        print(json.dumps(document, indent=2))
        return
    print(common.machine_note())
    pace = (
        f"{options.rate:g} events/s"
        if options.rate
        else f"a rate {HEADROOM:g}x slower than one event's measured fan-out"
    )
    print(
        f"stream: calls started and ended on distinct prospects, committed from asyncpg at "
        f"{pace}, for about {options.seconds:g}s per N (at most {options.calls} calls); "
        f"a fresh server process per N; compression {options.compression}; subscribers "
        f"opened {options.batch} at a time."
    )
    print()
    print(table(results))
    print()
    print(
        "Delay = receipt by the client minus `at` (clock_timestamp() just before commit), "
        "over every (subscriber, event) pair. first/last: per event, the median delay to "
        "the first and to the last subscriber (last - first is the time the server takes "
        "to fan one event out). missed: (subscriber, event) pairs never delivered as a "
        "delta; resync: extra SNAPSHOTs (the slow-consumer path). KiB/sub = (RSS after "
        "subscribing - RSS before) / subscribers. srv cpu ms/ev: server CPU per event."
    )
    for result in results:
        notes = []
        if result.failed_connects:
            notes.append(f"{result.failed_connects} subscribers failed to connect")
        if result.closed_early:
            notes.append(f"{result.closed_early} sockets closed by the server")
        if result.duplicates:
            notes.append(f"{result.duplicates} duplicate or stale events")
        if result.subscribers_with_gaps:
            notes.append(f"{result.subscribers_with_gaps} subscribers with gaps")
        notes.append(
            f"subscribed in {result.connect_seconds:.1f}s "
            f"({result.connect_server_cpu_ms_per_subscriber:.1f} ms server CPU each); "
            f"probe event fanned out in {result.probe_fan_out_ms:.0f} ms; slowest stream "
            f"event reached its last subscriber after {result.last_max_ms:.0f} ms; RSS after "
            f"the stream {result.rss_after_stream_mib:.1f} MiB; bench CPU "
            f"{result.bench_cpu_ms_per_event:.1f} ms/event"
        )
        print(f"N={result.subscribers}: " + "; ".join(notes))
        for error in result.errors:
            print(f"N={result.subscribers}: error: {error}")


# --- entry point -----------------------------------------------------------------------


def parse_options(argv: list[str] | None) -> Options:
    """Options from the command line."""
    parser = argparse.ArgumentParser(
        prog="bench/fanout.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--subscribers", default="1000,5000", help="comma-separated subscriber counts"
    )
    parser.add_argument(
        "--calls", type=int, default=50, help="at most this many calls started and ended per N"
    )
    parser.add_argument(
        "--seconds", type=float, default=25.0, help="about how long each N's stream lasts"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="events (commits) per second; by default paced by a probe of the fan-out time",
    )
    parser.add_argument("--batch", type=int, default=200, help="subscribers opened at once")
    parser.add_argument(
        "--compression",
        choices=["deflate", "none"],
        default="deflate",
        help="permessage-deflate, as browsers offer it (default), or none",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    try:
        counts = [int(part) for part in args.subscribers.split(",") if part.strip()]
    except ValueError:
        parser.error("--subscribers takes numbers separated by commas, e.g. 1000,5000")
    if not counts or min(counts) < 1:
        parser.error("--subscribers must be positive")
    if args.calls < 1 or args.seconds <= 0 or args.batch < 1:
        parser.error("--calls, --seconds and --batch must be positive")
    if args.rate is not None and args.rate <= 0:
        parser.error("--rate must be positive")
    return Options(
        subscribers=counts,
        calls=args.calls,
        seconds=args.seconds,
        rate=args.rate,
        batch=args.batch,
        compression=args.compression,
        json=args.json,
    )


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when installed (as uvicorn does); SIGTERM cancels like Ctrl-C."""
    try:
        import uvloop

        loop_factory: Any = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    return common.run(coroutine, loop_factory)


def main(argv: list[str] | None = None) -> int:
    """Set up, measure, report, and tear everything down whatever happens."""
    options = parse_options(argv)
    wanted = max(options.subscribers) + SPARE_FILES
    limit = raise_open_files_limit(wanted)
    if limit < wanted:
        common.log(f"the open-files limit is {limit}, below the {wanted} this run needs")
        return 2
    return common.run_benchmark("cf-fanout-", DATABASE_NAME, partial(benchmark, options))


def benchmark(options: Options, postgres: common.TemporaryPostgres, url: str) -> int:
    """Seed the database, then measure each N on a fresh server and report; the exit status."""
    prospects = (options.calls + 2) * len(options.subscribers)
    common.log(f"seeding {prospects} prospects ...")
    team = run(seed(url, prospects))
    results = run(measure_all(options, url, team, postgres.directory / "server.log"))
    report(options, results)
    failed = any(r.missed or r.resyncs or r.failed_connects for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
