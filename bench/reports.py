"""Benchmark the manager reports at 10,000,000 call logs, and show their plans.

Starts its own embedded PostgreSQL in a temporary directory, migrates it, and loads
--agents agents, --prospects prospects, --calls call logs spread over the last --days days
of weekday calling hours (13:00-01:00 UTC, 8 am to 8 pm in New York), and a status change
for every tenth call. The load is set-based (INSERT ... SELECT generate_series, in chunks on
--jobs connections) with the call log indexes dropped and rebuilt afterwards, as one would
for any bulk load; then rebuild_call_stats() fills the report rollups and VACUUM ANALYZE
sets the visibility map, as autovacuum would on a live table.

Each report is then timed through the same resolver functions the GraphQL fields call
(median of --runs after one warm-up), next to the seed's own Monitoring SQL run directly
on the call logs; every report's plan is printed with EXPLAIN (ANALYZE, BUFFERS).
Finally it measures what keeps the rollups current (a day of unfolded calls, the fold)
and archiving (a dry run at 365 days, and moving the oldest --archive-days days).

Usage: .venv/bin/python bench/reports.py [--calls 10000000] [--runs 5] [--jobs 2]

Timings depend on the machine and on whatever else runs on it; the plans do not.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

import asyncpg
import common

from resolvers import archive, reports
from sql import database
from sql.migrator import migrate
from sql.queries import QUERIES

DATABASE_NAME = "callfloor_reports_bench"
CHUNK = 500_000
CONTACTS = "('Connected', 'Not Interested', 'Callback Requested', 'Do Not Call')"

# Seeding only. Call i of N starts at the i/N point of all weekday calling hours in the
# span, so start times grow with i, as on a live floor where rows are appended in time.
GENERATE_CALLS = f"""
INSERT INTO call_logs (id, prospect_id, caller_id, phone_number, started_at, ended_at,
                       outcome, duration, created_at)
SELECT md5('call' || x.i)::uuid, p.id, a.id, p.phone, x.started_at,
       x.started_at + make_interval(secs => x.duration), x.outcome, x.duration, x.started_at
FROM (
    SELECT s.i, s.prospect_n, s.agent_n, o.outcome,
           ((d.day + time '13:00') AT TIME ZONE 'UTC')
               + make_interval(secs => s.offset_seconds - s.day_k * 43200.0) AS started_at,
           CASE WHEN o.outcome IN {CONTACTS} THEN 30 + (hashint8(s.i * 17) & 511)
                ELSE hashint8(s.i * 17) & 31 END::int AS duration
    FROM (
        SELECT i, ((i - 1) / $3::float8) * ($4::float8 * 43200.0) AS offset_seconds,
               floor(((i - 1) / $3::float8) * $4::float8)::int AS day_k,
               ((hashint8(i) & 2147483647) % $5::int)::int AS prospect_n,
               (i % $6::int)::int AS agent_n,
               hashint8(i * 31) & 1023 AS r
        FROM generate_series($1::bigint, $2::bigint) AS i
    ) s
    JOIN bench_days d ON d.k = s.day_k
    CROSS JOIN LATERAL (SELECT CASE
        WHEN s.r < 410 THEN 'No Answer' WHEN s.r < 660 THEN 'Voicemail'
        WHEN s.r < 710 THEN 'Busy' WHEN s.r < 870 THEN 'Connected'
        WHEN s.r < 940 THEN 'Not Interested' WHEN s.r < 980 THEN 'Callback Requested'
        WHEN s.r < 1000 THEN 'Wrong Number' WHEN s.r < 1013 THEN 'Do Not Call'
        ELSE 'Expired' END AS outcome) o
) x
JOIN bench_prospects p ON p.n = x.prospect_n
JOIN bench_agents a ON a.n = x.agent_n
"""
BENCH_TABLES = """
CREATE TEMP TABLE bench_agents AS
    SELECT (row_number() OVER (ORDER BY email))::int - 1 AS n, id FROM users WHERE role = 'agent';
CREATE TEMP TABLE bench_prospects AS
    SELECT (row_number() OVER (ORDER BY phone))::int - 1 AS n, id, phone FROM prospects;
CREATE TEMP TABLE bench_days AS
    SELECT (row_number() OVER (ORDER BY day))::int - 1 AS k, day::date
    FROM generate_series(current_date - {days}, current_date - 1, interval '1 day') AS day
    WHERE extract(isodow FROM day) < 6;
