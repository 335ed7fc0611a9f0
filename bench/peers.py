"""Reads against PostGraphile: the same five reads from callfloor and from PostGraphile v4.

Starts one embedded PostgreSQL in a temporary directory, migrates it and seeds 10,200
prospects, 50,000 past calls, live assignments, status changes and a few active calls.
Then two servers serve that one database side by side: ours (`python server.py serve`, one
uvicorn worker) and PostGraphile 4.14.1 (npm installs it into bench/.peers/ on first use).
Each read is written once per server so that both return the same data, and that is
checked, value by value, before anything is measured:

    (a) prospect        one prospect with callHistory(first: 5)
    (b) page            50 prospects, four scalar fields
    (c) page, nested    50 prospects with activeCall, assignment and callHistory(first: 5)
    (d) active calls    every active call, with the prospect's and the caller's names
    (e) status history  one prospect's statusHistory(first: 20)

Both servers get the same load: a closed loop of --clients keep-alive connections for
--seconds per read per server, after --warmup seconds (wrk when installed, else a lean
asyncio client). Per read and server: requests/s, p50/p99 latency, and CPU per request of
the server process and of the PostgreSQL backends it connected (told apart by
application_name), with the callfloor/PostGraphile ratio of each.

PostGraphile runs as `postgraphile --connection <url>&application_name=postgraphile
--schema public --host 127.0.0.1 --port <free> --disable-default-mutations
--disable-query-log --disable-graphiql --max-pool-size <--pool-size>` with
NODE_ENV=production: the default inflector (no simplify plugin), no --watch, no JWT, so
anonymous; our server needs a bearer token (an agent's, from the login mutation) and looks
its session up on every request, as in production. Where PostGraphile has no field of the
same meaning, the documents use one that returns the same data on this seed: a live
assignment is `leadAssignmentsByProspectId(condition: {active: true})` (no seeded
assignment has lapsed), and orderings that our server applies implicitly are spelled out.

--search measures callfloor alone (PostGraphile has no such filter) on a database of
1,000,000 prospects: prospects(first: 20, filter: ...) per kind of term (rare, absent,
common, a full name, email, company, phone digits written several ways, digits of middling
frequency, one- and two-letter terms, words that are common but never adjacent), per
filter (assignedTo with lapsed and inactive assignments beside the live ones, a rare and a
common status), their combinations, and later pages through the cursor (after).

Usage: .venv/bin/python bench/peers.py [--seconds 10] [--clients 8] [--reads abcde]
                                     [--load auto|wrk|python] [--search]

Compare the ratios of one run: both servers share the machine and the moment; absolute
figures vary between machines and runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from uuid import UUID

import asyncpg
import common

DATABASE_NAME = "callfloor_peers"
POSTGRAPHILE_VERSION = "4.14.1"
PEERS_DIRECTORY = Path(__file__).resolve().parent / ".peers"
POSTGRAPHILE_CLI = PEERS_DIRECTORY / "node_modules" / "postgraphile" / "cli.js"
# Each client names itself, so PostgreSQL's CPU can be split between the servers.
POSTGRAPHILE_APPLICATION = "postgraphile"
BENCH_APPLICATION = "callfloor-bench"

PROSPECTS = 10_200
CALL_LOGS = 50_000
PAGE_SIZE = 50
DECORATED_PROSPECTS = 1_000
ACTIVE_CALLS = 20
ACTIVE_CALLS_ON_PAGE = 5
STATUS_CHANGES_OF_ONE = 30
READER = "reader@bench.test"
MANAGER = "manager@bench.test"
AGENTS = 8
COMPANIES = ("Acme Corp", "Globex", "Initech", "Umbrella", "Hooli", None)
STATUS_ROUNDS = ("Attempted", "Contacted", "Callback")

SEARCH_PROSPECTS = 1_000_000
SEARCH_PAGE_SIZE = 20


# --- the reads -------------------------------------------------------------------------

Canonical = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class Read:
    """One read, written for each server, and how to bring both answers to one shape."""

    key: str
    title: str
    callfloor: str
    postgraphile: str
    canonical_callfloor: Canonical
    canonical_postgraphile: Canonical
    describe: Callable[[Any], str]

    def document(self, server: str) -> str:
        """The read as this server is asked it."""
        return self.callfloor if server == "callfloor" else self.postgraphile

    def canonical(self, server: str, data: dict[str, Any]) -> Any:
        """This server's answer in the shape both share."""
        shape = self.canonical_callfloor if server == "callfloor" else self.canonical_postgraphile
        return shape(data)


def instant(value: str | None) -> str | None:
    """A timestamp in UTC, ISO 8601, whichever zone and precision a server wrote it in."""
    if value is None:
        return None
    return datetime.fromisoformat(value).astimezone(UTC).isoformat()


def calls_of(nodes: list[dict[str, Any]]) -> list[list[Any]]:
    """Calls as [id, started at, outcome]."""
    return [[call["id"], instant(call["startedAt"]), call["outcome"]] for call in nodes]


def prospect_of(node: dict[str, Any]) -> list[Any]:
    """A prospect's four scalar fields."""
    return [node["id"], node["name"], node["phone"], node["status"]]


def nested_of(
    node: dict[str, Any], active: Any, assignments: list[dict[str, Any]], calls: list[Any]
) -> dict[str, Any]:
    """A prospect of read (c) in one shape."""
    return {
        "prospect": prospect_of(node),
        "activeCall": active and [active["id"], active["callerId"], instant(active["startedAt"])],
        "assignment": [
            [assignment["agentId"], instant(assignment["expiresAt"])] for assignment in assignments
        ],
        "calls": calls_of(calls),
    }


