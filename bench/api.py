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
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from uuid import UUID

import asyncpg
import common
import httpx

from resolvers.auth import hash_token
from sql import database
from sql.queries import QUERIES

DATABASE_NAME = "callfloor_bench"
PAGE_SIZE = 50
HISTORY_SIZE = 5
# The newest prospects get call histories and assignments, so the page the readers
# fetch (the newest 50) has something in every nested field.
DECORATED_PROSPECTS = 1000
ACTIVE_CALLS_ON_PAGE = 5

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
START_CALL_MUTATION = """
mutation Start($prospectId: ID!) {
  startCall(prospectId: $prospectId) { activeCallId callLogId }
}
"""

CALLS_SINCE = """
SELECT count(*) FROM call_logs
WHERE prospect_id = ANY($1::uuid[]) AND outcome = $2 AND started_at >= $3
"""
ACTIVE_CALLS_OF = "SELECT count(*) FROM active_calls WHERE prospect_id = ANY($1::uuid[])"


# --- data ------------------------------------------------------------------------------


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
    # This measures the framework, not the dialing rules: calls may be made at any hour
    # and the same prospect is called over and over, so open the hours and lift caps.
    await common.migrate_database(url, common.OPEN_CALLING_HOURS, common.LIFT_ATTEMPT_CAPS)

    rng = random.Random(5)
    pool = await database.create_pool(
        url, session=database.SessionSettings(min_call_interval_seconds=0), min_size=1, max_size=4
    )
    try:
        manager = await common.create_bench_user(
            pool, "manager@bench.test", "Bench Manager", "manager"
        )
        agents: list[Agent] = []
        for number in range(1, agent_count + 1):
            email = f"agent{number}@bench.test"
            record = await common.create_bench_user(pool, email, f"Bench Agent {number}", "agent")
            agents.append(Agent(email=email, id=record["id"]))
        agent_ids = [agent.id for agent in agents]

        now = datetime.now(UTC)
        companies = ["Acme Corp", "Globex", "Initech", "Umbrella", "Hooli", None]
        async with pool.acquire() as connection, connection.transaction():
            prospects = await common.insert_prospects(connection, prospect_count, now, companies)
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
            await connection.execute(
                common.INSERT_CALL_LOGS, *map(list, zip(*history, strict=True))
            )
            await connection.execute(common.UPDATE_LAST_CALL)

            assigned = [row["id"] for index, row in enumerate(newest) if index % 3 == 0]
            await connection.execute(
                common.INSERT_ASSIGNMENTS,
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
                common.INSERT_ASSIGNMENTS,
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


# --- measuring -------------------------------------------------------------------------


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


Operation = Callable[[], Awaitable[None]]


async def drive(
    scenario: str,
    path: str,
    operations: list[Operation],
    seconds: float,
    warmup: float,
    meter: common.CpuMeter,
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
    bench_cpu, server_cpu, postgres_cpu = common.CpuMeter.spent(
        readings["before"], readings["after"]
    )
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
        p50_ms=common.percentile(latencies, 0.50) * 1000,
        p99_ms=common.percentile(latencies, 0.99) * 1000,
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


async def page_via_asyncpg(pool: asyncpg.Pool, token_hash: bytes) -> dict[str, int]:
    """The statements the server runs for the page query, in the server's order."""
    await common.look_up_session(pool, token_hash)
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
    await common.look_up_session(pool, token_hash)
    started = await pool.fetchrow(QUERIES["start_call"], prospect_id, agent.id, None, None)
    assert started is not None
    await common.end_call_via_asyncpg(
        pool, token_hash, prospect_id, started["call_log_id"], agent.id
    )


async def cycle_via_graphql(client: httpx.AsyncClient, agent: Agent) -> None:
    """startCall then endCall as the agent, over HTTP."""
    prospect_id = str(agent.prospects["graphql"])
    started = await common.graphql(client, START_CALL_MUTATION, {"prospectId": prospect_id})
    await common.end_call_via_graphql(client, prospect_id, started["startCall"]["callLogId"])


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
    options: Options, url: str, base_url: str, seeded: Seeded, meter: common.CpuMeter
) -> tuple[list[Result], list[Check]]:
    """Both scenarios through both paths, GraphQL first; returns results and checks."""
    checks: list[Check] = []
    async with common.http_client(base_url) as client:
        for agent in seeded.agents:
            data = await common.graphql(
                client, common.LOGIN_MUTATION, {"email": agent.email, "password": common.PASSWORD}
            )
            agent.token = data["login"]["token"]
    readers = [seeded.agents[index % len(seeded.agents)] for index in range(options.clients)]

    pool = await database.create_pool(
        url,
        session=database.SessionSettings(min_call_interval_seconds=0),
        min_size=2,
        max_size=options.pool_size,
    )
    clients: list[httpx.AsyncClient] = []
    try:
        results: list[Result] = []

        # (a) the page
        clients = [common.http_client(base_url, reader.token) for reader in readers]
        graphql_page = summarize_page(
            await common.graphql(clients[0], PAGE_QUERY, {"first": PAGE_SIZE})
        )
        asyncpg_page = await page_via_asyncpg(pool, hash_token(readers[0].token))
        same = graphql_page == asyncpg_page
        checks.append(Check(f"page via graphql: {graphql_page}", ok=same))
        checks.append(Check(f"page via asyncpg: {asyncpg_page}", ok=same))

        def page_operation(client: httpx.AsyncClient) -> Operation:
            async def operation() -> None:
                await common.graphql(client, PAGE_QUERY, {"first": PAGE_SIZE})

            return operation

        def page_sql_operation(token_hash: bytes) -> Operation:
            async def operation() -> None:
                await page_via_asyncpg(pool, token_hash)

            return operation

        common.log(f"page: graphql, {options.clients} clients ...")
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
        common.log(f"page: asyncpg, {options.clients} tasks ...")
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
        clients = [common.http_client(base_url, agent.token) for agent in seeded.agents]
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

        common.log(f"call cycle: graphql, {len(seeded.agents)} agents ...")
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
        common.log(f"call cycle: asyncpg, {len(seeded.agents)} tasks ...")
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
            logged = await pool.fetchval(CALLS_SINCE, ids, common.OUTCOME, began)
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
            "machine": common.machine_facts(),
            "options": asdict(options),
            "data": asdict(seeded) | {"agents": len(seeded.agents)},
            "results": [asdict(result) for result in results],
            "ratios": ratios(results),
            "checks": [asdict(check) for check in checks],
        }
        print(json.dumps(document, indent=2))
        return
    print(common.machine_note())
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
    if any(result.operations < common.FEW_OPERATIONS for result in results):
        print(
            f"note: fewer than {common.FEW_OPERATIONS} operations in a window; use more --seconds"
        )
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