ANALYZE bench_agents; ANALYZE bench_prospects; ANALYZE bench_days;
"""
GENERATE_STATUS_CHANGES = """
INSERT INTO prospect_status_log (prospect_id, old_status, new_status, changed_by, created_at)
SELECT c.prospect_id, 'Attempted', 'Contacted', c.caller_id, c.ended_at
FROM call_logs c
WHERE hashtext(c.id::text) % 10 = 0
"""
# The seed's Monitoring SQL (database-system.md), on the call logs themselves.
SEED_PROSPECTS_CALLED = """
SELECT prospect_id, COUNT(*) as call_count
FROM call_logs
GROUP BY prospect_id
HAVING COUNT(*) > 1
ORDER BY call_count DESC
LIMIT 50
"""
SEED_AGENT_PERFORMANCE = """
SELECT u.email, COUNT(*) as total_calls, AVG(cl.duration) as avg_duration
FROM call_logs cl
JOIN users u ON cl.caller_id = u.id
GROUP BY u.email
"""
DIRECT_AGENT_PERFORMANCE = """
SELECT c.caller_id, c.outcome, count(*), count(c.duration), sum(c.duration)
FROM call_logs_with_archive c
WHERE c.started_at >= $1 AND c.started_at < $2
GROUP BY 1, 2
"""


@dataclass(frozen=True)
class Options:
    calls: int
    prospects: int
    agents: int
    days: int
    runs: int
    jobs: int
    archive_days: int


@dataclass
class Timing:
    name: str
    detail: str
    rows: int
    seconds: list[float]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1000


# --- loading ---------------------------------------------------------------------------


async def drop_indexes(connection: asyncpg.Connection, table: str) -> list[str]:
    """Drop a table's indexes (primary key and the foreign keys on it too); the DDL to redo."""
    redo: list[str] = []
    primary = await connection.fetch(
        """
        SELECT quote_ident(conname) AS name, pg_get_constraintdef(oid) AS ddl
        FROM pg_constraint WHERE conrelid = $1::regclass AND contype = 'p'
        """,
        table,
    )
    referencing = await connection.fetch(
        """
        SELECT conrelid::regclass::text AS owner, quote_ident(conname) AS name,
               pg_get_constraintdef(oid) AS ddl
        FROM pg_constraint WHERE confrelid = $1::regclass AND contype = 'f'
        """,
        table,
    )
    indexes = await connection.fetch(
        """
        SELECT indexrelid::regclass::text AS name, pg_get_indexdef(indexrelid) AS ddl
        FROM pg_index
        WHERE indrelid = $1::regclass
          AND indexrelid NOT IN (SELECT conindid FROM pg_constraint WHERE conrelid = $1::regclass)
        """,
        table,
    )
    for fk in referencing:
        await connection.execute(f"ALTER TABLE {fk['owner']} DROP CONSTRAINT {fk['name']}")
    for pk in primary:
        await connection.execute(f"ALTER TABLE {table} DROP CONSTRAINT {pk['name']}")
        redo.append(f"ALTER TABLE {table} ADD CONSTRAINT {pk['name']} {pk['ddl']}")
    for index in indexes:
        await connection.execute(f"DROP INDEX {index['name']}")
        redo.append(index["ddl"])
    redo += [
        f"ALTER TABLE {fk['owner']} ADD CONSTRAINT {fk['name']} {fk['ddl']}" for fk in referencing
    ]
    return redo


