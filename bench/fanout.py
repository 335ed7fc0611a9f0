"""Benchmark the fan-out of activeCallEvents: N WebSocket subscribers at a fixed event rate.

Starts its own embedded PostgreSQL in a temporary directory, creates a manager (who
watches) and an agent (who calls), and for each N serves fresh `python server.py serve`
processes on 127.0.0.1 (one, or --processes 2 on the same database, the subscribers split
between them), so each N starts from the same memory. Then, for each N:

    1. the first SNAPSHOT at connect: --snapshot-calls calls are started, and
       --snapshot-probes subscribers connect one after the other, each timed from its
       `subscribe` to its SNAPSHOT; the calls are ended again;
    2. the servers' RSS, then N subscribers over graphql-transport-ws, each reading its
       first SNAPSHOT; the RSS again, once they are idle;
    3. for each --rates: calls started and ended on distinct prospects, committed straight
       through the start_call/end_call SQL functions from asyncpg at that fixed rate for
       --seconds (a commit that comes late is not made up for by skipping: the schedule is
       the clock's, never the server's), so the servers do nothing but listen and fan out;
    4. every subscriber's frames, checked: each committed event exactly once, numbers
       without gaps, no SNAPSHOT after the first (a resync).

Delay is receipt minus the event's `at`: clock_timestamp() taken in publish_call_event,
the last statement of the committing transaction, so it spans the commit, NOTIFY, the
listener, the hub, the GraphQL layer, uvicorn and the socket. Events are told apart by
their call and type, not by number: each server numbers the events it sends itself.

The client is one event loop with a bare WebSocket protocol: each frame is cut out of the
bytes as they arrive and kept with its arrival time (identical payloads once), pings are
answered, and nothing is parsed as JSON until the run is over, so a frame costs the client
a few microseconds and the client is not what limits the figures.

Usage: .venv/bin/python bench/fanout.py [--subscribers 1000,5000] [--rates 5]
           [--seconds 20] [--processes 1] [--snapshot-calls 500] [--json]

This process, the servers and PostgreSQL share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Coroutine, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast
from uuid import UUID

import asyncpg
import common
import psutil

from sql import database
from sql.queries import QUERIES

DATABASE_NAME = "callfloor_fanout"
SUBSCRIPTION = (
    "subscription { activeCallEvents { type seq at "
    "activeCall { callLogId prospectName callerName startedAt } outcome "
    "activeCalls { callLogId prospectName callerName startedAt } } }"
)
# Sockets this process and the servers need besides the subscribers' (pool, log, ...).
SPARE_FILES = 256
OPEN_TIMEOUT = 60
SETTLE_SECONDS = 2.0
# After the last commit, how long to wait for stragglers once nothing arrives any more.
QUIET_SECONDS = 3.0
DRAIN_LIMIT_SECONDS = 120.0
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


# --- a lean WebSocket client -----------------------------------------------------------


def client_frame(payload: bytes) -> bytes:
    """A masked text frame (a client must mask; a zero key leaves the payload as it is)."""
    length = len(payload)
    if length < 126:
        header = bytes((0x81, 0x80 | length))
    elif length < 65536:
        header = bytes((0x81, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((0x81, 0x80 | 127)) + length.to_bytes(8, "big")
    return header + b"\0\0\0\0" + payload


def control_frame(opcode: int, payload: bytes) -> bytes:
    """A masked control frame (pong, close)."""
    return bytes((0x80 | opcode, 0x80 | len(payload))) + b"\0\0\0\0" + payload


def message(document: dict[str, Any]) -> bytes:
    """A graphql-transport-ws message as a client frame."""
    return client_frame(json.dumps(document).encode())


class LeanSubscriber(asyncio.Protocol):
    """One WebSocket: the handshake, then frames cut out as they arrive, with their time.

    Text frames are kept as (arrival time, payload), identical payloads stored once;
    pings are answered at once; nothing else happens per frame.
    """

    def __init__(self, request: bytes, payloads: dict[bytes, bytes]) -> None:
        self.request = request
        self.payloads = payloads
        self.transport: asyncio.Transport | None = None
        self.handshake: bytes | None = b""
        self.buffer = b""
        self.frames: list[tuple[float, bytes]] = []
        self.close_code: int | None = None
        self.lost = False
        self.waiter: asyncio.Future[None] | None = None
        self.wanted = 0
        self.snapshot_seq = -1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the upgrade request."""
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        """Remember, and wake whoever waits."""
        self.lost = True
        self._wake()

    def data_received(self, data: bytes) -> None:
        """Cut complete frames out of what arrived."""
        now = time.time()
        if self.handshake is not None:
            self.handshake += data
            end = self.handshake.find(b"\r\n\r\n")
            if end < 0:
                return
            status = self.handshake[: self.handshake.find(b"\r\n")]
            data, self.handshake = self.handshake[end + 4 :], None
            if b" 101 " not in status:
                self.close_code = -1
                assert self.transport is not None
                self.transport.close()
                return
            self._wake()
        buffer = self.buffer + data if self.buffer else data
        size = len(buffer)
        position = 0
        while size - position >= 2:
            length = buffer[position + 1] & 0x7F
            start = position + 2
            if length == 126:
                if size - position < 4:
                    break
                length = int.from_bytes(buffer[start : start + 2], "big")
                start += 2
            elif length == 127:
                if size - position < 10:
                    break
                length = int.from_bytes(buffer[start : start + 8], "big")
                start += 8
            end = start + length
            if end > size:
                break
            opcode = buffer[position] & 0x0F
            payload = buffer[start:end]
            if opcode == 1:
                self.frames.append((now, self.payloads.setdefault(payload, payload)))
            elif opcode == 9:
                assert self.transport is not None
                self.transport.write(control_frame(0xA, payload))
            elif opcode == 8:
                self.close_code = int.from_bytes(payload[:2], "big") if payload else 1005
            position = end
        self.buffer = buffer[position:]
        if self.waiter is not None and len(self.frames) >= self.wanted:
            self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def frames_at_least(self, count: int, within: float) -> None:
        """Until count frames arrived (or the socket closed)."""
        while len(self.frames) < count and not self.lost and self.close_code is None:
            self.waiter = asyncio.get_running_loop().create_future()
            self.wanted = count
            await asyncio.wait_for(self.waiter, within)
        self.waiter = None
        if len(self.frames) < count:
            raise RuntimeError(f"closed ({self.close_code}) after {self.frames[-1:]}")

    async def opened(self, within: float) -> None:
        """Until the server answered the upgrade."""
        if self.handshake is not None:
            self.waiter = asyncio.get_running_loop().create_future()
            await asyncio.wait_for(self.waiter, within)
            self.waiter = None
        if self.close_code is not None or self.lost:
            raise RuntimeError("the WebSocket upgrade was refused")

    def send(self, frame: bytes) -> None:
        """Write a frame."""
        assert self.transport is not None
        self.transport.write(frame)

    def abort(self) -> None:
        """Drop the connection at once."""
        if self.transport is not None:
            self.transport.abort()


