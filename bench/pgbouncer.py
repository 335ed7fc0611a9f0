"""What running behind PgBouncer in transaction mode costs, and what the settings buy.

Starts its own embedded PostgreSQL and Debian's PgBouncer (pool_mode = transaction) in
front of it, seeds agents and prospects, and measures the same work in three set-ups:

    direct, cache 100    the pool straight to PostgreSQL, asyncpg's statement cache on
                         (the default without a pooler)
    direct, cache 0      the same with the cache off (DB_STATEMENT_CACHE_SIZE=0): what
                         unnamed statements alone cost
    direct, cache 0, tx  and DATABASE_POOLING=transaction, still direct: what sending the
                         settings with each transaction costs
    bouncer, cache 0     through PgBouncer with both, as PgBouncer 1.18 needs

and three kinds of work, each from --clients concurrent loops:

    read        prospect_by_id from the server's pool: one statement, no transaction
    call cycle  start_call + end_call from the server's pool: two single statements, the
                way the resolvers run them
    api cycle   startCall + endCall over GraphQL, `server.py serve` with the same settings

Usage: .venv/bin/python bench/pgbouncer.py [--seconds 8] [--clients 16] [--server-pool 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit
from uuid import UUID

import asyncpg
import common
import httpx

from sql import database
from sql.queries import QUERIES

DATABASE_NAME = "callfloor_bench"
START_CALL_MUTATION = """
mutation Start($prospectId: ID!) { startCall(prospectId: $prospectId) { callLogId } }
"""


@dataclass(frozen=True)
class Setup:
    """One way for the pool to reach PostgreSQL."""

    name: str
    through_bouncer: bool
    statement_cache_size: int
    per_transaction: bool

    @property
    def pooler(self) -> database.Pooler:
        return database.Pooler(
            transaction_mode=self.per_transaction, statement_cache_size=self.statement_cache_size
        )

    def environment(self, direct_url: str) -> dict[str, str]:
        """The server's settings for this set-up."""
        return {
            "DATABASE_POOLING": "transaction" if self.per_transaction else "session",
            "DATABASE_LISTEN_URL": direct_url,
            "DB_STATEMENT_CACHE_SIZE": str(self.statement_cache_size),
        }


SETUPS = (
    Setup(
        "direct, cache 100", through_bouncer=False, statement_cache_size=100, per_transaction=False
    ),
    Setup("direct, cache 0", through_bouncer=False, statement_cache_size=0, per_transaction=False),
    Setup(
        "direct, cache 0, tx", through_bouncer=False, statement_cache_size=0, per_transaction=True
    ),
    Setup("bouncer, cache 0", through_bouncer=True, statement_cache_size=0, per_transaction=True),
)


@contextmanager
def pgbouncer(admin_url: str, server_pool: int) -> Iterator[int]:
    """Debian's PgBouncer in transaction mode in front of the embedded server; its port."""
    binary = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if binary is None:
        raise SystemExit("pgbouncer is not installed: apt-get install pgbouncer")
    parts = urlsplit(admin_url)
    socket_dir = parse_qs(parts.query)["host"][0]
    port = common.free_port()
    directory = Path(tempfile.mkdtemp(prefix="cf-bench-bouncer-"))
    (directory / "users.txt").write_text('"postgres" ""\n')
    (directory / "pgbouncer.ini").write_text(
        f"""[databases]
* = host={socket_dir} port={parts.port or 5432} user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
pool_mode = transaction
default_pool_size = {server_pool}
max_client_conn = 1000
auth_type = trust
auth_file = {directory / "users.txt"}
logfile = {directory / "pgbouncer.log"}
"""
    )
    command = [binary, "-q"]
    if os.geteuid() == 0:  # PgBouncer will not run as root: as the socket's owner instead
        user = pwd.getpwuid(os.stat(socket_dir).st_uid).pw_name
        for path in (directory, *directory.iterdir()):
            shutil.chown(path, user)
        command += ["-u", user]
    process = subprocess.Popen([*command, str(directory / "pgbouncer.ini")])
    try:
        common.run(wait_for_port(port))
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


async def wait_for_port(port: int) -> None:
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise RuntimeError("pgbouncer did not start")


def through(url: str, port: int) -> str:
    """The database's URL through PgBouncer."""
    parts = urlsplit(url)
    return urlunsplit(("postgresql", f"postgres@127.0.0.1:{port}", parts.path, "", ""))


@dataclass
class Seeded:
    agents: list[tuple[UUID, str]]  # id, email
    prospects: list[UUID]  # one per agent, for its call cycles
    api_prospects: list[UUID]


async def seed(url: str, clients: int) -> Seeded:
    await common.migrate_database(url, common.OPEN_CALLING_HOURS, common.LIFT_ATTEMPT_CAPS)
    connection = await asyncpg.connect(url)
    try:
        rows = await common.insert_prospects(connection, clients * 2, datetime.now(UTC))
        users = [(f"agent{n}@bench.example", f"Agent {n}", "agent") for n in range(clients)]
        ids = await common.insert_users(connection, users)
    finally:
        await connection.close()
    prospects = [row["id"] for row in rows]
    return Seeded(
        agents=[(ids[email], email) for email, _, _ in users],
        prospects=prospects[:clients],
        api_prospects=prospects[clients:],
    )