async def load(url: str, options: Options) -> dict[str, float]:
    """Migrate and load the data set; seconds per step."""
    steps: dict[str, float] = {}
    connection = await asyncpg.connect(url)
    try:
        # Fewer checkpoints while loading gigabytes (this server lives in a temporary directory).
        await connection.execute("ALTER SYSTEM SET max_wal_size = '8GB'")
        await connection.execute("SELECT pg_reload_conf()")
        await migrate(connection)
        # Calls are made at any hour and as often as the data says: open the dialing rules.
        await connection.execute(common.OPEN_CALLING_HOURS)
        await connection.execute(common.LIFT_ATTEMPT_CAPS)
        started = time.perf_counter()
        await connection.execute(
            """
            INSERT INTO users (email, name, password_hash, role)
            SELECT 'agent' || n || '@bench.test', 'Agent ' || n, 'not-a-hash', 'agent'
            FROM generate_series(1, $1) n;
            """,
            options.agents,
        )
        await connection.execute(
            "INSERT INTO users (email, name, password_hash, role)"
            " VALUES ('manager@bench.test', 'Manager', 'not-a-hash', 'manager')"
        )
        await connection.execute(
            """
            INSERT INTO prospects (name, phone, created_at)
            SELECT 'Prospect ' || n, '+1646' || lpad(n::text, 7, '0'), now() - interval '800 days'
            FROM generate_series(1, $1) n
            """,
            options.prospects,
        )
        steps["users and prospects"] = time.perf_counter() - started

        started = time.perf_counter()
        redo = await drop_indexes(connection, "call_logs")
        redo += await drop_indexes(connection, "prospect_status_log")
        steps["drop indexes"] = time.perf_counter() - started
    finally:
        await connection.close()

    started = time.perf_counter()
    chunks = [
        (first, min(first + CHUNK - 1, options.calls))
        for first in range(1, options.calls + 1, CHUNK)
    ]
    queue: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
    for chunk in chunks:
        queue.put_nowait(chunk)
    done = 0

    async def worker() -> None:
        nonlocal done
        job = await asyncpg.connect(url)
        try:
            # Skip per-row foreign-key checks and triggers: rebuild_call_stats() follows.
            await job.execute("SET session_replication_role = replica; SET jit = off")
            await job.execute(BENCH_TABLES.format(days=int(options.days)))
            days = await job.fetchval("SELECT count(*) FROM bench_days")
            while True:
                try:
                    first, last = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await job.execute(
                    GENERATE_CALLS,
                    first,
                    last,
                    options.calls,
                    days,
                    options.prospects,
                    options.agents,
                )
                done += last - first + 1
                common.log(f"  {done:,} / {options.calls:,} call logs")
        finally:
            await job.close()

    await asyncio.gather(*(worker() for _ in range(options.jobs)))
    steps["call logs (INSERT ... SELECT)"] = time.perf_counter() - started

    connection = await asyncpg.connect(url)
    try:
        await connection.execute("SET session_replication_role = replica")
        started = time.perf_counter()
        await connection.execute(GENERATE_STATUS_CHANGES)
        steps["status changes"] = time.perf_counter() - started
        await connection.execute("SET session_replication_role = origin")

        started = time.perf_counter()
        await connection.execute("SET maintenance_work_mem = '512MB'")
        for ddl in redo:
            common.log(f"  {ddl[:90]}")
            await connection.execute(ddl)
        steps["rebuild indexes"] = time.perf_counter() - started

        # A floor at work: every agent on a call right now.
        await connection.execute(
            """
            WITH started AS (
                INSERT INTO call_logs (prospect_id, caller_id, phone_number, started_at)
                SELECT p.id, a.id, p.phone, now() - make_interval(mins => a.n::int)
                FROM (SELECT id, row_number() OVER (ORDER BY email) AS n
                      FROM users WHERE role = 'agent') a
                JOIN (SELECT id, phone, row_number() OVER (ORDER BY phone) AS n FROM prospects) p
                  ON p.n = a.n
                RETURNING id, prospect_id, caller_id, phone_number, started_at)
            INSERT INTO active_calls (prospect_id, caller_id, call_log_id, phone_number, started_at)
            SELECT prospect_id, caller_id, id, phone_number, started_at FROM started
            """
        )
        await connection.execute(
            "UPDATE prospects p SET last_call = c.last_call"
            " FROM (SELECT prospect_id, max(started_at) AS last_call FROM call_logs GROUP BY 1) c"
            " WHERE c.prospect_id = p.id"
        )

        started = time.perf_counter()
        await connection.execute("SET work_mem = '256MB'")
        await connection.execute("SELECT rebuild_call_stats()")
        steps["rebuild_call_stats()"] = time.perf_counter() - started

        started = time.perf_counter()
        await connection.execute("VACUUM (ANALYZE)")
        steps["VACUUM ANALYZE"] = time.perf_counter() - started
    finally:
        await connection.close()
    return steps


# --- measuring -------------------------------------------------------------------------


async def timed(name: str, detail: str, runs: int, call: Callable[[], Awaitable[Any]]) -> Timing:
    """Median of runs after one warm-up."""
    result = await call()
    seconds: list[float] = []
    for _ in range(runs):
        started = time.perf_counter()
        result = await call()
        seconds.append(time.perf_counter() - started)
    rows = len(result) if isinstance(result, list | tuple) else 1
    if isinstance(result, tuple):
        rows = len(result[0])
    return Timing(name, detail, rows, seconds)


async def explain(pool: asyncpg.Pool, title: str, sql: str, *args: Any) -> str:
    rows = await pool.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args)
    return f"-- {title}\n" + "\n".join(row[0] for row in rows)


