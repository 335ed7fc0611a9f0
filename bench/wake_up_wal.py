"""Whether the wake-up's commit waits for a WAL flush: WAL fsyncs per statement.

The server wakes the readers of call events with a NOTIFY alone in its transaction, sent
once the change has committed (resolvers/events.py, wake_listeners). Such a transaction
takes a transaction id (the notification queue records it) but writes no WAL before its
commit record, so PostgreSQL commits it asynchronously: no fsync, and its notify lock is
not held across one. This counts the WAL fsyncs (pg_stat_io, object 'wal', every process)
and the transaction ids used over --statements autocommit statements of each kind, one
connection, on an embedded PostgreSQL in a temporary directory.

Usage: .venv/bin/python bench/wake_up_wal.py [--statements 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from functools import partial

import asyncpg
import common

KINDS = (
    ("the wake-up: a NOTIFY alone", "SELECT pg_notify('call_events', '')"),
    ("an INSERT alone", "INSERT INTO wal_probe (v) VALUES (1)"),
    (
        "an INSERT and a NOTIFY in one transaction",
        "WITH i AS (INSERT INTO wal_probe (v) VALUES (1)) SELECT pg_notify('probe', 'x')",
    ),
    ("SELECT 1 (no transaction id)", "SELECT 1"),
)
WAL_IO = """
SELECT coalesce(sum(fsyncs), 0)::bigint AS fsyncs, coalesce(sum(writes), 0)::bigint AS writes
FROM pg_stat_io WHERE object = 'wal'
"""
# Backends and the WAL writer report their I/O statistics within a second or so.
SETTLE_SECONDS = 2.5


async def measure(url: str, statements: int) -> None:
    """Print WAL fsyncs, writes and transaction ids used per kind of statement."""
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("CREATE TABLE wal_probe (v int)")
        print(f"{statements} autocommit statements of each kind, one connection:")
        print(f"  {'statement':<44} {'WAL fsyncs':>10} {'WAL writes':>10} {'xids used':>9}")
        for title, sql in KINDS:
            await connection.execute("SELECT pg_stat_clear_snapshot()")
            before = await connection.fetchrow(WAL_IO)
            first_xid = int(await connection.fetchval("SELECT pg_current_xact_id()::text"))
            for _ in range(statements):
                await connection.execute(sql)
            await asyncio.sleep(SETTLE_SECONDS)
            await connection.execute("SELECT pg_stat_clear_snapshot()")
            after = await connection.fetchrow(WAL_IO)
            last_xid = int(await connection.fetchval("SELECT pg_current_xact_id()::text"))
            assert before is not None
            assert after is not None
            print(
                f"  {title:<44} {after['fsyncs'] - before['fsyncs']:>10}"
                f" {after['writes'] - before['writes']:>10} {last_xid - first_xid - 1:>9}"
            )
    finally:
        await connection.close()


def benchmark(statements: int, _postgres: common.TemporaryPostgres, url: str) -> int:
    """Run the measurement on the temporary database."""
    common.run(measure(url, statements))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Set up, measure, tear down."""
    parser = argparse.ArgumentParser(prog="bench/wake_up_wal.py", description=__doc__)
    parser.add_argument("--statements", type=int, default=2000)
    args = parser.parse_args(argv)
    return common.run_benchmark("cf-wal-", "callfloor_wal", partial(benchmark, args.statements))


if __name__ == "__main__":
    sys.exit(main())