def decode_event(payload: bytes) -> dict[str, Any]:
    """The activeCallEvents object of a `next` message, or {} for anything else."""
    decoded = json.loads(payload)
    if decoded.get("type") != "next":
        return {"message": decoded.get("type")}
    event: dict[str, Any] = ((decoded.get("payload") or {}).get("data") or {}).get(
        "activeCallEvents"
    ) or {"message": "next without data"}
    return event


@dataclass
class Server:
    """One serve process."""

    pid: int
    port: int


async def open_subscriber(
    server: Server, token: str, payloads: dict[bytes, bytes]
) -> tuple[LeanSubscriber, float]:
    """Connect, authenticate, subscribe and read the first SNAPSHOT; how long that took."""
    request = (
        f"GET /graphql HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    _, subscriber = await asyncio.wait_for(
        loop.create_connection(
            partial(LeanSubscriber, request, payloads), "127.0.0.1", server.port
        ),
        OPEN_TIMEOUT,
    )
    try:
        await subscriber.opened(OPEN_TIMEOUT)
        subscriber.send(message({"type": "connection_init", "payload": {"token": token}}))
        await subscriber.frames_at_least(1, OPEN_TIMEOUT)
        if json.loads(subscriber.frames[0][1]).get("type") != "connection_ack":
            raise RuntimeError(f"expected connection_ack, got {subscriber.frames[0][1]!r}")
        began = time.time()
        subscribe = {"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION}}
        subscriber.send(message(subscribe))
        await subscriber.frames_at_least(2, OPEN_TIMEOUT)
        arrived, payload = subscriber.frames[1]
        event = decode_event(payload)
        if event.get("type") != "SNAPSHOT":
            raise RuntimeError(f"expected a SNAPSHOT, got {payload[:300]!r}")
        subscriber.snapshot_seq = int(event["seq"])
        subscriber.frames = []
        return subscriber, arrived - began
    except BaseException:
        subscriber.abort()
        raise


async def open_subscribers(
    servers: list[Server], token: str, count: int, batch: int, payloads: dict[bytes, bytes]
) -> tuple[list[LeanSubscriber], list[float], list[BaseException]]:
    """Open count subscribers spread over the servers, batch at a time."""
    opened: list[LeanSubscriber] = []
    snapshot_seconds: list[float] = []
    failed: list[BaseException] = []
    try:
        for first in range(0, count, batch):
            results = await asyncio.gather(
                *(
                    open_subscriber(servers[number % len(servers)], token, payloads)
                    for number in range(first, min(count, first + batch))
                ),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, tuple):
                    opened.append(result[0])
                    snapshot_seconds.append(result[1])
                elif isinstance(result, Exception):
                    failed.append(result)
                else:
                    raise result
    except BaseException:
        for subscriber in opened:
            subscriber.abort()
        raise
    return opened, snapshot_seconds, failed


async def close_subscribers(subscribers: list[LeanSubscriber]) -> None:
    """Send each a close frame, give the servers a moment, then drop the connections."""
    for subscriber in subscribers:
        with contextlib.suppress(Exception):
            subscriber.send(control_frame(0x8, (1000).to_bytes(2, "big")))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(s.lost for s in subscribers):  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    for subscriber in subscribers:
        subscriber.abort()


# --- the database and the server processes ---------------------------------------------


@dataclass
class Team:
    """Who watches, who calls, and the prospects not yet called."""

    manager_email: str
    agent_id: UUID
    prospects: list[UUID]
    token: str = ""

    def take(self, count: int) -> list[UUID]:
        """count prospects no call of this run has used."""
        taken, self.prospects = self.prospects[:count], self.prospects[count:]
        if len(taken) < count:
            raise RuntimeError("the bench seeded too few prospects")
        return taken


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
        await pool.execute(common.LIFT_ATTEMPT_CAPS)
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


@dataclass
class Commit:
    """One committed event: which call, which type, when it was due and when it was done."""

    call_log_id: str
    type: str
    due: float
    done: float


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

    async def start(self, prospect_id: UUID) -> UUID:
        """Start a call (one STARTED event); its call log id."""
        started = await self.call("start_call", prospect_id, self.agent_id)
        call_log_id: UUID = started["call_log_id"]
        return call_log_id

    async def end(self, prospect_id: UUID, call_log_id: UUID) -> None:
        """End a call (one ENDED event)."""
        await self.call("end_call", prospect_id, call_log_id, self.agent_id, common.OUTCOME)

    async def run(self, prospects: list[UUID], rate: float) -> list[Commit]:
        """One commit every 1/rate seconds by the clock: start 1, end 1, start 2, end 2..."""
        interval = 1 / rate
        began = time.time()
        commits: list[Commit] = []
        for number, prospect_id in enumerate(prospects):
            due = began + 2 * number * interval
            await asyncio.sleep(max(0.0, due - time.time()))
            call_log_id = await self.start(prospect_id)
            commits.append(Commit(str(call_log_id), "STARTED", due, time.time()))
            due += interval
            await asyncio.sleep(max(0.0, due - time.time()))
            await self.end(prospect_id, call_log_id)
            commits.append(Commit(str(call_log_id), "ENDED", due, time.time()))
        return commits


def rss(pids: list[int]) -> int:
    """Resident set size of the processes together, in bytes."""
    return sum(int(psutil.Process(pid).memory_info().rss) for pid in pids)


class Cpu:
    """CPU seconds (user + system) of the servers and of this process since creation."""

    def __init__(self, server_pids: list[int]) -> None:
        self.servers = [psutil.Process(pid) for pid in server_pids]
        self.bench = psutil.Process()
        self.began = time.perf_counter()
        self.servers_began = sum(common.cpu_seconds(process) for process in self.servers)
        self.bench_began = common.cpu_seconds(self.bench)

    def spent(self) -> tuple[float, float, float]:
        """(wall seconds, server CPU seconds, bench CPU seconds) since creation."""
        return (
            time.perf_counter() - self.began,
            sum(common.cpu_seconds(process) for process in self.servers) - self.servers_began,
            common.cpu_seconds(self.bench) - self.bench_began,
        )


# --- measuring -------------------------------------------------------------------------


@dataclass
class Options:
    """The command line."""

    subscribers: list[int]
    rates: list[float]
    seconds: float
    processes: int
    batch: int
    snapshot_calls: int
    snapshot_probes: int
    nice: int
    server_settings: dict[str, str]
    json: bool


@dataclass
class Stream:
    """One rate at one N: delays over every (subscriber, event) pair, completeness, CPU."""

    rate: float
    events: int
    offered_per_second: float
    delivered_per_second: float
    deliveries: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    fan_out_p50_ms: float
    missed: int
    duplicates: int
    gaps: int
    resyncs: int
    closed: int
    server_cpu_us_per_delivery: float
    bench_cpu_us_per_delivery: float
    commit_lag_max_ms: float
    errors: list[str] = field(default_factory=list)


@dataclass
class Result:
    """One N on fresh servers."""

    subscribers: int
    processes: int
    connected: int
    failed_connects: int
    rss_before_mib: float
    rss_after_mib: float
    kib_per_subscriber: float
    connect_seconds: float
    connect_snapshot_p50_ms: float
    connect_snapshot_p99_ms: float
    snapshot_calls: int
    snapshot_bytes: int
    first_snapshot_p50_ms: float
    first_snapshot_max_ms: float
    streams: list[Stream] = field(default_factory=list)


def analyse(
    subscribers: list[LeanSubscriber], commits: list[Commit]
) -> tuple[list[float], dict[tuple[str, str], list[float]], dict[str, int], list[str], float]:
    """Delays per pair and per event, the completeness counts, and the last arrival."""
    expected = {(commit.call_log_id, commit.type) for commit in commits}
    decoded: dict[bytes, dict[str, Any]] = {}
    delays: list[float] = []
    per_event: dict[tuple[str, str], list[float]] = {}
    counts = {"missed": 0, "duplicates": 0, "gaps": 0, "resyncs": 0, "closed": 0}
    errors: list[str] = []
    last_arrival = 0.0
    for subscriber in subscribers:
        seen: set[tuple[str, str]] = set()
        previous_seq: int | None = None
        for arrived, payload in subscriber.frames:
            event = decoded.get(payload)
            if event is None:
                event = decoded[payload] = decode_event(payload)
            if "message" in event:
                if len(errors) < 5:
                    errors.append(payload.decode(errors="replace")[:300])
                continue
            seq = int(event["seq"])
            if event["type"] == "SNAPSHOT":
                counts["resyncs"] += 1
                previous_seq = seq
                continue
            if previous_seq is not None and seq != previous_seq + 1:
                counts["gaps"] += 1
            previous_seq = seq
            key = (event["activeCall"]["callLogId"], event["type"])
            if key not in expected:
                continue
            if key in seen:
                counts["duplicates"] += 1
                continue
            seen.add(key)
            delay = arrived - datetime.fromisoformat(event["at"]).timestamp()
            delays.append(delay)
            per_event.setdefault(key, []).append(delay)
            last_arrival = max(last_arrival, arrived)
        counts["missed"] += len(expected - seen)
        counts["closed"] += subscriber.close_code is not None or subscriber.lost
    delays.sort()
    return delays, per_event, counts, errors, last_arrival


async def wait_for_delivery(subscribers: list[LeanSubscriber], expected: int) -> None:
    """Until every subscriber holds expected frames, or nothing arrived for a while."""
    deadline = time.monotonic() + DRAIN_LIMIT_SECONDS
    total = -1
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        counts = [len(subscriber.frames) for subscriber in subscribers]
        if all(count >= expected for count in counts):
            return
        if sum(counts) != total:
            total, quiet_since = sum(counts), time.monotonic()
        elif time.monotonic() - quiet_since > QUIET_SECONDS:
            return
        await asyncio.sleep(0.05)


async def measure_stream(
    stream: CallStream,
    subscribers: list[LeanSubscriber],
    servers: list[Server],
    prospects: list[UUID],
    rate: float,
) -> Stream:
    """Commit at the rate, wait for delivery, check every subscriber's frames."""
    for subscriber in subscribers:
        subscriber.frames = []
    cpu = Cpu([server.pid for server in servers])
    commits = await stream.run(prospects, rate)
    await wait_for_delivery(subscribers, len(commits))
    _, server_cpu, bench_cpu = cpu.spent()
    delays, per_event, counts, errors, last_arrival = analyse(subscribers, commits)
    first_due = commits[0].due
    deliveries = max(1, len(delays))
    spread = [max(values) - min(values) for values in per_event.values() if values]
    return Stream(
        rate=rate,
        events=len(commits),
        offered_per_second=(len(commits) - 1) / max(1e-9, commits[-1].done - commits[0].done),
        delivered_per_second=len(delays)
        / max(1, len(subscribers))
        / max(1e-9, last_arrival - first_due),
        deliveries=len(delays),
        p50_ms=common.percentile(delays, 0.50) * 1000,
        p99_ms=common.percentile(delays, 0.99) * 1000,
        max_ms=(delays[-1] if delays else float("nan")) * 1000,
        fan_out_p50_ms=statistics.median(spread) * 1000 if spread else float("nan"),
        missed=counts["missed"],
        duplicates=counts["duplicates"],
        gaps=counts["gaps"],
        resyncs=counts["resyncs"],
        closed=counts["closed"],
        server_cpu_us_per_delivery=server_cpu * 1e6 / deliveries,
        bench_cpu_us_per_delivery=bench_cpu * 1e6 / deliveries,
        commit_lag_max_ms=max(commit.done - commit.due for commit in commits) * 1000,
        errors=errors,
    )


async def time_first_snapshots(
    stream: CallStream, servers: list[Server], team: Team, calls: int, probes: int
) -> tuple[int, list[float]]:
    """Start calls, then time probes subscribers' first SNAPSHOT one after the other."""
    prospects = team.take(calls)
    started = [(prospect, await stream.start(prospect)) for prospect in prospects]
    payloads: dict[bytes, bytes] = {}
    seconds: list[float] = []
    size = 0
    try:
        for number in range(probes):
            subscriber, took = await open_subscriber(
                servers[number % len(servers)], team.token, payloads
            )
            seconds.append(took)
            size = max(size, len(max(payloads, key=len)))
            subscriber.abort()
    finally:
        for prospect, call_log_id in started:
            await stream.end(prospect, call_log_id)
    return size, sorted(seconds)


@contextlib.contextmanager
def serving(options: Options, url: str, count: int, log_path: Path) -> Iterator[list[Server]]:
    """options.processes fresh serve processes on the same database."""
    settings = {
        "MIN_CALL_INTERVAL_SECONDS": "0",
        "WEB_CONCURRENCY": "1",
        **options.server_settings,
    }
    per_process = count // options.processes + SPARE_FILES
    with contextlib.ExitStack() as stack:
        servers = []
        for _ in range(options.processes):
            port = common.free_port()
            pid = stack.enter_context(
                common.server_process(
                    url,
                    port,
                    log_path,
                    settings,
                    preexec_fn=lambda: raise_open_files_limit(per_process),
                    stop_seconds=20,
                )
            )
            servers.append(Server(pid, port))
        yield servers


async def measure(options: Options, url: str, team: Team, count: int, log_path: Path) -> Result:
    """Serve, time first snapshots, subscribe count sockets, stream at each rate."""
    pool = await database.create_pool(
        url, session=database.SessionSettings(min_call_interval_seconds=0), min_size=1, max_size=2
    )
    stream = CallStream(pool, team.agent_id)
    subscribers: list[LeanSubscriber] = []
    common.log(f"N={count}: starting {options.processes} server process(es) ...")
    try:
        with serving(options, url, count, log_path) as servers:
            pids = [server.pid for server in servers]
            try:
                for server in servers:
                    await common.wait_until_healthy(f"http://127.0.0.1:{server.port}", server.pid)
                if not team.token:
                    team.token = await common.sign_in(
                        f"http://127.0.0.1:{servers[0].port}", team.manager_email
                    )
                # Warm the whole path up once (and time the first snapshots), then the baseline.
                warm, _, refused = await open_subscribers(servers, team.token, 2, 2, {})
                if len(warm) < 2:
                    raise RuntimeError(f"the warm-up subscribers could not connect: {refused}")
                await measure_stream(stream, warm, servers, team.take(2), 10)
                await close_subscribers(warm)
                size, first = await time_first_snapshots(
                    stream, servers, team, options.snapshot_calls, options.snapshot_probes
                )
                await asyncio.sleep(SETTLE_SECONDS)
                rss_before = rss(pids)

                common.log(f"N={count}: opening {count} subscribers, {options.batch} at a time ...")
                cpu = Cpu(pids)
                subscribers, connect_snapshots, failed = await open_subscribers(
                    servers, team.token, count, options.batch, {}
                )
                connect_seconds, connect_cpu, _ = cpu.spent()
                await asyncio.sleep(SETTLE_SECONDS)
                rss_after = rss(pids)
                connect_snapshots.sort()
                common.log(
                    f"N={count}: {len(subscribers)} subscribed in {connect_seconds:.1f}s "
                    f"({len(failed)} failed; server CPU {connect_cpu:.1f}s); RSS "
                    f"{rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB"
                )
                if not subscribers:
                    raise RuntimeError(f"no subscriber could connect: {failed[0]!r}")
                result = Result(
                    subscribers=count,
                    processes=options.processes,
                    connected=len(subscribers),
                    failed_connects=len(failed),
                    rss_before_mib=rss_before / 2**20,
                    rss_after_mib=rss_after / 2**20,
                    kib_per_subscriber=(rss_after - rss_before) / len(subscribers) / 1024,
                    connect_seconds=connect_seconds,
                    connect_snapshot_p50_ms=common.percentile(connect_snapshots, 0.5) * 1000,
                    connect_snapshot_p99_ms=common.percentile(connect_snapshots, 0.99) * 1000,
                    snapshot_calls=options.snapshot_calls,
                    snapshot_bytes=size,
                    first_snapshot_p50_ms=common.percentile(first, 0.5) * 1000,
                    first_snapshot_max_ms=(first[-1] if first else float("nan")) * 1000,
                )
                # Millions of captured frames would make each of the client's garbage
                # collections a pause of seconds: none while streaming (frames hold no
                # cycles), and what exists now is never scanned again.
                gc.collect()
                gc.freeze()
                gc.disable()
                for rate in options.rates:
                    calls = max(2, round(options.seconds * rate / 2))
                    common.log(f"N={count}: {2 * calls} events at {rate:g}/s ...")
                    measured = await measure_stream(
                        stream, subscribers, servers, team.take(calls), rate
                    )
                    result.streams.append(measured)
                    common.log(
                        f"N={count} at {rate:g}/s: p50 {measured.p50_ms:.0f} ms, p99 "
                        f"{measured.p99_ms:.0f} ms, {measured.server_cpu_us_per_delivery:.1f} us "
                        f"server CPU per delivery, missed {measured.missed}, resyncs "
                        f"{measured.resyncs}"
                    )
                    await asyncio.sleep(SETTLE_SECONDS)
                await close_subscribers(subscribers)
                subscribers = []
                return result
            finally:
                gc.enable()
                gc.unfreeze()
                for subscriber in subscribers:
                    subscriber.abort()
    finally:
        await pool.close()


async def measure_all(options: Options, url: str, team: Team, log_path: Path) -> list[Result]:
    """Each N in turn, each on fresh servers."""
    return [await measure(options, url, team, count, log_path) for count in options.subscribers]


# --- reporting -------------------------------------------------------------------------


def table(results: list[Result]) -> str:
    """The results as a fixed-width table: one row per N and rate."""
    header = (
        f"{'subs':>6} {'procs':>5} {'offered':>7} {'deliv':>6} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'max ms':>7} {'us/sub/ev':>9} {'KiB/sub':>7} {'missed':>6} {'dup':>4} {'gaps':>4} "
        f"{'resync':>6} {'1st snap':>8}"
    )
    lines = [header, "-" * len(header)]
    for result in results:
        for stream in result.streams:
            lines.append(
                f"{result.connected:>6} {result.processes:>5} "
                f"{stream.offered_per_second:>7.2f} {stream.delivered_per_second:>6.2f} "
                f"{stream.p50_ms:>7.1f} {stream.p99_ms:>7.1f} {stream.max_ms:>7.1f} "
                f"{stream.server_cpu_us_per_delivery:>9.1f} {result.kib_per_subscriber:>7.1f} "
                f"{stream.missed:>6} {stream.duplicates:>4} {stream.gaps:>4} "
                f"{stream.resyncs:>6} {result.first_snapshot_p50_ms:>6.1f}ms"
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
    print(
        f"stream: calls started and ended on distinct prospects, committed from asyncpg at "
        f"fixed rates for about {options.seconds:g}s each; fresh server processes per N "
        f"({options.processes} on one database); subscribers opened {options.batch} at a time; "
        f"server settings {options.server_settings or 'default'}"
        + (f"; everything at niceness {options.nice}." if options.nice else ".")
    )
    print()
    print(table(results))
    print()
    print(
        "offered: commits per second; deliv: events per second each subscriber received "
        "(from the first commit to the last receipt). Delay = receipt minus `at` "
        "(clock_timestamp() just before commit) over every (subscriber, event) pair. "
        "us/sub/ev: server CPU over the stream per delivered event per subscriber. KiB/sub: "
        "server RSS growth per idle subscriber. missed: pairs never delivered; dup: pairs "
        "delivered twice; gaps: numbers skipped; resync: SNAPSHOTs after the first. "
        f"1st snap: subscribe to SNAPSHOT with {options.snapshot_calls} active calls, median "
        f"of {options.snapshot_probes}."
    )
    for result in results:
        notes = [
            f"subscribed in {result.connect_seconds:.1f}s (SNAPSHOT at connect p50 "
            f"{result.connect_snapshot_p50_ms:.0f} ms, p99 {result.connect_snapshot_p99_ms:.0f} "
            f"ms)",
            f"RSS {result.rss_before_mib:.1f} -> {result.rss_after_mib:.1f} MiB",
            f"first SNAPSHOT of {result.snapshot_calls} calls ({result.snapshot_bytes} bytes) "
            f"p50 {result.first_snapshot_p50_ms:.1f} ms, max {result.first_snapshot_max_ms:.1f} ms",
        ]
        if result.failed_connects:
            notes.append(f"{result.failed_connects} subscribers failed to connect")
        print(f"N={result.subscribers}: " + "; ".join(notes))
        for stream in result.streams:
            print(
                f"N={result.subscribers} at {stream.rate:g}/s: {stream.events} events; fan-out "
                f"(first to last subscriber) p50 {stream.fan_out_p50_ms:.0f} ms; bench CPU "
                f"{stream.bench_cpu_us_per_delivery:.1f} us per delivery; commits late by up "
                f"to {stream.commit_lag_max_ms:.0f} ms; {stream.closed} sockets closed"
            )
            for error in stream.errors:
                print(f"N={result.subscribers} at {stream.rate:g}/s: unexpected: {error}")


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
        "--rates", default="5", help="comma-separated events (commits) per second, fixed"
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="how long each rate runs")
    parser.add_argument(
        "--processes", type=int, default=1, help="serve processes on one database (1 or 2)"
    )
    parser.add_argument("--batch", type=int, default=200, help="subscribers opened at once")
    parser.add_argument(
        "--snapshot-calls", type=int, default=500, help="active calls for the first-SNAPSHOT probe"
    )
    parser.add_argument(
        "--snapshot-probes", type=int, default=20, help="subscribers timed to their first SNAPSHOT"
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run this process, PostgreSQL and the servers at this niceness (negative, as "
        "root: ahead of whatever else the machine runs, to see the figures of a machine "
        "of their own)",
    )
    parser.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment setting for the servers (e.g. WS_COMPRESSION=1); repeatable",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    try:
        counts = [int(part) for part in args.subscribers.split(",") if part.strip()]
        rates = [float(part) for part in args.rates.split(",") if part.strip()]
    except ValueError:
        parser.error("--subscribers and --rates take numbers separated by commas")
    if not counts or min(counts) < 1 or not rates or min(rates) <= 0:
        parser.error("--subscribers and --rates must be positive")
    if args.seconds <= 0 or args.batch < 1 or args.processes < 1:
        parser.error("--seconds, --batch and --processes must be positive")
    settings = {}
    for setting in args.server:
        name, _, value = setting.partition("=")
        settings[name] = value
    return Options(
        subscribers=counts,
        rates=rates,
        seconds=args.seconds,
        processes=args.processes,
        batch=args.batch,
        snapshot_calls=args.snapshot_calls,
        snapshot_probes=args.snapshot_probes,
        nice=args.nice,
        server_settings=settings,
        json=args.json,
    )


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when installed (as uvicorn does); SIGTERM cancels like Ctrl-C."""
    return common.run(coroutine, common.event_loop_factory())


def main(argv: list[str] | None = None) -> int:
    """Set up, measure, report, and tear everything down whatever happens."""
    options = parse_options(argv)
    if options.nice:
        os.nice(options.nice)  # inherited by PostgreSQL and the servers
    wanted = max(options.subscribers) + SPARE_FILES
    limit = raise_open_files_limit(wanted)
    if limit < wanted:
        common.log(f"the open-files limit is {limit}, below the {wanted} this run needs")
        return 2
    return common.run_benchmark("cf-fanout-", DATABASE_NAME, partial(benchmark, options))


def benchmark(options: Options, postgres: common.TemporaryPostgres, url: str) -> int:
    """Seed the database, then measure each N on fresh servers and report; the exit status."""
    per_size = (
        2
        + options.snapshot_calls
        + sum(max(2, round(options.seconds * rate / 2)) for rate in options.rates)
    )
    prospects = per_size * len(options.subscribers)
    common.log(f"seeding {prospects} prospects ...")
    team = run(seed(url, prospects))
    results = run(measure_all(options, url, team, postgres.directory / "server.log"))
    report(options, results)
    failed = any(
        s.missed or s.resyncs or s.duplicates or s.gaps or r.failed_connects
        for r in results
        for s in r.streams
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