async def measure(url: str, options: Options) -> tuple[list[Timing], list[str], dict[str, Any]]:
    pool = await database.create_pool(
        url, session=database.SessionSettings(min_call_interval_seconds=300), min_size=1, max_size=4
    )
    timings: list[Timing] = []
    plans: list[str] = []
    extra: dict[str, Any] = {}
    try:
        now = await pool.fetchval("SELECT now()")
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        year = (now - timedelta(days=366), now)
        runs = options.runs

        for label, start in (
            ("today", midnight),
            ("7 days", now - timedelta(days=7)),
            ("30 days", now - timedelta(days=30)),
            ("366 days", now - timedelta(days=366)),
        ):
            timings.append(
                await timed(
                    "agentPerformance",
                    label,
                    runs,
                    lambda start=start: reports.agent_performance(pool, start, now),
                )
            )
        for label, start, bucket, zone in (
            ("HOUR, 1 day, New York", now - timedelta(days=1), "hour", "America/New_York"),
            ("HOUR, 7 days, New York", now - timedelta(days=7), "hour", "America/New_York"),
            ("DAY, 30 days, New York", now - timedelta(days=30), "day", "America/New_York"),
            ("DAY, 366 days, New York", now - timedelta(days=366), "day", "America/New_York"),
            ("DAY, 366 days, Kolkata", now - timedelta(days=366), "day", "Asia/Kolkata"),
            ("HOUR, 366 days, UTC", now - timedelta(days=366), "hour", "UTC"),
        ):
            timings.append(
                await timed(
                    "callStats",
                    label,
                    runs,
                    lambda start=start, bucket=bucket, zone=zone: reports.call_stats(
                        pool, start, now, bucket, zone
                    ),
                )
            )
        page, _ = await reports.prospects_called_multiple_times(
            pool, min_calls=2, first=100, after=None
        )
        deep = reports.encode_count_cursor(page[-1])
        timings.append(
            await timed(
                "prospectsCalledMultipleTimes",
                "first 50",
                runs,
                lambda: reports.prospects_called_multiple_times(
                    pool, min_calls=2, first=50, after=None
                ),
            )
        )
        timings.append(
            await timed(
                "prospectsCalledMultipleTimes",
                "50 after 100, minCalls 100",
                runs,
                lambda: reports.prospects_called_multiple_times(
                    pool, min_calls=100, first=50, after=deep
                ),
            )
        )
        timings.append(
            await timed(
                "recentStatusChanges",
                "first 100",
                runs,
                lambda: reports.recent_status_changes(pool, 100),
            )
        )
        common.log("timing the seed's SQL on the call logs (one run each) ...")
        for name, detail, sql, args in (
            ("seed: prospects called multiple times", "all calls", SEED_PROSPECTS_CALLED, ()),
            ("seed: agent performance", "all calls", SEED_AGENT_PERFORMANCE, ()),
            ("direct: agent performance", "366 days", DIRECT_AGENT_PERFORMANCE, year),
        ):
            timings.append(
                await timed(name, detail, 1, lambda sql=sql, args=args: pool.fetch(sql, *args))
            )

        common.log("explaining ...")
        whole = QUERIES["agent_performance"], year[0], year[1]
        plans.append(await explain(pool, "agentPerformance, 366 days", *whole))
        plans.append(
            await explain(
                pool,
                "callStats DAY, 366 days, America/New_York",
                QUERIES["call_stats"],
                year[0],
                now,
                "day",
                "America/New_York",
            )
        )
        plans.append(
            await explain(
                pool,
                "callStats HOUR, 7 days, America/New_York",
                QUERIES["call_stats"],
                now - timedelta(days=7),
                now,
                "hour",
                "America/New_York",
            )
        )
        plans.append(
            await explain(
                pool,
                "prospectsCalledMultipleTimes, first page of 50",
                QUERIES["prospects_called_multiple_times"],
                2,
                2**31 - 1,
                "ffffffff-ffff-ffff-ffff-ffffffffffff",
                51,
            )
        )
        plans.append(
            await explain(pool, "recentStatusChanges(100)", QUERIES["recent_status_changes"], 100)
        )

        # A day of calls nobody has folded yet: reports read them from the journal.
        common.log("unfolded changes and the fold ...")
        per_day = options.calls // max(1, options.days * 5 // 7)
        await pool.execute(
            """
            INSERT INTO call_logs (prospect_id, caller_id, phone_number, started_at, ended_at,
                                   outcome, duration)
            SELECT p.id, a.id, p.phone, now() - make_interval(secs => n % 36000), now(),
                   'No Answer', 5
            FROM generate_series(1, $1) n
            JOIN (SELECT id, row_number() OVER (ORDER BY email) - 1 AS k
                  FROM users WHERE role = 'agent') a ON a.k = n % $2
            JOIN (SELECT id, phone, row_number() OVER (ORDER BY phone) - 1 AS k
                  FROM prospects) p ON p.k = n % $3
            """,
            per_day,
            options.agents,
            options.prospects,
        )
        extra["unfolded"] = await pool.fetchval("SELECT count(*) FROM call_stats_changes")
        timings.append(
            await timed(
                "agentPerformance, unfolded day",
                "366 days",
                runs,
                lambda: pool.fetch(QUERIES["agent_performance"], *year),
            )
        )
        started = time.perf_counter()
        extra["folded"] = await reports.fold_call_stats(pool)
        extra["fold_seconds"] = time.perf_counter() - started

        common.log("archiving: a dry run at 365 days, then the oldest days ...")
        started = time.perf_counter()
        plan = await archive.plan_archive(pool, now - timedelta(days=365))
        extra["plan_seconds"] = time.perf_counter() - started
        extra["plan"] = plan
        oldest = await pool.fetchval("SELECT min(started_at) FROM call_logs")
        cutoff = oldest + timedelta(days=options.archive_days)
        result = await archive.archive(pool, cutoff, 1000)
        extra["archived"] = result
        timings.append(
            await timed(
                "agentPerformance, after archiving",
                "366 days",
                runs,
                lambda: reports.agent_performance(pool, *year),
            )
        )
    finally:
        await pool.close()
    return timings, plans, extra