async def measure_pool(
    url: str, setup: Setup, seeded: Seeded, options: argparse.Namespace
) -> dict[str, common.Load]:
    # MIN_CALL_INTERVAL_SECONDS=0, as the server would send it, so cycles can repeat.
    session = database.SessionSettings(min_call_interval_seconds=0)
    pool = await database.create_pool(
        url,
        session=session,
        pooler=setup.pooler,
        min_size=options.clients,
        max_size=options.clients,
    )
    try:

        def read(prospect_id: UUID) -> common.Operation:
            async def operation() -> None:
                assert await pool.fetchrow(QUERIES["prospect_by_id"], prospect_id) is not None

            return operation

        def cycle(agent_id: UUID, prospect_id: UUID) -> common.Operation:
            async def operation() -> None:
                started = await pool.fetchrow(
                    QUERIES["start_call"], prospect_id, agent_id, None, None
                )
                assert started is not None
                ended = await pool.fetchrow(
                    QUERIES["end_call"],
                    prospect_id,
                    started["call_log_id"],
                    agent_id,
                    common.OUTCOME,
                    None,
                    None,
                    None,
                    None,
                )
                assert ended is not None

            return operation

        async def nothing() -> None:
            return None

        results = {}
        pairs = list(zip(seeded.agents, seeded.prospects, strict=True))
        common.log(f"{setup.name}: read ...")
        results["read"] = await common.closed_loop(
            [read(prospect) for _, prospect in pairs], options.seconds, 1.0, nothing, nothing
        )
        common.log(f"{setup.name}: call cycle ...")
        results["call cycle"] = await common.closed_loop(
            [cycle(agent[0], prospect) for agent, prospect in pairs],
            options.seconds,
            1.0,
            nothing,
            nothing,
        )
        return results
    finally:
        await pool.close()


async def measure_api(
    base_url: str, setup: Setup, seeded: Seeded, options: argparse.Namespace
) -> common.Load:
    tokens = [await common.sign_in(base_url, email) for _, email in seeded.agents]
    clients = [common.http_client(base_url, token) for token in tokens]

    def cycle(client: httpx.AsyncClient, prospect_id: UUID) -> common.Operation:
        async def operation() -> None:
            variables = {"prospectId": str(prospect_id)}
            started = await common.graphql(client, START_CALL_MUTATION, variables)
            await common.end_call_via_graphql(
                client, str(prospect_id), started["startCall"]["callLogId"]
            )

        return operation

    async def nothing() -> None:
        return None

    try:
        common.log(f"{setup.name}: api cycle ...")
        return await common.closed_loop(
            [cycle(c, p) for c, p in zip(clients, seeded.api_prospects, strict=True)],
            options.seconds,
            2.0,
            nothing,
            nothing,
        )
    finally:
        for client in clients:
            await client.aclose()


def benchmark(postgres: common.TemporaryPostgres, url: str, options: argparse.Namespace) -> int:
    seeded = common.run(seed(url, options.clients))
    admin_url = database.with_database(url, "postgres")
    rows: list[tuple[str, str, common.Load]] = []
    with pgbouncer(admin_url, options.server_pool) as port:
        for setup in SETUPS:
            pool_url = through(url, port) if setup.through_bouncer else url
            for work, load in common.run(measure_pool(pool_url, setup, seeded, options)).items():
                rows.append((setup.name, work, load))
            server_port = common.free_port()
            log_path = Path(tempfile.gettempdir()) / f"bench-bouncer-{server_port}.log"
            settings = {
                **setup.environment(url),
                "MIN_CALL_INTERVAL_SECONDS": "0",
                "DB_POOL_MIN_SIZE": str(options.clients),
                "DB_POOL_MAX_SIZE": str(options.clients),
            }
            with common.server_process(pool_url, server_port, log_path, settings) as pid:
                base_url = f"http://127.0.0.1:{server_port}"
                common.run(common.wait_until_healthy(base_url, pid))
                load = common.run(measure_api(base_url, setup, seeded, options))
                rows.append((setup.name, "api cycle", load))
            log_path.unlink(missing_ok=True)
    print(common.machine_note())
    print(
        f"{options.clients} concurrent loops; PgBouncer default_pool_size {options.server_pool};"
        f" {options.seconds:g} s per measurement"
    )
    header = f"{'set-up':<20} {'work':<11} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}"
    print(header)
    print("-" * len(header))
    for name, work, load in rows:
        print(
            f"{name:<20} {work:<11} {load.per_second:>9.1f} {load.p50_ms:>8.2f} "
            f"{load.p99_ms:>8.2f} {load.failures:>6}"
        )
    return 1 if any(load.failures for _, _, load in rows) else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--server-pool", type=int, default=16)
    options = parser.parse_args()
    return common.run_benchmark(
        "cf-bench-bouncer-", DATABASE_NAME, lambda postgres, url: benchmark(postgres, url, options)
    )


if __name__ == "__main__":
    raise SystemExit(main())