READS = (
    Read(
        key="a",
        title="(a) prospect + callHistory(5)",
        callfloor="""
query Prospect($id: ID!) {
  prospect(id: $id) {
    id name phone status
    callHistory(first: 5) { id startedAt outcome }
  }
}""",
        postgraphile="""
query Prospect($id: UUID!) {
  prospectById(id: $id) {
    id name phone status
    callLogsByProspectId(first: 5, orderBy: [STARTED_AT_DESC]) {
      nodes { id startedAt outcome }
    }
  }
}""",
        canonical_callfloor=lambda data: {
            "prospect": prospect_of(data["prospect"]),
            "calls": calls_of(data["prospect"]["callHistory"]),
        },
        canonical_postgraphile=lambda data: {
            "prospect": prospect_of(data["prospectById"]),
            "calls": calls_of(data["prospectById"]["callLogsByProspectId"]["nodes"]),
        },
        describe=lambda shape: f"1 prospect, {len(shape['calls'])} calls",
    ),
    Read(
        key="b",
        title="(b) page of 50, 4 fields",
        callfloor="""
query Page($first: Int!) {
  prospects(first: $first) { edges { node { id name phone status } } }
}""",
        postgraphile="""
query Page($first: Int!) {
  allProspects(first: $first, orderBy: [CREATED_AT_DESC, ID_DESC]) {
    edges { node { id name phone status } }
  }
}""",
        canonical_callfloor=lambda data: [
            prospect_of(edge["node"]) for edge in data["prospects"]["edges"]
        ],
        canonical_postgraphile=lambda data: [
            prospect_of(edge["node"]) for edge in data["allProspects"]["edges"]
        ],
        describe=lambda shape: f"{len(shape)} prospects",
    ),
    Read(
        key="c",
        title="(c) page of 50, nested",
        callfloor="""
query PageNested($first: Int!) {
  prospects(first: $first) {
    edges {
      node {
        id name phone status
        activeCall { id callerId startedAt }
        assignment { agentId expiresAt }
        callHistory(first: 5) { id startedAt outcome }
      }
    }
  }
}""",
        postgraphile="""
query PageNested($first: Int!) {
  allProspects(first: $first, orderBy: [CREATED_AT_DESC, ID_DESC]) {
    edges {
      node {
        id name phone status
        activeCallByProspectId { id callerId startedAt }
        leadAssignmentsByProspectId(condition: {active: true}) {
          nodes { agentId expiresAt }
        }
        callLogsByProspectId(first: 5, orderBy: [STARTED_AT_DESC]) {
          nodes { id startedAt outcome }
        }
      }
    }
  }
}""",
        canonical_callfloor=lambda data: [
            nested_of(
                node,
                node["activeCall"],
                [node["assignment"]] if node["assignment"] else [],
                node["callHistory"],
            )
            for node in (edge["node"] for edge in data["prospects"]["edges"])
        ],
        canonical_postgraphile=lambda data: [
            nested_of(
                node,
                node["activeCallByProspectId"],
                node["leadAssignmentsByProspectId"]["nodes"],
                node["callLogsByProspectId"]["nodes"],
            )
            for node in (edge["node"] for edge in data["allProspects"]["edges"])
        ],
        describe=lambda shape: (
            f"{len(shape)} prospects, {sum(bool(p['activeCall']) for p in shape)} active calls, "
            f"{sum(len(p['assignment']) for p in shape)} assignments, "
            f"{sum(len(p['calls']) for p in shape)} calls"
        ),
    ),
    Read(
        key="d",
        title="(d) activeCalls",
        callfloor="""
query ActiveCalls {
  activeCalls { id prospectId callerId startedAt prospectName callerName }
}""",
        postgraphile="""
query ActiveCalls {
  allActiveCalls(orderBy: [STARTED_AT_ASC, ID_ASC]) {
    nodes {
      id prospectId callerId startedAt
      prospectByProspectId { name }
      userByCallerId { name }
    }
  }
}""",
        canonical_callfloor=lambda data: [
            [
                call["id"],
                call["prospectId"],
                call["callerId"],
                instant(call["startedAt"]),
                call["prospectName"],
                call["callerName"],
            ]
            for call in data["activeCalls"]
        ],
        canonical_postgraphile=lambda data: [
            [
                call["id"],
                call["prospectId"],
                call["callerId"],
                instant(call["startedAt"]),
                call["prospectByProspectId"]["name"],
                call["userByCallerId"]["name"],
            ]
            for call in data["allActiveCalls"]["nodes"]
        ],
        describe=lambda shape: f"{len(shape)} active calls",
    ),
    Read(
        key="e",
        title="(e) statusHistory(20)",
        callfloor="""
query StatusHistory($id: ID!) {
  prospect(id: $id) {
    statusHistory(first: 20) { id oldStatus newStatus changedById createdAt }
  }
}""",
        postgraphile="""
query StatusHistory($id: UUID!) {
  prospectById(id: $id) {
    prospectStatusLogsByProspectId(first: 20, orderBy: [CREATED_AT_DESC, ID_DESC]) {
      nodes { id oldStatus newStatus changedBy createdAt }
    }
  }
}""",
        canonical_callfloor=lambda data: [
            [
                str(change["id"]),
                change["oldStatus"],
                change["newStatus"],
                change["changedById"],
                instant(change["createdAt"]),
            ]
            for change in data["prospect"]["statusHistory"]
        ],
        canonical_postgraphile=lambda data: [
            [
                str(change["id"]),
                change["oldStatus"],
                change["newStatus"],
                change["changedBy"],
                instant(change["createdAt"]),
            ]
            for change in data["prospectById"]["prospectStatusLogsByProspectId"]["nodes"]
        ],
        describe=lambda shape: f"{len(shape)} status changes",
    ),
)


# --- seeding ---------------------------------------------------------------------------

# The status log trigger writes a row for each change, as app.user_id made it.
SET_STATUS = "UPDATE prospects SET status = $2 WHERE id = ANY($1::uuid[])"
ACT_AS = "SELECT set_config('app.user_id', $1, false)"
START_CALL = "SELECT call_log_id FROM start_call($1, $2, NULL, NULL)"
OUTCOMES = "SELECT name FROM dispositions WHERE name <> 'Expired' ORDER BY position"
# The seed's calls are a minute old at the newest; the active calls start on them anyway.
SEEDING_SETTINGS = {"application_name": BENCH_APPLICATION, "app.min_call_interval_seconds": "0"}


@dataclass
class Seeded:
    """What the reads need from the seeded database."""

    prospect_id: UUID
    prospects: int = 0
    call_logs: int = 0
    assignments: int = 0
    active_calls: int = 0
    status_changes: int = 0