def report(
    options: Options,
    steps: dict[str, float],
    timings: list[Timing],
    plans: list[str],
    extra: dict[str, Any],
) -> None:
    print(f"# Reports at {options.calls:,} call logs")
    print()
    print(
        f"{options.agents} agents, {options.prospects:,} prospects, {options.calls:,} call logs"
        f" over {options.days} days of weekday calling hours; {common.cores_note()},"
        " PostgreSQL defaults of the embedded server."
    )
    print()
    print("| load step | seconds |")
    print("| --- | ---: |")
    for step, seconds in steps.items():
        print(f"| {step} | {seconds:.1f} |")
    print()
    print("| report | range | rows | median ms | min ms | max ms | runs |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for t in timings:
        print(
            f"| {t.name} | {t.detail} | {t.rows} | {t.median_ms:.1f} |"
            f" {min(t.seconds) * 1000:.1f} | {max(t.seconds) * 1000:.1f} | {len(t.seconds)} |"
        )
    print()
    print(
        f"unfolded journal rows (a day of calls): {extra['unfolded']:,};"
        f" folding them took {extra['fold_seconds'] * 1000:.0f} ms"
    )
    plan: archive.ArchivePlan = extra["plan"]
    print(
        f"archive dry run at 365 days: {plan.call_logs:,} call logs and"
        f" {plan.status_changes:,} status changes to move, counted in {extra['plan_seconds']:.1f} s"
    )
    moved: archive.ArchiveResult = extra["archived"]
    rate = (moved.call_logs + moved.status_changes) / moved.seconds if moved.seconds else 0
    print(
        f"archived the oldest {options.archive_days} days: {moved.call_logs:,} call logs and"
        f" {moved.status_changes:,} status changes in {moved.batches:,} batches of 1000,"
        f" {moved.seconds:.1f} s ({rate:,.0f} rows/s)"
    )
    print()
    print("## Plans")
    for text in plans:
        print()
        print(text)


def parse_options(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10_000_000)
    parser.add_argument("--prospects", type=int, default=100_000)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--days", type=int, default=730, help="span of the call history")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2, help="connections loading call logs")
    parser.add_argument("--archive-days", type=int, default=7)
    args = parser.parse_args(argv)
    return Options(
        calls=args.calls,
        prospects=args.prospects,
        agents=args.agents,
        days=args.days,
        runs=args.runs,
        jobs=args.jobs,
        archive_days=args.archive_days,
    )


def main(argv: list[str] | None = None) -> int:
    """Set up, measure, report, and remove the database whatever happens (SIGTERM and
    Ctrl-C included)."""
    options = parse_options(argv)
    return common.run_benchmark("cf-rbench-", DATABASE_NAME, partial(benchmark, options))


def benchmark(options: Options, postgres: common.TemporaryPostgres, url: str) -> int:
    started = time.perf_counter()
    common.log(f"loading {options.calls:,} call logs ...")
    steps = common.run(load(url, options))
    steps["total"] = time.perf_counter() - started
    common.log(f"loaded in {steps['total']:.0f} s; measuring ...")
    timings, plans, extra = common.run(measure(url, options))
    report(options, steps, timings, plans, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