def main(argv: list[str] | None = None) -> int:
    """Set up, measure, report, and tear everything down whatever happens."""
    options = parse_options(argv)
    return common.run_benchmark("cf-bench-", DATABASE_NAME, partial(benchmark, options))


def benchmark(options: Options, postgres: common.TemporaryPostgres, url: str) -> int:
    """Seed the database, serve it, measure and report; the exit status."""
    common.log(f"seeding {options.prospects} prospects and {options.agents} agents ...")
    seeded = common.run(seed(url, options.prospects, options.agents))

    port = common.free_port()
    base_url = f"http://127.0.0.1:{port}"
    common.log(f"starting the server on {base_url} ...")
    server_log = postgres.directory / "server.log"
    server_settings = {
        "MIN_CALL_INTERVAL_SECONDS": "0",
        "DB_POOL_MIN_SIZE": "2",
        "DB_POOL_MAX_SIZE": str(options.pool_size),
    }
    with common.server_process(url, port, server_log, server_settings) as server_pid:
        common.run(common.wait_until_healthy(base_url, server_pid))
        meter = common.CpuMeter(server_pid, postgres.postmaster_pid(), DATABASE_NAME)
        results, checks = common.run(measure(options, url, base_url, seeded, meter))
    report(options, results, checks, seeded)
    failed = any(result.errors for result in results) or not all(c.ok for c in checks)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