async def seed_reads(url: str) -> Seeded:
    """Migrate, then users, prospects, past calls, assignments, status changes, active calls."""
    # Reads are measured, not the dialing rules: calls may start at any hour.
    await common.migrate_database(url, common.OPEN_CALLING_HOURS, common.LIFT_ATTEMPT_CAPS)
    connection = await asyncpg.connect(url, server_settings=SEEDING_SETTINGS)
    try:
        rng = random.Random(7)
        now = datetime.now(UTC)
        async with connection.transaction():
            users = await common.insert_users(
                connection,
                [
                    (MANAGER, "Bench Manager", "manager"),
                    (READER, "Bench Reader", "agent"),
                    *(
                        (f"agent{n}@bench.test", f"Bench Agent {n}", "agent")
                        for n in range(1, AGENTS + 1)
                    ),
                ],
            )
            manager = users[MANAGER]
            agents = [user_id for email, user_id in users.items() if email.startswith("agent")]
            prospects = await common.insert_prospects(connection, PROSPECTS, now, COMPANIES)
            target = prospects[0]  # the newest: on the first page too

            # Every prospect but each tenth has calls; the newest has at least ten. Start
            # times are distinct, so "newest first" is one order whoever sorts.
            outcomes = [row["name"] for row in await connection.fetch(OUTCOMES)]
            called = [row for index, row in enumerate(prospects) if index % 10 != 9]
            history: list[tuple[UUID, UUID, str, datetime, str, int]] = []
            for index in range(CALL_LOGS):
                row = target if index < 10 else called[rng.randrange(len(called))]
                started = now - timedelta(seconds=53 * (index + 1) + rng.randrange(53))
                history.append(
                    (
                        row["id"],
                        rng.choice(agents),
                        row["phone"],
                        started,
                        rng.choice(outcomes),
                        rng.randrange(900),
                    )
                )
            await connection.execute(
                common.INSERT_CALL_LOGS, *map(list, zip(*history, strict=True))
            )
            await connection.execute(common.UPDATE_LAST_CALL)

            # A third of the newest are assigned, half of those until next week: all live.
            newest = prospects[:DECORATED_PROSPECTS]
            assigned = [row["id"] for index, row in enumerate(newest) if index % 3 == 0]
            await connection.execute(
                common.INSERT_ASSIGNMENTS,
                assigned,
                [rng.choice(agents) for _ in assigned],
                [manager] * len(assigned),
                [None if index % 2 else now + timedelta(days=7) for index in range(len(assigned))],
            )

            # Status changes through the trigger, as a manager made them.
            await connection.execute(ACT_AS, str(manager))
            changed = 0
            for round_number, status in enumerate(STATUS_ROUNDS):
                ids = [row["id"] for row in newest[round_number::2]]
                await connection.execute(SET_STATUS, ids, status)
                changed += len(ids)

        # The status history read wants more than one page: one change per transaction, so
        # each has its own time.
        await connection.execute(ACT_AS, str(users[READER]))
        for number in range(STATUS_CHANGES_OF_ONE):
            status = ("New", "Attempted", "Contacted")[number % 3]
            await connection.execute(SET_STATUS, [target["id"]], status)
        changed += STATUS_CHANGES_OF_ONE

        # Calls in progress, five on the first page, started as the server starts them, by
        # the manager (assignments do not bind supervisors).
        on_page = [
            prospects[1 + index * (PAGE_SIZE // ACTIVE_CALLS_ON_PAGE)]["id"]
            for index in range(ACTIVE_CALLS_ON_PAGE)
        ]
        elsewhere = [
            prospects[PAGE_SIZE + index * 97]["id"]
            for index in range(ACTIVE_CALLS - ACTIVE_CALLS_ON_PAGE)
        ]
        for prospect_id in on_page + elsewhere:
            await connection.fetchval(START_CALL, prospect_id, manager)
        await connection.execute("ANALYZE")
        return Seeded(
            prospect_id=target["id"],
            prospects=len(prospects),
            call_logs=len(history),
            assignments=len(assigned),
            active_calls=len(on_page) + len(elsewhere),
            status_changes=changed,
        )
    finally:
        await connection.close()


# --- the servers -----------------------------------------------------------------------


@dataclass
class Server:
    """A GraphQL server under test: where it listens and who it runs as."""

    name: str
    port: int
    pid: int
    token: str | None = None

    @property
    def base_url(self) -> str:
        """Its HTTP root."""
        return f"http://127.0.0.1:{self.port}"


def postgraphile_problem() -> str | None:
    """Why PostGraphile cannot run here (no node or npm, or npm failed), else None;
    installs postgraphile@4.14.1 into bench/.peers/ when it is not there yet."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return "node and npm are needed for PostGraphile and are not on PATH"
    package = POSTGRAPHILE_CLI.parent / "package.json"
    if package.exists() and json.loads(package.read_text())["version"] == POSTGRAPHILE_VERSION:
        return None
    common.log(f"installing postgraphile@{POSTGRAPHILE_VERSION} into {PEERS_DIRECTORY} ...")
    PEERS_DIRECTORY.mkdir(exist_ok=True)
    finished = subprocess.run(
        [
            npm,
            "install",
            "--prefix",
            str(PEERS_DIRECTORY),
            "--no-audit",
            "--no-fund",
            "--save-exact",
            f"postgraphile@{POSTGRAPHILE_VERSION}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if finished.returncode != 0:
        return "npm install failed:\n" + finished.stderr[-2000:]
    return None


def postgraphile_connection(url: str) -> str:
    """Our database URL as node-postgres reads it, with PostGraphile's application_name."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query["application_name"] = POSTGRAPHILE_APPLICATION
    return urlunsplit(parts._replace(scheme="postgres", query=urlencode(query)))


@contextmanager
def postgraphile_process(url: str, port: int, log_path: Path, pool_size: int) -> Iterator[int]:
    """PostGraphile on 127.0.0.1:port over the database; yields its pid."""
    command = [
        shutil.which("node") or "node",
        str(POSTGRAPHILE_CLI),
        "--connection",
        postgraphile_connection(url),
        "--schema",
        "public",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--disable-default-mutations",
        "--disable-query-log",
        "--disable-graphiql",
        "--max-pool-size",
        str(pool_size),
    ]
    environment = {**os.environ, "NODE_ENV": "production"}
    with common.child_process(command, log_path, environment, cwd=PEERS_DIRECTORY) as pid:
        yield pid


# --- loads -----------------------------------------------------------------------------

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
{authorization}
failed = 0
function response(status, headers, body)
  if status ~= 200 or string.find(body, '"errors"', 1, true) then
    failed = failed + 1
  end
end
local threads = {{}}
function setup(thread)
  table.insert(threads, thread)
end
function done(summary, latency, requests)
  local failed_total = 0
  for _, thread in ipairs(threads) do
    failed_total = failed_total + thread:get("failed")
  end
  local e = summary.errors
  io.write(string.format("wrk-result %d %d %d %d %.1f %.1f\\n", summary.requests,
    summary.duration, failed_total, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""
WRK_RESULT = re.compile(r"wrk-result (\d+) (\d+) (\d+) (\d+) ([\d.]+) ([\d.]+)")


@dataclass
class Measured:
    """One read (or search) through one server."""

    read: str
    server: str
    load: common.Load
    server_cpu_ms: float
    postgres_cpu_ms: float
    bench_cpu_ms: float


class Driver:
    """Puts the same closed-loop load on any server and reads the CPU it cost."""

    def __init__(self, gauge: common.CpuGauge, directory: Path, wrk: str | None) -> None:
        self.gauge = gauge
        self.directory = directory
        self.wrk = wrk

    async def measure(
        self,
        server: Server,
        name: str,
        body: bytes,
        postgres_groups: Callable[[common.CpuSpent], float],
        clients: int,
        seconds: float,
        warmup: float,
        min_requests: int = 0,
    ) -> Measured:
        """Load one server with one request body; what it completed and what it cost."""
        samples: list[common.CpuSample] = []

        async def sample() -> None:
            samples.append(await self.gauge.read())

        if self.wrk is not None:
            load = await self._wrk(server, name, body, clients, seconds, warmup, sample)
        else:
            connections = [
                common.GraphQLConnection("127.0.0.1", server.port, server.token)
                for _ in range(clients)
            ]
            try:
                load = await common.closed_loop(
                    [partial(connection.execute, body) for connection in connections],
                    seconds,
                    warmup,
                    sample,
                    sample,
                    min_operations=min_requests,
                )
            finally:
                for connection in connections:
                    await connection.close()
        spent = common.CpuGauge.spent(samples[0], samples[1])
        per_request = 1000 / load.operations if load.operations else float("nan")
        return Measured(
            read=name,
            server=server.name,
            load=load,
            server_cpu_ms=spent.processes[server.name] * per_request,
            postgres_cpu_ms=postgres_groups(spent) * per_request,
            bench_cpu_ms=spent.bench * per_request,
        )

    async def _wrk(
        self,
        server: Server,
        name: str,
        body: bytes,
        clients: int,
        seconds: float,
        warmup: float,
        sample: Callable[[], Any],
    ) -> common.Load:
        assert self.wrk is not None
        script = self.directory / f"{server.name}-{name}.lua"
        authorization = (
            f'wrk.headers["Authorization"] = "Bearer {server.token}"' if server.token else ""
        )
        script.write_text(WRK_SCRIPT.format(body=body.decode(), authorization=authorization))

        async def run_wrk(duration: float) -> str:
            process = await asyncio.create_subprocess_exec(
                self.wrk or "wrk",
                "-t1",
                f"-c{clients}",
                f"-d{max(1, round(duration))}s",
                "--latency",
                "--timeout",
                "60s",
                "-s",
                str(script),
                f"{server.base_url}/graphql",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            try:
                output, _ = await process.communicate()
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            return output.decode(errors="replace")

        if warmup > 0:
            await run_wrk(warmup)
        await sample()
        output = await run_wrk(seconds)
        await sample()
        match = WRK_RESULT.search(output)
        if match is None:
            raise RuntimeError(f"wrk printed no result:\n{output[-2000:]}")
        requests, duration_us, failed, transport = (int(match.group(n)) for n in range(1, 5))
        return common.Load(
            operations=requests - failed,
            failures=failed + transport,
            seconds=duration_us / 1e6,
            p50_ms=float(match.group(5)) / 1000,
            p99_ms=float(match.group(6)) / 1000,
            first_failure="see the server log" if failed + transport else None,
        )


def callfloor_backends(spent: common.CpuSpent) -> float:
    """PostgreSQL CPU of our server's connections: every client backend of the database
    but PostGraphile's and this script's."""
    others = {POSTGRAPHILE_APPLICATION, BENCH_APPLICATION, common.AUTOVACUUM, common.BACKGROUND}
    return sum(used for group, used in spent.postgres.items() if group not in others)


def postgraphile_backends(spent: common.CpuSpent) -> float:
    """PostgreSQL CPU of PostGraphile's connections."""
    return spent.postgres_of(POSTGRAPHILE_APPLICATION)


BACKENDS_OF = {"callfloor": callfloor_backends, "postgraphile": postgraphile_backends}


# --- verifying -------------------------------------------------------------------------


async def answers(server: Server, document: str, variables: dict[str, Any]) -> dict[str, Any]:
    """One request, answered without errors."""
    connection = common.GraphQLConnection("127.0.0.1", server.port, server.token)
    try:
        return await connection.execute(common.graphql_body(document, variables))
    finally:
        await connection.close()


def first_difference(left: Any, right: Any, path: str = "") -> str:
    """Where two canonical answers first differ, for the error message."""
    if isinstance(left, dict) and isinstance(right, dict):
        for key in sorted(set(left) | set(right)):
            if left.get(key) != right.get(key):
                return first_difference(left.get(key), right.get(key), f"{path}.{key}")
    if isinstance(left, list) and isinstance(right, list):
        if len(left) != len(right):
            return f"{path}: {len(left)} items against {len(right)}"
        for index, (one, other) in enumerate(zip(left, right, strict=True)):
            if one != other:
                return first_difference(one, other, f"{path}[{index}]")
    return f"{path}: {left!r} against {right!r}"


async def verify(
    reads: list[Read], servers: dict[str, Server], variables: dict[str, dict[str, Any]]
) -> list[str]:
    """Ask every server every read once; the same data from each, or ValueError."""
    lines: list[str] = []
    for read in reads:
        shapes: dict[str, Any] = {}
        for name, server in servers.items():
            data = await answers(server, read.document(name), variables[read.key])
            shapes[name] = read.canonical(name, data)
        ours = shapes["callfloor"]
        for name, shape in shapes.items():
            if shape != ours:
                raise ValueError(
                    f"{read.title}: {name} answers differently from callfloor at "
                    + first_difference(ours, shape)
                )
        same = "the same data from both" if len(shapes) > 1 else "callfloor alone"
        lines.append(f"{read.title}: {read.describe(ours)}; {same}")
    return lines


# --- the search mode -------------------------------------------------------------------

FIRST_NAMES = (
    "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara "
    "Richard Susan Joseph Jessica Thomas Sarah Charles Karen Daniel Lisa Matthew Nancy "
    "Anthony Betty Mark Sandra Donald Ashley Steven Kimberly Paul Emily Andrew Donna Joshua "
    "Michelle Kenneth Carol"
)
LAST_NAMES = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez "
    "Lopez Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson "
    "White Harris Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott "
    "Torres Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell "
    "Carter Roberts"
)
SEARCH_COMPANIES = (
    "Acme Corp,Globex,Initech,Umbrella,Hooli,Soylent,Wayne Enterprises,Stark Industries,"
    "Cyberdyne,Tyrell,Wonka,Gringotts,Oscorp,Massive Dynamic,Aperture,Black Mesa,Monarch,"
    "Nakatomi,Prestige Worldwide,Dunder Mifflin"
)
# $1 count, $2 first names (space-separated), $3 last names (same), $4 companies
# (comma-separated), $5 now. Row n is n seconds old; a fifth have no company; one in fifty
# is Contacted, the rest New; phones are +1646 and seven digits, distinct (7919 is prime to
# 10^7).
INSERT_MANY_PROSPECTS = """
WITH lists AS (
    SELECT string_to_array($2, ' ') AS firsts, string_to_array($3, ' ') AS lasts,
           string_to_array($4, ',') AS companies
)
INSERT INTO prospects (name, phone, email, company, status, created_at, updated_at)
SELECT f || ' ' || l,
       '+1646' || lpad(((n::bigint * 7919) % 10000000)::text, 7, '0'),
       lower(f) || '.' || lower(l) || n || '@'
           || (ARRAY['example.com', 'mail.test', 'corp.example'])[1 + n % 3],
       CASE WHEN n % 5 <> 0 THEN companies[1 + n % cardinality(companies)] END,
       CASE WHEN n % 50 = 7 THEN 'Contacted' ELSE 'New' END,
       $5::timestamptz - make_interval(secs => n), $5::timestamptz - make_interval(secs => n)
FROM lists, generate_series(1, $1::int) n,
     LATERAL (SELECT firsts[1 + n % cardinality(firsts)] AS f,
                     lasts[1 + (n / cardinality(firsts)) % cardinality(lasts)] AS l) names
"""
# Rare rows at every age, so a filter that walks the newest first has to go far for them.
INSERT_RARE_PROSPECTS = """
INSERT INTO prospects (name, phone, email, company, status, created_at, updated_at)
SELECT name, phone, email, company, status, $6::timestamptz - make_interval(secs => age),
       $6::timestamptz - make_interval(secs => age)
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $7::int[])
     AS t(name, phone, email, company, status, age)
"""
# $1 agent, $2 manager, $3 the creation times of the prospects to assign, $4 until when
# (NULL: no end), $5 active.
INSERT_MANY_ASSIGNMENTS = """
INSERT INTO lead_assignments (prospect_id, agent_id, assigned_by, expires_at, active)
SELECT id, $1, $2, $4, $5 FROM prospects WHERE created_at = ANY($3::timestamptz[])
"""
# $1 the creation times of the prospects to mark Callback.
SET_CALLBACK = "UPDATE prospects SET status = 'Callback' WHERE created_at = ANY($1::timestamptz[])"
SEARCH_DOCUMENT = """
query Search($filter: ProspectFilter!, $after: String) {
  prospects(first: 20, after: $after, filter: $filter) {
    edges { node { id name phone email company status } }
    pageInfo { hasNextPage endCursor }
  }
}"""


@dataclass(frozen=True)
class SearchKind:
    """One kind of filter, the value that stands for it, and which page of it is asked
    (page 3 is asked with the cursor that ends page 2)."""

    kind: str
    filter: dict[str, str]
    page: int = 1


def search_kinds(agent_id: UUID) -> list[SearchKind]:
    """The kinds measured, each a filter our seed answers in a known way."""
    agent = str(agent_id)
    return [
        SearchKind("rare name (1 row)", {"search": "Zebulon"}),
        SearchKind("absent term (0 rows)", {"search": "Xylophonist"}),
        SearchKind("common name (2% of rows)", {"search": "Smith"}),
        SearchKind("common name, page 5", {"search": "Smith"}, page=5),
        SearchKind("full name (500 rows)", {"search": "Mary Smith"}),
        SearchKind("email fragment (1 row)", {"search": "zebulon.q@"}),
        SearchKind("email domain (1/3 of rows)", {"search": "@mail.test"}),
        SearchKind("company, rare (3 rows)", {"search": "Vandelay"}),
        SearchKind("company, common (5%)", {"search": "Initech"}),
        SearchKind("phone 555-0123", {"search": "555-0123"}),
        SearchKind("phone (212) 555", {"search": "(212) 555"}),
        SearchKind("phone (212) 555, page 2", {"search": "(212) 555"}, page=2),
        SearchKind("phone +1 212 555 0123", {"search": "+1 212 555 0123"}),
        SearchKind("phone 2125550123", {"search": "2125550123"}),
        SearchKind("digits 0123 (~600 rows)", {"search": "0123"}),
        SearchKind("digits 555 (~1% of rows)", {"search": "555"}),
        SearchKind("1 letter, rare (q)", {"search": "q"}),
        SearchKind("2 letters, absent (xq)", {"search": "xq"}),
        SearchKind("words apart (mail test)", {"search": "mail test"}),
        SearchKind("assignedTo (50 live)", {"assignedTo": agent}),
        SearchKind("assignedTo, page 2", {"assignedTo": agent}, page=2),
        SearchKind("status, rare (100 rows)", {"status": "Qualified"}),
        SearchKind("status, rare, page 3", {"status": "Qualified"}, page=3),
        SearchKind("status, common (2%)", {"status": "Contacted"}),
        SearchKind("status + search", {"status": "Contacted", "search": "Smith"}),
        SearchKind("status + rare search", {"status": "Qualified", "search": "Person 42"}),
        SearchKind("assignedTo + status", {"assignedTo": agent, "status": "Callback"}),
        SearchKind("assignedTo + search", {"assignedTo": agent, "search": "example"}),
        SearchKind(
            "assignedTo + status + search",
            {"assignedTo": agent, "status": "Callback", "search": "mail"},
        ),
    ]


async def seed_search(url: str, count: int) -> UUID:
    """Migrate, then count prospects in one statement, a few rare ones at every age and
    150 assignments to the reader (50 live); the reader's id."""
    await common.migrate_database(url, common.OPEN_CALLING_HOURS, common.LIFT_ATTEMPT_CAPS)
    connection = await asyncpg.connect(url, server_settings=SEEDING_SETTINGS)
    try:
        users = await common.insert_users(
            connection,
            [(MANAGER, "Bench Manager", "manager"), (READER, "Bench Reader", "agent")],
        )
        now = datetime.now(UTC)
        started = time.perf_counter()
        await connection.execute(
            INSERT_MANY_PROSPECTS, count, FIRST_NAMES, LAST_NAMES, SEARCH_COMPANIES, now
        )
        common.log(f"  {count} prospects in {time.perf_counter() - started:.1f}s")
        rare: list[tuple[str, str, str | None, str | None, str, int]] = [
            (
                "Zebulon Quixote",
                "+12125550123",
                "zebulon.q@vandelay.example",
                "Vandelay Industries",
                "New",
                count // 2,
            ),
            ("Art Vandelay", "+12125550124", None, "Vandelay Industries", "New", count // 3),
            ("H. E. Pennypacker", "+12125550125", None, "Vandelay Industries", "New", count - 7),
        ]
        rare += [
            (f"Dialed Person {k}", f"+1212555{1000 + k}", None, None, "New", k * (count // 30))
            for k in range(30)
        ]
        rare += [
            (
                f"Qualified Person {k}",
                f"+1917555{1000 + k}",
                None,
                None,
                "Qualified",
                k * (count // 100) + 3,
            )
            for k in range(100)
        ]
        await connection.execute(
            INSERT_RARE_PROSPECTS,
            *(list(column) for column in zip(*[row[:5] for row in rare], strict=True)),
            now,
            [row[5] for row in rare],
        )
        # The reader's 50 live assignments at every age, ten of them Callback; and as many
        # lapsed and as many inactive, which the assignedTo filter must leave out.
        for offset, expires, active in ((11, None, True), (13, now, True), (17, None, False)):
            await connection.execute(
                INSERT_MANY_ASSIGNMENTS,
                users[READER],
                users[MANAGER],
                [now - timedelta(seconds=k * (count // 50) + offset) for k in range(50)],
                expires,
                active,
            )
        await connection.execute(
            SET_CALLBACK, [now - timedelta(seconds=k * (count // 50) + 11) for k in range(0, 50, 5)]
        )
        started = time.perf_counter()
        await connection.execute("VACUUM ANALYZE prospects")
        common.log(f"  VACUUM ANALYZE in {time.perf_counter() - started:.1f}s")
        return users[READER]
    finally:
        await connection.close()


# --- reporting -------------------------------------------------------------------------


def ratio(ours: float, theirs: float) -> str:
    """ours / theirs, or a dash."""
    if not theirs or ours != ours or theirs != theirs:
        return "-"
    return f"{ours / theirs:.2f}"


def reads_table(reads: list[Read], results: list[Measured]) -> str:
    """Per read: each server's figures and the callfloor/PostGraphile ratio."""
    header = (
        f"{'read':<30} {'server':<12} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'fails':>6}"
        f" {'server cpu ms/req':>18} {'pg cpu ms/req':>14}"
    )
    lines = [header, "-" * len(header)]
    by_key = {(result.read, result.server): result for result in results}
    for read in reads:
        first = True
        for server in ("callfloor", "postgraphile"):
            result = by_key.get((read.key, server))
            if result is None:
                continue
            lines.append(
                f"{read.title if first else '':<30} {server:<12} {result.load.per_second:>8.1f}"
                f" {result.load.p50_ms:>8.2f} {result.load.p99_ms:>8.2f}"
                f" {result.load.failures:>6} {result.server_cpu_ms:>18.3f}"
                f" {result.postgres_cpu_ms:>14.3f}"
            )
            first = False
        ours, theirs = by_key.get((read.key, "callfloor")), by_key.get((read.key, "postgraphile"))
        if ours and theirs:
            lines.append(
                f"{'':<30} {'cf/pg':<12} {ratio(ours.load.per_second, theirs.load.per_second):>8}"
                f" {ratio(ours.load.p50_ms, theirs.load.p50_ms):>8}"
                f" {ratio(ours.load.p99_ms, theirs.load.p99_ms):>8} {'':>6}"
                f" {ratio(ours.server_cpu_ms, theirs.server_cpu_ms):>18}"
                f" {ratio(ours.postgres_cpu_ms, theirs.postgres_cpu_ms):>14}"
            )
    return "\n".join(lines)


def search_table(rows: list[tuple[SearchKind, int, bool, Measured]], reader: UUID) -> str:
    """Per kind of filter: what it found and how long it took."""
    header = (
        f"{'kind':<30} {'filter':<44} {'found':>6} {'req/s':>8} {'p50 ms':>9} {'p99 ms':>9}"
        f" {'n':>5} {'server cpu ms':>14} {'pg cpu ms':>10}"
    )
    lines = [header, "-" * len(header)]
    for kind, found, more, result in rows:
        value = json.dumps(kind.filter)[1:-1].replace(str(reader), "reader")
        if len(value) > 44:
            value = value[:41] + "..."
        lines.append(
            f"{kind.kind:<30} {value:<44} {str(found) + ('+' if more else ''):>6}"
            f" {result.load.per_second:>8.2f} {result.load.p50_ms:>9.1f}"
            f" {result.load.p99_ms:>9.1f} {result.load.operations:>5}"
            f" {result.server_cpu_ms:>14.2f} {result.postgres_cpu_ms:>10.2f}"
        )
    return "\n".join(lines)


# --- running ---------------------------------------------------------------------------


@dataclass
class Options:
    """The command line."""

    seconds: float
    warmup: float
    clients: int
    reads: str
    load: str
    pool_size: int
    search: bool
    search_seconds: float
    search_warmup: float
    search_clients: int
    search_min_requests: int
    search_prospects: int


def pick_load(choice: str) -> str | None:
    """The wrk program to use, or None for the asyncio client."""
    wrk = shutil.which("wrk")
    if choice == "wrk" and wrk is None:
        raise SystemExit("--load wrk: wrk is not installed (apt-get install wrk)")
    if choice == "python" or wrk is None:
        if choice == "auto":
            common.log("wrk is not installed: the asyncio client drives the load")
        return None
    return wrk


def server_settings(pool_size: int) -> dict[str, str]:
    """Our server's settings: one worker, the pool PostGraphile gets, no background sweep
    (it would fold the seeded call journal inside some window and not in others)."""
    return {
        "WEB_CONCURRENCY": "1",
        "DB_POOL_MIN_SIZE": "2",
        "DB_POOL_MAX_SIZE": str(pool_size),
        "STALE_CALL_SWEEP_SECONDS": "3600",
    }


def benchmark_reads(options: Options, postgres: common.TemporaryPostgres, url: str) -> int:
    """Seed, serve the database twice, check the reads agree, measure, report."""
    reads = [read for read in READS if read.key in options.reads]
    problem = postgraphile_problem()
    if problem:
        common.log(f"PostGraphile skipped: {problem}")
    wrk = pick_load(options.load)
    common.log(f"seeding {PROSPECTS} prospects and {CALL_LOGS} past calls ...")
    seeded = common.run(seed_reads(url))

    with contextlib.ExitStack() as stack:
        port = common.free_port()
        pid = stack.enter_context(
            common.server_process(
                url, port, postgres.directory / "callfloor.log", server_settings(options.pool_size)
            )
        )
        ours = Server("callfloor", port, pid)
        common.run(common.wait_until_healthy(ours.base_url, pid))
        ours.token = common.run(common.sign_in(ours.base_url, READER))
        servers = {ours.name: ours}
        if problem is None:
            port = common.free_port()
            log_path = postgres.directory / "postgraphile.log"
            pid = stack.enter_context(postgraphile_process(url, port, log_path, options.pool_size))
            theirs = Server("postgraphile", port, pid)
            common.run(
                common.wait_until_answering(
                    theirs.base_url, pid, "POST", "/graphql", {"query": "{ __typename }"}
                )
            )
            servers[theirs.name] = theirs
        checks, results = common.run(
            measure_reads(options, url, reads, servers, seeded, postgres, wrk),
            common.event_loop_factory(),
        )
    print(common.machine_note())
    print(
        f"data: {seeded.prospects} prospects, {seeded.call_logs} past calls, "
        f"{seeded.assignments} live assignments, {seeded.status_changes} status changes, "
        f"{seeded.active_calls} active calls; {options.clients} keep-alive connections per "
        f"server, {options.seconds:g}s per read per server after {options.warmup:g}s of "
        f"warm-up; load from {'wrk' if wrk else 'an asyncio client'}; pools of up to "
        f"{options.pool_size} connections."
    )
    if problem:
        print(f"PostGraphile skipped: {problem.splitlines()[0]}")
    print()
    print(reads_table(reads, results))
    print()
    print(
        "server cpu: user+system CPU of the server process (uvicorn; node) per request. "
        "pg cpu: of the PostgreSQL backends that server connected, per request. "
        "cf/pg = callfloor / PostGraphile (above 1 for req/s is callfloor faster; "
        "below 1 for latency and CPU is callfloor cheaper)."
    )
    for line in checks:
        print(f"check: {line}")
    failed = [result for result in results if result.load.failures]
    for result in failed:
        print(f"failures in {result.read} via {result.server}: {result.load.first_failure}")
    if any(result.load.operations < common.FEW_OPERATIONS for result in results):
        print(f"note: fewer than {common.FEW_OPERATIONS} requests in a window; use more --seconds")
    return 1 if failed else 0


async def measure_reads(
    options: Options,
    url: str,
    reads: list[Read],
    servers: dict[str, Server],
    seeded: Seeded,
    postgres: common.TemporaryPostgres,
    wrk: str | None,
) -> tuple[list[str], list[Measured]]:
    """Check every read agrees across servers, then load each read on each server."""
    variables: dict[str, dict[str, Any]] = {
        "a": {"id": str(seeded.prospect_id)},
        "b": {"first": PAGE_SIZE},
        "c": {"first": PAGE_SIZE},
        "d": {},
        "e": {"id": str(seeded.prospect_id)},
    }
    checks = await verify(reads, servers, variables)
    connection = await asyncpg.connect(url, server_settings={"application_name": BENCH_APPLICATION})
    try:
        gauge = common.CpuGauge(
            connection,
            postgres.postmaster_pid(),
            DATABASE_NAME,
            {name: server.pid for name, server in servers.items()},
        )
        driver = Driver(gauge, postgres.directory, wrk)
        results: list[Measured] = []
        for number, read in enumerate(reads):
            # Who goes first alternates, so a drift of the machine does not favour one.
            order = list(servers.values())
            if number % 2:
                order.reverse()
            for server in order:
                common.log(f"{read.title}: {server.name}, {options.clients} connections ...")
                body = common.graphql_body(read.document(server.name), variables[read.key])
                results.append(
                    await driver.measure(
                        server,
                        read.key,
                        body,
                        BACKENDS_OF[server.name],
                        options.clients,
                        options.seconds,
                        options.warmup,
                    )
                )
        return checks, results
    finally:
        await connection.close()


def benchmark_search(options: Options, postgres: common.TemporaryPostgres, url: str) -> int:
    """Seed a million prospects, serve them, measure each kind of filter."""
    common.log(f"seeding {options.search_prospects} prospects ...")
    reader_id = common.run(seed_search(url, options.search_prospects))
    port = common.free_port()
    log_path = postgres.directory / "callfloor.log"
    with common.server_process(url, port, log_path, server_settings(options.pool_size)) as pid:
        ours = Server("callfloor", port, pid)
        common.run(common.wait_until_healthy(ours.base_url, pid))
        ours.token = common.run(common.sign_in(ours.base_url, READER))
        rows = common.run(
            measure_search(options, url, ours, reader_id, postgres), common.event_loop_factory()
        )
    print(common.machine_note())
    print(
        f"data: {options.search_prospects + 133} prospects; prospects(first: 20, filter) "
        f"through callfloor, {options.search_clients} connection(s), {options.search_seconds:g}s "
        f"and at least {options.search_min_requests} requests per kind after "
        f"{options.search_warmup:g}s of warm-up, from an asyncio client."
    )
    print()
    print(search_table(rows, reader_id))
    print()
    print(
        "found: prospects on the first page (+ when more follow). server cpu / pg cpu: CPU "
        "per request of the server process and of its PostgreSQL backends. Phone digits "
        "are matched when a search is mostly digits (3 or more)."
    )
    failed = [result for _, _, _, result in rows if result.load.failures]
    for result in failed:
        print(f"failures in {result.read}: {result.load.first_failure}")
    return 1 if failed else 0


async def measure_search(
    options: Options,
    url: str,
    ours: Server,
    reader_id: UUID,
    postgres: common.TemporaryPostgres,
) -> list[tuple[SearchKind, int, bool, Measured]]:
    """Each kind of filter: one request to see what it finds, then the closed loop."""
    connection = await asyncpg.connect(url, server_settings={"application_name": BENCH_APPLICATION})
    try:
        gauge = common.CpuGauge(
            connection, postgres.postmaster_pid(), DATABASE_NAME, {ours.name: ours.pid}
        )
        # wrk cannot wait for a count of requests; the asyncio client can.
        driver = Driver(gauge, postgres.directory, None)
        rows: list[tuple[SearchKind, int, bool, Measured]] = []
        for kind in search_kinds(reader_id):
            variables: dict[str, Any] = {"filter": kind.filter, "after": None}
            for _ in range(kind.page - 1):
                data = await answers(ours, SEARCH_DOCUMENT, variables)
                variables["after"] = data["prospects"]["pageInfo"]["endCursor"]
                if not data["prospects"]["pageInfo"]["hasNextPage"]:
                    raise ValueError(f"{kind.kind}: there is no page {kind.page}")
            data = await answers(ours, SEARCH_DOCUMENT, variables)
            found = len(data["prospects"]["edges"])
            more = bool(data["prospects"]["pageInfo"]["hasNextPage"])
            common.log(f"search {kind.kind}: {found}{'+' if more else ''} found ...")
            result = await driver.measure(
                ours,
                kind.kind,
                common.graphql_body(SEARCH_DOCUMENT, variables),
                callfloor_backends,
                options.search_clients,
                options.search_seconds,
                options.search_warmup,
                min_requests=options.search_min_requests,
            )
            rows.append((kind, found, more, result))
        return rows
    finally:
        await connection.close()


def parse_options(argv: list[str] | None) -> Options:
    """Options from the command line."""
    parser = argparse.ArgumentParser(
        prog="bench/peers.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per read")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--clients", type=int, default=8, help="concurrent connections")
    parser.add_argument("--reads", default="abcde", help="which reads (letters a to e)")
    parser.add_argument(
        "--load", choices=("auto", "wrk", "python"), default="auto", help="load generator"
    )
    parser.add_argument("--pool-size", type=int, default=20, help="database pool of each server")
    parser.add_argument("--search", action="store_true", help="the search filters instead")
    parser.add_argument("--search-seconds", type=float, default=5.0, help="seconds per kind")
    parser.add_argument(
        "--search-warmup", type=float, default=1.0, help="unmeasured seconds before each kind"
    )
    parser.add_argument("--search-clients", type=int, default=1, help="concurrent searches")
    parser.add_argument(
        "--search-min-requests", type=int, default=10, help="requests per kind at least"
    )
    parser.add_argument(
        "--search-prospects", type=int, default=SEARCH_PROSPECTS, help="prospects to seed"
    )
    args = parser.parse_args(argv)
    if (
        args.seconds <= 0
        or args.warmup < 0
        or args.search_warmup < 0
        or args.clients < 1
        or args.search_clients < 1
    ):
        parser.error("--seconds and the client counts must be positive")
    if not args.reads or set(args.reads) - set("abcde"):
        parser.error("--reads takes letters from a to e, e.g. --reads ace")
    if args.search_prospects < 1000:
        parser.error("--search-prospects must be at least 1000")
    return Options(
        seconds=args.seconds,
        warmup=args.warmup,
        clients=args.clients,
        reads=args.reads,
        load=args.load,
        pool_size=args.pool_size,
        search=args.search,
        search_seconds=args.search_seconds,
        search_warmup=args.search_warmup,
        search_clients=args.search_clients,
        search_min_requests=args.search_min_requests,
        search_prospects=args.search_prospects,
    )


def main(argv: list[str] | None = None) -> int:
    """Set up, measure, report, and tear everything down whatever happens."""
    options = parse_options(argv)
    benchmark = benchmark_search if options.search else benchmark_reads
    return common.run_benchmark("cf-peers-", DATABASE_NAME, partial(benchmark, options))


if __name__ == "__main__":
    sys.exit(main())
