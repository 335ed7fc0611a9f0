"""Benchmark nextLead on a large queue: throughput, p99, correctness and the query plans.

Starts its own embedded PostgreSQL in a temporary directory, migrates it and seeds, set
based, a queue of --prospects prospects (default 1,000,000) with --call-logs past calls
(default 10,000,000) spread over the last year across 90% of them, 200 agents, live and
expired assignments, callbacks and a few thousand Do-Not-Call numbers. Calling hours are
opened all day (the figures must not depend on the hour the benchmark runs); the attempt
caps keep their defaults. Then it serves the real server (`python server.py serve`) and,
for each concurrency (default 16 and 64 agents), every agent loops

    nextLead { nothingCallable callLogId prospect { id } }  then  endCall(... "No Answer")

so each holds at most one active call, through GraphQL over HTTP (a lean HTTP/1.1 client,
one keep-alive connection an agent) and then as the very same statements from an asyncpg
pool (as the compiled path sends them: the session and next_lead() with the prospect in
one statement, the wake-up of the event readers; the session and end_call(), the
wake-up), for the graphql/asyncpg ratio. Only nextLead's latency is recorded. Every
prospect handed out is checked: none may be handed to two agents (and, as 'No Answer'
recycles it for two hours, none twice in the whole run), and with this much queue no
answer may be "nothing callable".

Two phases:

    fresh  the queue as seeded: its head is the never-called prospects.
    worn   the never-called prospects closed, so the head is prospects called before.
           Prospects whose history reaches the 12-attempt cap are closed by the seed, as
           finish_call() closes them when the call that uses up the cap ends; those at a
           per-day or per-number cap stay, and next_lead() rejects them one by one with
           call_eligibility().

Then EXPLAIN (ANALYZE, BUFFERS) of the pool-stage candidate query of next_lead(), of the
statements inside call_eligibility(), the nested statements of one next_lead() call (via
auto_explain), the time of held_back() (the "nothing callable" answer), and both again with
every zone's calling hours closed (at night: nothing is callable anywhere).

With --rate R the agents ask in an open loop instead: R nextLead requests per second in
all, each agent on a fixed schedule, so latency includes any wait for a busy desk (what a
dialer offering leads at a steady pace sees); without it they loop as fast as they can
(the saturating figures).

Usage: .venv/bin/python bench/next_lead.py [--seconds 15] [--warmup 3]
           [--prospects 1000000] [--call-logs 10000000] [--concurrency 16,64]
           [--phases fresh,worn] [--rate 50] [--json] [--seed-dir DIR] [--seed-only]

Seeding a million prospects takes 4 to 11 minutes. With --seed-dir, the first run keeps a
copy of the freshly seeded data directory there (PostgreSQL stopped, about 6 GB), and later
runs with the same sizes start from a copy of that copy instead of seeding: the migrations
and the changed functions of the checkout are applied to it, so one seed serves several
commits. The copy's clock has moved on since it was seeded (more callbacks are due, a few
assignments have expired); the report says when it was seeded.

The load generator, the server and PostgreSQL share the machine's cores; compare ratios
and trends from one run, not absolute figures between machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import common
import phonenumbers
import psutil

from resolvers.auth import hash_password, hash_token
from resolvers.phones import phone_time_zones
from sql import database
from sql.queries import QUERIES

DATABASE_NAME = "callfloor_bench"
MIN_CALL_INTERVAL_SECONDS = 300
SERVER_POOL_SIZE = 70
# Area codes of the seeded numbers, one zone each (checked against phonenumbers below).
AREA_CODES = ("212", "312", "415", "617", "713", "206", "303", "602", "404", "305")
CALLED_SHARE = 0.9
FRESH, WORN = "fresh", "worn"
FLUSH_SECONDS = 12.0
# Warm-up grows by a second per this many agents (64 agents: 10.7 s).
WARMUP_AGENTS_PER_SECOND = 6
# In --seed-dir: what was seeded (JSON) beside the stopped data directory.
SEEDED_FILE = "seeded.json"

NEXT_LEAD_MUTATION = "mutation { nextLead { nothingCallable callLogId prospect { id } } }"

# --- seeding SQL (this benchmark only) --------------------------------------------------

# Bulk-load settings for the seeding connections only. session_replication_role=replica
# skips the foreign-key and user triggers (as pg_restore --disable-triggers does): the
# rows are consistent by construction, and a check below confirms no call is orphaned.
SEEDING_SESSION = """
SET maintenance_work_mem = '1GB';
SET max_parallel_maintenance_workers = 0;
SET work_mem = '256MB';
SET synchronous_commit = off;
SET session_replication_role = replica;
"""

# Deterministic per-prospect values from its number n (1-based): the same on every run,
# and computable in any statement without a join.
SEED_FUNCTIONS = """
CREATE FUNCTION pg_temp.seed_id(n int) RETURNS uuid
LANGUAGE sql IMMUTABLE AS $$ SELECT md5('next-lead-bench-' || n::text)::uuid $$;

-- Call log ids in insertion order, so the primary key is appended to, not split.
CREATE FUNCTION pg_temp.seed_call_id(k bigint) RETURNS uuid
LANGUAGE sql IMMUTABLE AS $$
    SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(k), 12, '0'))::uuid
$$;

CREATE FUNCTION pg_temp.seed_unit(n int, salt bigint) RETURNS float8
LANGUAGE sql IMMUTABLE AS $$ SELECT (hashint4extended(n, salt) & 16777215)::float8 / 16777216 $$;

-- +1 AAA EXX LLLL: exchanges 220-999 with a second digit of 2 or more (never N11),
-- distinct for n below 64 million with ten area codes.
CREATE FUNCTION pg_temp.seed_phone(n int, areas text[]) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT '+1' || areas[1 + n % cardinality(areas)]
        || ((2 + (n / cardinality(areas) / 10000) % 8) * 100
            + 20 + (n / cardinality(areas) / 80000) % 80)::text
        || lpad((n / cardinality(areas) % 10000)::text, 4, '0')
$$;

-- Created over 400 to 5 days ago, in the order of n.
CREATE FUNCTION pg_temp.seed_created(n int, seeded_at timestamptz, total int) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT seeded_at - interval '400 days' + (n::float8 / total) * interval '395 days'
$$;

-- The latest call: anywhere between creation and 20 minutes before seeding.
CREATE FUNCTION pg_temp.seed_last_call(n int, seeded_at timestamptz, total int) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT pg_temp.seed_created(n, seeded_at, total) + pg_temp.seed_unit(n, 1)
        * (seeded_at - interval '20 minutes' - pg_temp.seed_created(n, seeded_at, total))
$$;

-- The outcome of the latest call; the final ones (Not Interested, Wrong Number, Do Not
-- Call) closed the prospect, so only the latest call may have one.
CREATE FUNCTION pg_temp.seed_last_outcome(n int) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN pg_temp.seed_unit(n, 2) < 0.40 THEN 'No Answer'
                WHEN pg_temp.seed_unit(n, 2) < 0.65 THEN 'Voicemail'
                WHEN pg_temp.seed_unit(n, 2) < 0.75 THEN 'Busy'
                WHEN pg_temp.seed_unit(n, 2) < 0.91 THEN 'Connected'
                WHEN pg_temp.seed_unit(n, 2) < 0.95 THEN 'Not Interested'
                WHEN pg_temp.seed_unit(n, 2) < 0.97 THEN 'Wrong Number'
                WHEN pg_temp.seed_unit(n, 2) < 0.98 THEN 'Do Not Call'
                ELSE 'Expired' END
$$;
"""

# The tables' secondary indexes (not those behind constraints): dropped before the bulk
# load and rebuilt from these definitions after it, as a bulk load should.
SECONDARY_INDEXES = """
SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS definition
FROM pg_index i
WHERE i.indrelid = ANY ($1::text[]::regclass[])
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
ORDER BY i.indrelid, i.indexrelid
"""
DROP_SECONDARY_INDEXES = """
DO $$
DECLARE
    v_index regclass;
BEGIN
    FOR v_index IN
        SELECT i.indexrelid::regclass FROM pg_index i
        WHERE i.indrelid IN ('prospects'::regclass, 'call_logs'::regclass)
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
    LOOP
        EXECUTE format('DROP INDEX %s', v_index);
    END LOOP;
END
$$
"""
INSERT_USERS = """
INSERT INTO users (email, name, password_hash, role)
SELECT 'agent' || lpad(i::text, 3, '0') || '@bench.test', 'Bench Agent ' || i, $1, 'agent'
FROM generate_series(1, $2::int) i
"""
INSERT_MANAGER = """
INSERT INTO users (email, name, password_hash, role)
VALUES ('manager@bench.test', 'Bench Manager', $1, 'manager')
RETURNING id
"""
SELECT_AGENTS = "SELECT id FROM users WHERE role = 'agent' ORDER BY email"
INSERT_SESSIONS = """
INSERT INTO sessions (token_hash, user_id, expires_at)
SELECT token_hash, user_id, now() + interval '1 day'
FROM unnest($1::bytea[], $2::uuid[]) AS t(token_hash, user_id)
"""
# $1 seeded at, $2 prospects, $3 area codes, $4 zones per area code, $5 called prospects.
INSERT_PROSPECTS = """
INSERT INTO prospects (id, name, phone, email, company, status, last_call, created_at,
                       updated_at, phone_time_zones, final_at, closed_by, recycle_until)
SELECT pg_temp.seed_id(n), 'Prospect ' || n, pg_temp.seed_phone(n, $3),
       'prospect' || n || '@example.com',
       (ARRAY['Acme Corp', 'Globex', 'Initech', 'Umbrella', 'Hooli', NULL])[1 + n % 6],
       coalesce(d.sets_status, 'New'), c.last_call, c.created, coalesce(c.last_call, c.created),
       ARRAY[($4::text[])[1 + n % cardinality($4::text[])]],
       CASE WHEN d.is_final THEN c.last_call END, CASE WHEN d.is_final THEN 'outcome' END,
       c.last_call + d.recycle_delay
FROM (
    SELECT n, pg_temp.seed_created(n, $1, $2) AS created,
           CASE WHEN n <= $5 THEN pg_temp.seed_last_call(n, $1, $2) END AS last_call,
           CASE WHEN n <= $5 THEN pg_temp.seed_last_outcome(n) END AS outcome
    FROM generate_series(1, $2::int) n
    OFFSET 0
) c
LEFT JOIN dispositions d ON d.name = c.outcome
"""
# What finish_call() does when a call uses up the total cap: the prospect leaves the queue
# (as of the call that used it up). The generated history does not know the cap.
CLOSE_CAPPED = """
UPDATE prospects p SET final_at = p.last_call, closed_by = 'attempts'
FROM (SELECT prospect_id FROM call_logs GROUP BY prospect_id
      HAVING count(*) >= (SELECT max_attempts_total FROM dialing_rules)) c
WHERE p.id = c.prospect_id AND p.final_at IS NULL
"""
# Each called prospect's latest call. $4 agents, $5 called prospects.
INSERT_LAST_CALLS = """
INSERT INTO call_logs (id, prospect_id, caller_id, phone_number, started_at, ended_at, outcome,
                       duration, created_at)
SELECT pg_temp.seed_call_id(n), pg_temp.seed_id(n), caller_id, pg_temp.seed_phone(n, $3),
       started_at, started_at + duration * interval '1 second', outcome, duration, started_at
FROM (
    SELECT n, pg_temp.seed_last_call(n, $1, $2) AS started_at,
           pg_temp.seed_last_outcome(n) AS outcome,
           ($4::uuid[])[1 + floor(random() * cardinality($4::uuid[]))::int] AS caller_id,
           floor(random() * 600)::int AS duration
    FROM generate_series(1, $5::int) n
    OFFSET 0
) calls
"""
# A batch of earlier calls, each on a random called prospect, between its creation and its
# latest call (the same formula as seed_last_call with a smaller fraction), none with a
# final outcome. $4 agents, $5 ids already used, $6 batch size, $7 called prospects.
# OFFSET 0 keeps each level from being flattened into the next, so every value is
# computed once per row.
INSERT_EARLIER_CALLS = """
INSERT INTO call_logs (id, prospect_id, caller_id, phone_number, started_at, ended_at, outcome,
                       duration, created_at)
SELECT pg_temp.seed_call_id(k), pg_temp.seed_id(n), caller_id, pg_temp.seed_phone(n, $3),
       started_at, started_at + duration * interval '1 second',
       CASE WHEN pick < 0.50 THEN 'No Answer' WHEN pick < 0.78 THEN 'Voicemail'
            WHEN pick < 0.90 THEN 'Busy' WHEN pick < 0.98 THEN 'Connected'
            ELSE 'Callback Requested' END,
       duration, started_at
FROM (
    SELECT k, n, caller_id, duration, pick,
           created + position * pg_temp.seed_unit(n, 1)
               * ($1::timestamptz - interval '20 minutes' - created) AS started_at
    FROM (
        SELECT k, n, caller_id, duration, pick, position,
               pg_temp.seed_created(n, $1, $2) AS created
        FROM (
            SELECT k, 1 + floor(random() * $7::int)::int AS n, random() AS position,
                   random() AS pick,
                   ($4::uuid[])[1 + floor(random() * cardinality($4::uuid[]))::int] AS caller_id,
                   floor(random() * 600)::int AS duration
            FROM generate_series($5::bigint + 1, $5::bigint + $6::int) k
        ) drawn
        OFFSET 0
    ) dated
    OFFSET 0
) calls
"""
# The Do-Not-Call list: numbers whose latest outcome was Do Not Call ($4 called prospects),
# a national import of one prospect in 300, numbers that are not prospects, and removed
# entries (the audit trail).
INSERT_DO_NOT_CALL_DISPOSITIONS = """
INSERT INTO do_not_call (phone, source, reason, added_at)
SELECT pg_temp.seed_phone(n, $3), 'disposition', 'Outcome: Do Not Call',
       pg_temp.seed_last_call(n, $1, $2)
FROM generate_series(1, $4::int) n
WHERE pg_temp.seed_last_outcome(n) = 'Do Not Call'
"""
INSERT_DO_NOT_CALL_IMPORTED = """
INSERT INTO do_not_call (phone, scope, source, reason, added_at)
SELECT pg_temp.seed_phone(n, $3), 'national', 'import', 'National registry',
       $1::timestamptz - interval '30 days'
FROM generate_series(11, $2::int, 300) n
ON CONFLICT (phone) WHERE removed_at IS NULL DO NOTHING
"""
INSERT_DO_NOT_CALL_OTHERS = """
INSERT INTO do_not_call (phone, scope, source, reason, added_at)
SELECT '+1202' || (500 + i / 10000)::text || lpad((i % 10000)::text, 4, '0'), 'national',
       'import', 'National registry', $1::timestamptz - interval '30 days'
FROM generate_series(0, 499) i
"""
INSERT_DO_NOT_CALL_REMOVED = """
INSERT INTO do_not_call (phone, source, reason, added_at, removed_at, removal_reason)
SELECT pg_temp.seed_phone(n, $3), 'api', 'Asked not to be called',
       $1::timestamptz - interval '60 days', $1::timestamptz - interval '1 day',
       'Gave consent again'
FROM generate_series(3, $2::int, 1000) n
"""
# One prospect in 50: half assigned to agents who are not driving the benchmark (for
# good, or for another week), half with an assignment that expired but is still marked
# active (the prospect is back in the pool). $3 non-driving agents, $4 manager.
INSERT_ASSIGNMENTS = """
INSERT INTO lead_assignments (prospect_id, agent_id, assigned_by, assigned_at, expires_at)
SELECT pg_temp.seed_id(n), ($3::uuid[])[1 + (n / 50) % cardinality($3::uuid[])], $4,
       $1::timestamptz - interval '3 days',
       CASE WHEN (n / 50) % 2 = 1 THEN $1::timestamptz - interval '1 day'
            WHEN (n / 100) % 2 = 0 THEN NULL
            ELSE $1::timestamptz + interval '7 days' END
FROM generate_series(7, $2::int, 50) n
"""
# A couple of never-called prospects per driving agent: stage 2 of next_lead.
INSERT_OWN_ASSIGNMENTS = """
INSERT INTO lead_assignments (prospect_id, agent_id, assigned_by, expires_at)
SELECT pg_temp.seed_id(n), agent_id, $3, NULL
FROM unnest($1::int[], $2::uuid[]) AS t(n, agent_id)
"""
# One prospect in 200 has a callback due in the next days (half for one agent, half for
# anyone): held out of the pool. $3 agents, $4 manager.
INSERT_CALLBACKS = """
INSERT INTO callbacks (prospect_id, due_at, agent_id, created_by, created_at)
SELECT pg_temp.seed_id(n),
       $1::timestamptz + interval '1 day' + pg_temp.seed_unit(n, 3) * interval '6 days',
       CASE WHEN n % 400 = 13 THEN NULL
            ELSE ($3::uuid[])[1 + (n / 200) % cardinality($3::uuid[])] END,
       $4, $1::timestamptz - interval '1 day'
FROM generate_series(13, $2::int, 200) n
"""
# A few callbacks already due, for anyone: stage 1 of next_lead.
INSERT_DUE_CALLBACKS = """
INSERT INTO callbacks (prospect_id, due_at, agent_id, created_by, created_at)
SELECT pg_temp.seed_id(n), $2::timestamptz - interval '1 hour', NULL, $3,
       $2::timestamptz - interval '1 day'
FROM unnest($1::int[]) AS n
"""
ORPHAN_CALLS = """
SELECT count(*) FROM call_logs c
WHERE NOT EXISTS (SELECT 1 FROM prospects p WHERE p.id = c.prospect_id)
"""
QUEUE_FACTS = """
SELECT count(*) AS prospects,
       count(*) FILTER (WHERE final_at IS NULL) AS open,
       count(*) FILTER (WHERE last_call IS NULL) AS never_called
FROM prospects
"""
CAPPED_PROSPECTS = """
SELECT count(*) FILTER (WHERE calls >= (SELECT max_attempts_total FROM dialing_rules)) AS capped,
       count(*) AS called, max(calls) AS most
FROM (SELECT prospect_id, count(*) AS calls FROM call_logs GROUP BY prospect_id) c
JOIN prospects p ON p.id = c.prospect_id
WHERE p.final_at IS NULL
"""
SAMPLE_PHONES = "SELECT phone, phone_time_zones FROM prospects TABLESAMPLE SYSTEM (1) LIMIT 1000"
COUNT_ROWS = """
SELECT (SELECT count(*) FROM lead_assignments) AS assignments,
       (SELECT count(*) FROM lead_assignments
        WHERE active AND (expires_at IS NULL OR expires_at > now())) AS live_assignments,
       (SELECT count(*) FROM callbacks WHERE taken_at IS NULL) AS callbacks,
       (SELECT count(*) FROM callbacks WHERE taken_at IS NULL AND due_at <= now()) AS due_callbacks,
       (SELECT count(*) FROM do_not_call WHERE removed_at IS NULL) AS do_not_call
"""

# --- measuring SQL ----------------------------------------------------------------------

FUNCTION_STATS = """
SELECT funcname, calls, total_time FROM pg_stat_user_functions
WHERE funcname IN ('next_lead', 'call_refusal')
"""
DATABASE_STATS = """
SELECT deadlocks, xact_rollback FROM pg_stat_database WHERE datname = current_database()
"""
CALLED_TWICE = """
SELECT count(*) FROM (
    SELECT prospect_id FROM call_logs
    WHERE caller_id = ANY ($1::uuid[]) AND started_at >= $2
    GROUP BY prospect_id HAVING count(*) > 1
) twice
"""
CALLS_SINCE = """
SELECT count(*) FROM call_logs WHERE caller_id = ANY ($1::uuid[]) AND started_at >= $2
"""
ACTIVE_CALLS = "SELECT count(*) FROM active_calls"
MIGRATIONS = "SELECT string_agg(name, ', ' ORDER BY name) FROM schema_migrations"
CLOSE_NEVER_CALLED = """
UPDATE prospects SET final_at = now() WHERE final_at IS NULL AND last_call IS NULL
"""

# --- plans ------------------------------------------------------------------------------

# The sets of zones of the queue whose calling hours are open now.
OPEN_ZONES = "SELECT array_agg(array_to_string(zones, '+')) FROM open_queue_zones(now())"
# Every weekday closed (in a transaction that is rolled back): nothing is callable.
CLOSE_ALL_HOURS = "DELETE FROM calling_hours"
# Rule checks (call_refusal()) run in this transaction so far.
XACT_FUNCTION_STATS = """
SELECT funcname, calls, total_time FROM pg_stat_xact_user_functions
WHERE funcname IN ('next_lead', 'call_refusal', 'record_call_start')
"""
KEEPS_ZONE_SETS = "SELECT to_regproc('open_queue_zone_sets') IS NOT NULL"
# A probe: calls on the connection first (unmeasured), then the calls measured.
PROBE_WARM_CALLS = 5
PROBE_CALLS = 30
AUTO_EXPLAIN = """
LOAD 'auto_explain';
SET auto_explain.log_min_duration = 0;
SET auto_explain.log_analyze = on;
SET auto_explain.log_nested_statements = on;
SET auto_explain.log_level = 'notice';
"""
# The open-zones array printed in plans, shortened.
ZONE_ARRAY = re.compile(r"'\{[^}]{300,}\}'::text\[\]")
# A prospect in the queue with a long history, at the head of the worn queue.
SOME_CALLED_PROSPECT = """
SELECT p.id AS prospect, p.phone, (prospect_time_zones(p.queue_zones))[1] AS zone,
       p.queue_zones
FROM prospects p
WHERE p.final_at IS NULL AND p.last_call IS NOT NULL
ORDER BY p.priority DESC, p.last_call ASC NULLS FIRST, p.created_at, p.id
LIMIT 1
"""
FUNCTION_SOURCE = "SELECT prosrc FROM pg_proc WHERE proname = $1"
# The statements to EXPLAIN, found in the live function bodies (so they follow any edit to
# the functions): (title, function, pattern). Their PL/pgSQL variables become parameters.
POOL_RANKING = (
    "pool stage, open sets of zones by their heads",
    "next_lead",
    r"SELECT k\.zones(?:, h\.id)?\s+FROM (?:open_queue_zones\(now\(\)\)|\(SELECT s::text\[\] AS"
    r" zones FROM unnest\(v_sets\) s\)) k.*?h\.created_at, h\.id(?=\s+LOOP)",
)
POOL_STAGE = (
    "pool stage",
    "next_lead",
    r"SELECT q\.id INTO v_candidate FROM queue_pool q\s.*?SKIP LOCKED",
)
ELIGIBILITY_STATEMENTS = (
    (
        "latest call of the prospect",
        "call_eligibility",
        r"SELECT c\.started_at, c\.caller_id INTO v_last_time, v_last_caller.*?LIMIT 1",
    ),
    (
        "attempts in total and in the callee's local day",
        "attempt_caps",
        r"SELECT count\(c\.id\) >= r\.max_attempts_total.*?d\.ends_at(?=\s*$)",
    ),
    (
        "calls to the number in 24 hours",
        "call_eligibility",
        r"SELECT count\(\*\), min\(started_at\) INTO v_count, v_oldest FROM \(.*?\) recent;",
    ),
    ("Do-Not-Call lookup", "call_eligibility", r"SELECT \* INTO v_dnc FROM do_not_call d.*?;"),
)
# PL/pgSQL variables and what stands in for them; %name% becomes a numbered parameter.
SUBSTITUTIONS = (
    (r"\s+INTO\s+[\w, ]+?(?=\s+FROM)", ""),
    (r"\bp_prospect_id\b", "%prospect%"),
    (r"\bv_phone\b", "%phone%"),
    (r"\bp_zones\b", "%zones%"),
    (r"\bp_at\b", "now()"),
    (r"\bv_rules\.(\w+)", r"(SELECT \1 FROM dialing_rules)"),
    (r"\bv_zones\b", "%zones%"),
    (r"\bv_seen\b", "%seen%"),
    (r"\bv_sets\b", "ARRAY(SELECT zones::text FROM open_queue_zones(now()))"),
    (r"\bp_agent_id\b", "%agent%"),
    (r"\bv_grace\b", "(SELECT callback_grace FROM dialing_rules)"),
)
PARAMETER_TYPES = {
    "prospect": "uuid",
    "phone": "text",
    "zone": "text",
    "zones": "text[]",
    "seen": "uuid[]",
    "agent": "uuid",
}
WATCHED_INDEXES = (
    "prospects_queue_idx",
    "call_logs_prospect_id_idx",
    "call_logs_phone_number_idx",
    "do_not_call_one_listed_key",
    "active_calls_prospect_id_key",
    "lead_assignments_one_active_key",
    "callbacks_open_prospect_idx",
    "callbacks_open_due_idx",
    "lead_assignments_agent_idx",
)
SCAN_NODE = re.compile(
    r"((?:Parallel )?(?:Index Only Scan|Index Scan|Bitmap Index Scan|Seq Scan)"
    r"(?: Backward)?(?: using| on) [\w.\"]+)"
)


def log_step(started: float, message: str) -> float:
    """Log how long the step took; returns its duration in seconds."""
    took = time.perf_counter() - started
    common.log(f"  {message} ({took:.1f}s)")
    return took


# --- seeding ----------------------------------------------------------------------------


@dataclass
class Seeded:
    """What the measurements and the report need from the seeded database."""

    prospects: int
    called: int
    call_logs: int
    agents: int
    open_prospects: int = 0
    never_called: int = 0
    capped: int = 0
    most_calls: int = 0
    assignments: int = 0
    live_assignments: int = 0
    callbacks: int = 0
    due_callbacks: int = 0
    do_not_call: int = 0
    orphan_calls: int = 0
    invalid_phones: int = 0
    wrong_zones: int = 0
    sampled_phones: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    agent_ids: list[UUID] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    seeded_at: str = ""


def area_zones() -> list[str]:
    """The zone of each area code, as the server derives it from the number."""
    zones = []
    for area in AREA_CODES:
        found = phone_time_zones(f"+1{area}2345678")
        assert len(found) == 1, (area, found)
        zones.append(found[0])
    return zones


async def seeding_connection(url: str) -> asyncpg.Connection:
    """A connection with the bulk-load settings and the seed functions."""
    connection = await asyncpg.connect(url)
    await connection.execute(SEEDING_SESSION)
    await connection.execute(SEED_FUNCTIONS)
    return connection


async def one_row(
    connection: asyncpg.Connection, statement: str, *arguments: Any
) -> asyncpg.Record:
    """The row a statement always returns."""
    row = await connection.fetchrow(statement, *arguments)
    assert row is not None, statement
    return row


def inserted(status: str) -> int:
    """The row count of an 'INSERT 0 n' status."""
    return int(status.rsplit(" ", 1)[-1])


async def seed(url: str, options: Options) -> Seeded:
    """Migrate, open calling hours, and load the queue set-based; returns what was made."""
    seeded_at = datetime.now(UTC)
    total = options.prospects
    called = min(round(total * CALLED_SHARE), options.call_logs)
    areas, zones = list(AREA_CODES), area_zones()
    driving = max(options.concurrency)
    seconds: dict[str, float] = {}
    began = time.perf_counter()

    step = time.perf_counter()
    await common.migrate_database(
        url,
        # The figures must not depend on when the benchmark runs: open calling hours all
        # day. The attempt caps keep their defaults.
        common.OPEN_CALLING_HOURS,
        # Fewer checkpoints while loading ~5 GB; kept for the run (a production setting).
        "ALTER SYSTEM SET max_wal_size = '8GB'",
        "ALTER SYSTEM SET checkpoint_timeout = '30min'",
        # The server's pool (70) and the asyncpg path's (64) at once, and the observers;
        # takes effect when PostgreSQL restarts after seeding.
        "ALTER SYSTEM SET max_connections = '200'",
        "SELECT pg_reload_conf()",
        # Per-function call counts and times, for the candidates checked per nextLead.
        common.TRACK_FUNCTIONS,
    )
    seconds["migrate"] = log_step(step, "migrated")

    first = await seeding_connection(url)
    second = await seeding_connection(url)
    try:
        step = time.perf_counter()
        password_hash = await hash_password(common.PASSWORD, 4)
        await first.execute(INSERT_USERS, password_hash, options.agents)
        manager = await first.fetchval(INSERT_MANAGER, password_hash)
        agent_ids = [row["id"] for row in await first.fetch(SELECT_AGENTS)]
        tokens = [secrets.token_urlsafe(32) for _ in range(driving)]
        await first.execute(
            INSERT_SESSIONS, [hash_token(token) for token in tokens], agent_ids[:driving]
        )
        seconds["users"] = log_step(step, f"{options.agents} agents, {driving} signed in")

        step = time.perf_counter()
        indexes = await first.fetch(SECONDARY_INDEXES, ["prospects", "call_logs"])
        await first.execute(DROP_SECONDARY_INDEXES)
        status = await first.execute(INSERT_PROSPECTS, seeded_at, total, areas, zones, called)
        seconds["prospects"] = log_step(step, f"{inserted(status)} prospects")

        step = time.perf_counter()
        await first.execute(INSERT_LAST_CALLS, seeded_at, total, areas, agent_ids, called)
        earlier = options.call_logs - called
        batch = 1_000_000
        done = 0

        async def load(connection: asyncpg.Connection, offsets: list[int]) -> None:
            nonlocal done
            for offset in offsets:
                size = min(batch, earlier - offset)
                await connection.execute(
                    INSERT_EARLIER_CALLS,
                    seeded_at,
                    total,
                    areas,
                    agent_ids,
                    called + offset,
                    size,
                    called,
                )
                done += size
                common.log(f"    {called + done:,} call logs ...")

        # Two connections, one per core: generating rows is CPU-bound.
        offsets = list(range(0, earlier, batch))
        await asyncio.gather(load(first, offsets[0::2]), load(second, offsets[1::2]))
        seconds["call logs"] = log_step(step, f"{called + earlier:,} call logs")

        step = time.perf_counter()
        closed = await first.execute(CLOSE_CAPPED)
        seconds["caps"] = log_step(step, f"{closed.split()[-1]} prospects at the cap closed")

        step = time.perf_counter()
        await first.execute(INSERT_DO_NOT_CALL_DISPOSITIONS, seeded_at, total, areas, called)
        await first.execute(INSERT_DO_NOT_CALL_IMPORTED, seeded_at, total, areas)
        await first.execute(INSERT_DO_NOT_CALL_OTHERS, seeded_at)
        await first.execute(INSERT_DO_NOT_CALL_REMOVED, seeded_at, total, areas)
        non_driving = agent_ids[driving:] or agent_ids
        await first.execute(INSERT_ASSIGNMENTS, seeded_at, total, non_driving, manager)
        own = [n for n in range(called + 1, total + 1) if n % 50 == 17][: 2 * driving]
        await first.execute(
            INSERT_OWN_ASSIGNMENTS,
            own,
            [agent_ids[index // 2] for index in range(len(own))],
            manager,
        )
        await first.execute(INSERT_CALLBACKS, seeded_at, total, agent_ids, manager)
        due = [n for n in range(called + 1, total + 1) if n % 200 == 113][:32]
        await first.execute(INSERT_DUE_CALLBACKS, due, seeded_at, manager)
        seconds["rules data"] = log_step(step, "Do-Not-Call, assignments, callbacks")

        step = time.perf_counter()
        # Two builds at a time, one per core.
        definitions = [row["definition"] for row in indexes]

        async def build(connection: asyncpg.Connection, statements: list[str]) -> None:
            for statement in statements:
                await connection.execute(statement)

        await asyncio.gather(build(first, definitions[0::2]), build(second, definitions[1::2]))
        seconds["indexes"] = log_step(step, "rebuilt " + ", ".join(row["name"] for row in indexes))

        step = time.perf_counter()
        await asyncio.gather(
            first.execute("VACUUM (ANALYZE) call_logs"),
            second.execute("VACUUM (ANALYZE) prospects"),
        )
        await first.execute("ANALYZE")
        seconds["vacuum analyze"] = log_step(step, "vacuumed and analyzed")
        seconds["total"] = time.perf_counter() - began

        step = time.perf_counter()
        seeded = Seeded(
            prospects=total,
            called=called,
            call_logs=called + max(0, earlier),
            agents=options.agents,
            seconds=seconds,
            agent_ids=agent_ids,
            tokens=tokens,
            seeded_at=seeded_at.isoformat(),
        )
        facts = await one_row(first, QUEUE_FACTS)
        seeded.open_prospects = facts["open"]
        seeded.never_called = facts["never_called"]
        capped = await one_row(first, CAPPED_PROSPECTS)
        seeded.capped = capped["capped"]
        seeded.most_calls = capped["most"] or 0
        counts = await one_row(first, COUNT_ROWS)
        for name in ("assignments", "live_assignments", "callbacks", "due_callbacks"):
            setattr(seeded, name, counts[name])
        seeded.do_not_call = counts["do_not_call"]
        seeded.orphan_calls = await first.fetchval(ORPHAN_CALLS)
        for row in await first.fetch(SAMPLE_PHONES):
            seeded.sampled_phones += 1
            number = phonenumbers.parse(row["phone"])
            if not phonenumbers.is_valid_number(number):
                seeded.invalid_phones += 1
            if list(row["phone_time_zones"]) != phone_time_zones(row["phone"]):
                seeded.wrong_zones += 1
        seconds["checks (not counted)"] = log_step(step, "checked")
        return seeded
    finally:
        await first.close()
        await second.close()


def keep_seed(postgres: common.TemporaryPostgres, seeded: Seeded, seed_dir: Path) -> None:
    """Copy the stopped data directory and what was seeded to seed_dir."""
    step = time.perf_counter()
    seed_dir.mkdir(parents=True, exist_ok=True)
    postgres.server.cleanup()  # stopped cleanly, so the copy needs no recovery
    # cp -a keeps the owner: as root the wheel runs PostgreSQL as another user.
    subprocess.run(
        ["cp", "-a", str(postgres.directory / "postgres"), str(seed_dir / "postgres")],
        check=True,
    )
    settle_page_cache(evict=seed_dir / "postgres")  # the run goes on with the original
    kept = asdict(seeded)
    kept["agent_ids"] = [str(agent) for agent in seeded.agent_ids]
    (seed_dir / SEEDED_FILE).write_text(json.dumps(kept))
    log_step(step, f"kept a copy of the seeded database in {seed_dir}")


def restore_seed(postgres: common.TemporaryPostgres, seed_dir: Path, options: Options) -> Seeded:
    """Replace the empty data directory with a copy of the kept one; what was seeded."""
    step = time.perf_counter()
    kept = json.loads((seed_dir / SEEDED_FILE).read_text())
    kept["agent_ids"] = [UUID(agent) for agent in kept["agent_ids"]]
    seeded = Seeded(**kept)
    wanted = (options.prospects, options.call_logs, options.agents)
    if (seeded.prospects, seeded.call_logs, seeded.agents) != wanted:
        raise SystemExit(
            f"{seed_dir} holds {seeded.prospects:,} prospects, {seeded.call_logs:,} call logs "
            f"and {seeded.agents} agents; asked for {wanted[0]:,}, {wanted[1]:,} and {wanted[2]}"
        )
    if len(seeded.tokens) < max(options.concurrency):
        raise SystemExit(f"{seed_dir} signed in {len(seeded.tokens)} agents only")
    postgres.server.cleanup()
    data = postgres.directory / "postgres"
    subprocess.run(["rm", "-rf", str(data)], check=True)
    subprocess.run(["cp", "-a", str(seed_dir / "postgres"), str(data)], check=True)
    (data / ".handle_pids.json").unlink(missing_ok=True)
    # A freshly seeded database sits in the OS page cache (it was just written, its indexes
    # built, vacuumed): so should the copy. Let go of the kept copy's pages, read the new one.
    settle_page_cache(evict=seed_dir / "postgres", read=data)
    log_step(step, f"copied the database seeded at {seeded.seeded_at} from {seed_dir}")
    return seeded


def settle_page_cache(evict: Path, read: Path | None = None) -> None:
    """Drop evict's files from the OS page cache and read read's files into it."""
    for path in evict.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    for path in read.rglob("*") if read is not None else []:
        if path.is_file():
            with path.open("rb") as handle:
                while handle.read(1 << 20):
                    pass


# --- measuring --------------------------------------------------------------------------

Lead = tuple[UUID, UUID] | None


@dataclass
class Desk:
    """One agent's way to ask for a lead and to end the call, through one path."""

    agent_id: UUID
    next_lead: Callable[[], Awaitable[Lead]]
    end_call: Callable[[UUID, UUID], Awaitable[None]]


@dataclass
class Result:
    """One phase, one path, one concurrency."""

    phase: str
    path: str
    concurrency: int
    operations: int
    seconds: float
    per_second: float
    early_per_second: float
    late_per_second: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    nothing_callable: int
    duplicates: int
    repeats: int
    errors: int
    end_errors: int
    checks_per_lead: float | None
    database_ms_per_lead: float | None
    calls_logged: int
    called_twice: int
    left_active: int
    deadlocks: int
    other_cores: float
    bench_cpu_ms: float
    server_cpu_ms: float | None
    postgres_cpu_ms: float
    error_texts: dict[str, int] = field(default_factory=dict)


def warmup_seconds(options: Options, concurrency: int) -> float:
    """Unmeasured seconds before a window: longer for more agents, as each new backend
    compiles and plans the PL/pgSQL functions on its first call."""
    return max(options.warmup, concurrency / WARMUP_AGENTS_PER_SECOND)


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot."""
    times = psutil.cpu_times()
    return float(times.user + times.nice + times.system + times.irq + times.softirq)


def error_text(error: BaseException) -> str:
    """A short, stable text for counting errors by kind."""
    return f"{type(error).__name__}: {error}"[:300]


async def function_stats(connection: asyncpg.Connection) -> dict[str, tuple[int, float]]:
    """calls and total milliseconds of next_lead() and call_eligibility() so far."""
    rows = await connection.fetch(FUNCTION_STATS)
    return {row["funcname"]: (row["calls"], row["total_time"]) for row in rows}


async def settled_stats(
    connection: asyncpg.Connection, before: dict[str, tuple[int, float]], issued: int
) -> dict[str, tuple[int, float]]:
    """Function stats once the backends have reported the run's next_lead() calls."""
    deadline = time.monotonic() + FLUSH_SECONDS
    while True:
        now = await function_stats(connection)
        calls = now.get("next_lead", (0, 0.0))[0] - before.get("next_lead", (0, 0.0))[0]
        if calls >= issued or time.monotonic() > deadline:
            return now
        await asyncio.sleep(0.25)


async def drive(
    phase: str,
    path: str,
    desks: list[Desk],
    options: Options,
    meter: common.CpuMeter,
    observer: asyncpg.Connection,
) -> Result:
    """Every desk loops nextLead + endCall; nextLead is timed inside the window."""
    loop_start = time.perf_counter()
    warmup = warmup_seconds(options, len(desks))
    window_start = loop_start + warmup
    window_end = window_start + options.seconds
    latencies: list[float] = []
    completions: list[float] = []
    errors: Counter[str] = Counter()
    end_errors: Counter[str] = Counter()
    holding: dict[UUID, UUID] = {}
    handed: set[UUID] = set()
    tally = Counter[str]()
    readings: dict[str, Any] = {}
    began_at = await observer.fetchval("SELECT now()")
    stats_before = await function_stats(observer)
    database_before = await one_row(observer, DATABASE_STATS)

    async def read_cpu_at_window_edges() -> None:
        await asyncio.sleep(warmup)
        readings["before"] = meter.read()
        readings["busy before"] = busy_cpu_seconds()
        await asyncio.sleep(max(0.0, window_end - time.perf_counter()))
        readings["after"] = meter.read()
        readings["busy after"] = busy_cpu_seconds()

    async def arrivals(position: int) -> AsyncIterator[float]:
        """When this desk asks: as soon as it is free (closed loop) or, with --rate, on a
        fixed schedule whether or not it is free (open loop: a request that waits for the
        desk counts its wait)."""
        if options.rate is None:
            while (now := time.perf_counter()) < window_end:
                yield now
            return
        interval = len(desks) / options.rate
        due = loop_start + interval * position / len(desks)
        while due < window_end:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            yield due
            due += interval

    async def worker(desk: Desk, position: int) -> None:
        async for began in arrivals(position):
            tally["issued"] += 1
            try:
                lead = await desk.next_lead()
            except Exception as error:
                errors[error_text(error)] += 1
                await asyncio.sleep(0.01)  # a broken path should not spin
                continue
            ended = time.perf_counter()
            if options.rate is None:
                measured = began >= window_start and ended <= window_end
            else:
                measured = window_start <= began < window_end
            if measured:
                latencies.append(ended - began)
                completions.append(ended)
            if lead is None:
                tally["nothing"] += 1
                if options.rate is None:
                    await asyncio.sleep(0.5)
                continue
            prospect_id, call_log_id = lead
            if prospect_id in holding:
                tally["duplicates"] += 1
                common.log(
                    f"DUPLICATE: {prospect_id} handed to {desk.agent_id} while "
                    f"{holding[prospect_id]} holds it"
                )
            elif prospect_id in handed:
                tally["repeats"] += 1
            holding[prospect_id] = desk.agent_id
            handed.add(prospect_id)
            try:
                await desk.end_call(prospect_id, call_log_id)
            except Exception as error:
                end_errors[error_text(error)] += 1
            finally:
                if holding.get(prospect_id) == desk.agent_id:
                    del holding[prospect_id]

    await asyncio.gather(
        read_cpu_at_window_edges(), *(worker(desk, n) for n, desk in enumerate(desks))
    )
    bench_cpu, server_cpu, postgres_cpu = common.CpuMeter.spent(
        readings["before"], readings["after"]
    )
    ours = bench_cpu + (server_cpu or 0.0) + postgres_cpu
    other_cores = (
        max(0.0, readings["busy after"] - readings["busy before"] - ours) / options.seconds
    )
    if path != "graphql":
        server_cpu = None  # the server idles while the SQL runs without it

    reached = tally["issued"] - sum(errors.values())
    stats_after = await settled_stats(observer, stats_before, reached)
    database_after = await one_row(observer, DATABASE_STATS)
    agent_ids = [desk.agent_id for desk in desks]
    leads = stats_after.get("next_lead", (0, 0.0))[0] - stats_before.get("next_lead", (0, 0.0))[0]
    checks = (
        stats_after.get("call_refusal", (0, 0.0))[0] - stats_before.get("call_refusal", (0, 0.0))[0]
    )
    lead_ms = stats_after.get("next_lead", (0, 0.0))[1] - stats_before.get("next_lead", (0, 0.0))[1]

    latencies.sort()
    count = len(latencies)
    per_op = 1000 / count if count else float("nan")
    quarter = options.seconds / 4
    early = sum(1 for t in completions if t <= window_start + quarter)
    late = sum(1 for t in completions if t > window_end - quarter)
    return Result(
        phase=phase,
        path=path,
        concurrency=len(desks),
        operations=count,
        seconds=options.seconds,
        per_second=count / options.seconds,
        early_per_second=early / quarter,
        late_per_second=late / quarter,
        p50_ms=common.percentile(latencies, 0.50) * 1000,
        p99_ms=common.percentile(latencies, 0.99) * 1000,
        max_ms=(latencies[-1] * 1000) if latencies else float("nan"),
        nothing_callable=tally["nothing"],
        duplicates=tally["duplicates"],
        repeats=tally["repeats"],
        errors=sum(errors.values()),
        end_errors=sum(end_errors.values()),
        checks_per_lead=checks / leads if leads else None,
        database_ms_per_lead=lead_ms / leads if leads else None,
        calls_logged=await observer.fetchval(CALLS_SINCE, agent_ids, began_at),
        called_twice=await observer.fetchval(CALLED_TWICE, agent_ids, began_at),
        left_active=await observer.fetchval(ACTIVE_CALLS),
        deadlocks=database_after["deadlocks"] - database_before["deadlocks"],
        other_cores=other_cores,
        bench_cpu_ms=bench_cpu * per_op,
        server_cpu_ms=server_cpu * per_op if server_cpu is not None else None,
        postgres_cpu_ms=postgres_cpu * per_op,
        error_texts=dict(errors + end_errors),
    )


def graphql_desk(link: common.GraphQLConnection, agent_id: UUID) -> Desk:
    """nextLead and endCall as the agent, over HTTP (the lean client: a load generator on
    the same cores must spend little)."""
    next_lead_body = common.graphql_body(NEXT_LEAD_MUTATION)

    async def next_lead() -> Lead:
        payload = (await link.execute(next_lead_body))["nextLead"]
        if payload["nothingCallable"]:
            return None
        return UUID(payload["prospect"]["id"]), UUID(payload["callLogId"])

    async def end_call(prospect_id: UUID, call_log_id: UUID) -> None:
        variables = {
            "prospectId": str(prospect_id),
            "callLogId": str(call_log_id),
            "outcome": common.OUTCOME,
        }
        await link.execute(common.graphql_body(common.END_CALL_MUTATION, variables))

    return Desk(agent_id, next_lead, end_call)


# What the server sends for nextLead and endCall (graph/read_plans.py compiles both): the
# session and the function in one statement, the prospect's columns with the lead, then
# the wake-up of the event readers once it has committed.
NEXT_LEAD_STATEMENT = """
SELECT n.prospect_id, n.call_log_id, p.name, p.phone, p.status
FROM live_session_user($1) v
CROSS JOIN LATERAL next_lead(v.id) n
JOIN prospects p ON p.id = n.prospect_id
"""
END_CALL_STATEMENT = """
SELECT e.id, e.outcome
FROM live_session_user($1) v
CROSS JOIN LATERAL end_call($2, $3, v.id, $4, NULL, NULL, NULL, NULL) e
"""


def asyncpg_desk(pool: asyncpg.Pool, agent_id: UUID, token: str) -> Desk:
    """The statements the server runs for nextLead and endCall, in the server's order."""
    token_hash = hash_token(token)

    async def next_lead() -> Lead:
        async with pool.acquire() as connection:
            call = await connection.fetchrow(NEXT_LEAD_STATEMENT, token_hash)
            if call is not None:
                await connection.execute(QUERIES["wake_listeners"])
        if call is None:
            # Nothing callable: the server asks again through graphql-core, then counts why.
            await common.look_up_session(pool, token_hash)
            await pool.fetchrow(QUERIES["next_lead"], agent_id)
            await pool.fetch(QUERIES["held_back"], agent_id)
            return None
        return call["prospect_id"], call["call_log_id"]

    async def end_call(prospect_id: UUID, call_log_id: UUID) -> None:
        async with pool.acquire() as connection:
            ended = await connection.fetchrow(
                END_CALL_STATEMENT, token_hash, prospect_id, call_log_id, common.OUTCOME
            )
            await connection.execute(QUERIES["wake_listeners"])
        assert ended is not None

    return Desk(agent_id, next_lead, end_call)


async def measure_phase(
    phase: str, options: Options, url: str, base_url: str, seeded: Seeded, meter: common.CpuMeter
) -> list[Result]:
    """Each concurrency through GraphQL, then through asyncpg."""
    results: list[Result] = []
    observer = await asyncpg.connect(url)
    try:
        for concurrency in options.concurrency:
            agents = list(zip(seeded.agent_ids, seeded.tokens, strict=False))[:concurrency]
            port = int(base_url.rsplit(":", 1)[1])
            links = [common.GraphQLConnection("127.0.0.1", port, token) for _, token in agents]
            try:
                common.log(f"{phase}: graphql, {concurrency} agents ...")
                desks = [
                    graphql_desk(link, agent_id)
                    for link, (agent_id, _) in zip(links, agents, strict=True)
                ]
                results.append(await drive(phase, "graphql", desks, options, meter, observer))
            finally:
                for link in links:
                    await link.close()
            pool = await database.create_pool(
                url,
                session=database.SessionSettings(
                    min_call_interval_seconds=MIN_CALL_INTERVAL_SECONDS
                ),
                min_size=concurrency,
                max_size=concurrency,
            )
            try:
                common.log(f"{phase}: asyncpg, {concurrency} tasks ...")
                desks = [asyncpg_desk(pool, agent_id, token) for agent_id, token in agents]
                results.append(await drive(phase, "asyncpg", desks, options, meter, observer))
            finally:
                await pool.close()
    finally:
        await observer.close()
    return results


async def wear_queue(url: str) -> tuple[int, float]:
    """Close the never-called prospects and vacuum; returns (closed, seconds)."""
    began = time.perf_counter()
    connection = await asyncpg.connect(url)
    try:
        closed = inserted(await connection.execute(CLOSE_NEVER_CALLED))
        await connection.execute("VACUUM (ANALYZE) prospects")
    finally:
        await connection.close()
    return closed, time.perf_counter() - began


# --- plans ------------------------------------------------------------------------------


@dataclass
class Probe:
    """next_lead() called PROBE_CALLS times on a warm connection, each rolled back: the
    median (and 20th percentile) of the round trip and of the time inside next_lead() and
    the functions it calls (pg_stat_xact_user_functions)."""

    when: str
    milliseconds: float
    checks: int
    handed: bool
    database_ms: float = 0.0
    database_p20_ms: float = 0.0
    refusal_ms: float = 0.0
    record_ms: float = 0.0


@dataclass
class Plans:
    """Query plans and timings, as text."""

    pool_stage: str = ""
    pool_ranking: str = ""
    open_zones: int = 0
    open_zone_sets: str = ""
    closed_next_lead_ms: float = 0.0
    closed_queue_holds_ms: float = 0.0
    open_zones_ms: float = 0.0
    eligibility: dict[str, str] = field(default_factory=dict)
    call_eligibility_ms: float = 0.0
    probes: list[Probe] = field(default_factory=list)
    nested: list[str] = field(default_factory=list)
    next_lead_ms: float = 0.0
    queue_holds_ms: float = 0.0
    queue_holds_plan: str = ""
    indexes_used: dict[str, list[str]] = field(default_factory=dict)


def scans(plan: str) -> list[str]:
    """The scan nodes of a text plan, in order, without repeats."""
    return list(dict.fromkeys(SCAN_NODE.findall(plan)))


async def explain(connection: asyncpg.Connection, statement: str, *arguments: Any) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) in a transaction that is rolled back (FOR UPDATE locks)."""
    transaction = connection.transaction()
    await transaction.start()
    try:
        rows = await connection.fetch("EXPLAIN (ANALYZE, BUFFERS) " + statement, *arguments)
    finally:
        await transaction.rollback()
    return "\n".join(row[0] for row in rows)


async def function_statement(
    connection: asyncpg.Connection, function: str, pattern: str, values: dict[str, Any]
) -> tuple[str, list[Any]] | None:
    """A statement of a function's live body with its variables as parameters, or None."""
    source = await connection.fetchval(FUNCTION_SOURCE, function)
    found = re.search(pattern, source or "", re.S)
    if found is None:
        return None
    statement = found.group(0).rstrip(";")
    for variable, replacement in SUBSTITUTIONS:
        statement = re.sub(variable, replacement, statement)
    if re.search(r"\b[pv]_\w+", statement):
        return None  # a variable this script does not know how to stand in for
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}::{PARAMETER_TYPES[name]}"

    statement = re.sub(r"%(\w+)%", number, statement)
    return statement, [values[name] for name in names]


def statement_text(notice: str) -> str:
    """The statement of an auto_explain notice, on one line: the text before the plan."""
    _, _, rest = notice.partition("Query Text: ")
    lines = []
    for line in rest.splitlines():
        if "(cost=" in line or "(actual time=" in line:
            break
        lines.append(line)
    text = " ".join(" ".join(lines).split()).partition(" Query Parameters:")[0]
    return text or "?"


def nested_statements(notices: list[str]) -> list[str]:
    """One line per nested statement (runs in a row of the same one folded together)."""
    folded: list[tuple[str, str, float, int]] = []
    for notice in notices:
        duration = re.search(r"duration: ([\d.]+) ms", notice)
        milliseconds = float(duration.group(1)) if duration else 0.0
        text, used = statement_text(notice)[:100], ", ".join(scans(notice))
        if folded and folded[-1][:2] == (text, used):
            _, _, total, count = folded[-1]
            folded[-1] = (text, used, total + milliseconds, count + 1)
        else:
            folded.append((text, used, milliseconds, 1))
    lines = []
    for text, used, total, count in folded:
        times = f" (x{count})" if count > 1 else ""
        lines.append(f"{total:9.3f} ms  {text}{times}" + (f"\n{'':15}{used}" if used else ""))
    return lines


async def xact_function_stats(connection: asyncpg.Connection) -> dict[str, tuple[int, float]]:
    """calls and milliseconds per function not yet flushed (this transaction's included)."""
    rows = await connection.fetch(XACT_FUNCTION_STATS)
    return {row["funcname"]: (row["calls"], row["total_time"]) for row in rows}


async def probe_once(
    connection: asyncpg.Connection, agent: UUID
) -> tuple[float, dict[str, tuple[int, float]], bool]:
    """One next_lead() call, rolled back: its round trip, each function's calls and time
    inside it, and whether it handed out a prospect."""
    # The open sets of zones a committed call keeps on its connection for the minute (a
    # rolled-back call drops what it found): kept here, outside the call (when the code
    # measured keeps them; older commits do not).
    if await connection.fetchval(KEEPS_ZONE_SETS):
        await connection.execute("SELECT open_queue_zone_sets(false)")
    transaction = connection.transaction()
    await transaction.start()
    try:
        # The xact view also holds counts not yet flushed from earlier transactions; nothing
        # is flushed inside a transaction, so the difference is this call's.
        before = await xact_function_stats(connection)
        began = time.perf_counter()
        row = await connection.fetchrow("SELECT prospect_id FROM next_lead($1)", agent)
        milliseconds = (time.perf_counter() - began) * 1000
        after = await xact_function_stats(connection)
    finally:
        await transaction.rollback()
    spent = {
        name: (calls - before.get(name, (0, 0.0))[0], total - before.get(name, (0, 0.0))[1])
        for name, (calls, total) in after.items()
    }
    return milliseconds, spent, row is not None


async def probe_next_lead(connection: asyncpg.Connection, agent: UUID, when: str) -> Probe:
    """next_lead() on a warm connection: PROBE_WARM_CALLS calls first (each new backend
    compiles the PL/pgSQL and plans its statements on the first ones), then PROBE_CALLS
    measured, each rolled back, so every call sees the same queue."""
    for _ in range(PROBE_WARM_CALLS):
        await probe_once(connection, agent)
    walls: list[float] = []
    spent: dict[str, list[float]] = {"next_lead": [], "call_refusal": [], "record_call_start": []}
    checks, handed = 0, False
    for _ in range(PROBE_CALLS):
        milliseconds, functions, handed = await probe_once(connection, agent)
        walls.append(milliseconds)
        for name, values in spent.items():
            values.append(functions.get(name, (0, 0.0))[1])
        checks = functions.get("call_refusal", (0, 0.0))[0]
    for values in (walls, *spent.values()):
        values.sort()
    return Probe(
        when=when,
        milliseconds=common.percentile(walls, 0.5),
        checks=checks,
        handed=handed,
        database_ms=common.percentile(spent["next_lead"], 0.5),
        database_p20_ms=common.percentile(spent["next_lead"], 0.2),
        refusal_ms=common.percentile(spent["call_refusal"], 0.5),
        record_ms=common.percentile(spent["record_call_start"], 0.5),
    )


async def plans_connection(url: str, prospect: UUID, agent: UUID) -> asyncpg.Connection:
    """A connection with the server's settings, its PL/pgSQL already compiled."""
    connection = await asyncpg.connect(
        url,
        server_settings=database.SessionSettings(
            min_call_interval_seconds=MIN_CALL_INTERVAL_SECONDS
        ).server_settings(),
    )
    await connection.fetch("SELECT * FROM call_eligibility($1, $2)", prospect, agent)
    return connection


async def collect_plans(url: str, seeded: Seeded) -> Plans:
    """The plans and timings of the statements nextLead runs."""
    plans = Plans()
    agent = seeded.agent_ids[0]
    setup = await asyncpg.connect(url)
    try:
        prospect = await one_row(setup, SOME_CALLED_PROSPECT)
    finally:
        await setup.close()
    connection = await plans_connection(url, prospect["prospect"], agent)
    try:
        sets = await connection.fetchval(OPEN_ZONES)
        plans.open_zones = len(sets or [])
        plans.open_zone_sets = ", ".join(sets or [])
        values = {
            "prospect": prospect["prospect"],
            "phone": prospect["phone"],
            "zone": prospect["zone"],
            "zones": prospect["queue_zones"],
            "seen": [],
            "agent": agent,
        }
        for (title, function, pattern), attribute in (
            (POOL_RANKING, "pool_ranking"),
            (POOL_STAGE, "pool_stage"),
        ):
            found = await function_statement(connection, function, pattern, values)
            if found is None:
                setattr(plans, attribute, f"(next_lead() has no {title} this script recognizes)")
            else:
                plan = await explain(connection, found[0], *found[1])
                setattr(plans, attribute, " ".join(found[0].split()) + "\n" + plan)
                plans.indexes_used[title] = scans(plan)

        began = time.perf_counter()
        await connection.fetch(
            "SELECT * FROM call_eligibility($1, $2)", prospect["prospect"], agent
        )
        plans.call_eligibility_ms = (time.perf_counter() - began) * 1000
        began = time.perf_counter()
        await connection.fetchval(OPEN_ZONES)
        plans.open_zones_ms = (time.perf_counter() - began) * 1000
        for title, function, pattern in ELIGIBILITY_STATEMENTS:
            found = await function_statement(connection, function, pattern, values)
            if found is None:
                plans.eligibility[title] = f"(not found in {function}(); skipped)"
                continue
            statement, arguments = found
            plan = await explain(connection, statement, *arguments)
            plans.eligibility[title] = " ".join(statement.split()) + "\n" + plan
            plans.indexes_used[title] = scans(plan)

        plans.probes.append(await probe_next_lead(connection, agent, "after the fresh phase"))

        # The nested statements of one next_lead() call, as PL/pgSQL runs them.
        notices: list[str] = []

        def listen(_: Any, message: Any) -> None:
            notices.append(str(message.message))

        connection.add_log_listener(listen)
        await connection.execute(AUTO_EXPLAIN)
        transaction = connection.transaction()
        await transaction.start()
        try:
            began = time.perf_counter()
            await connection.fetch("SELECT * FROM next_lead($1)", agent)
            plans.next_lead_ms = (time.perf_counter() - began) * 1000
        finally:
            await transaction.rollback()
            await connection.execute("SET auto_explain.log_min_duration = -1")
            connection.remove_log_listener(listen)
        plans.nested = nested_statements(notices)

        began = time.perf_counter()
        await connection.fetch(QUERIES["held_back"], agent)
        plans.queue_holds_ms = (time.perf_counter() - began) * 1000
        # At night: every zone closed, so nextLead finds nothing and counts why.
        transaction = connection.transaction()
        await transaction.start()
        try:
            await connection.execute(CLOSE_ALL_HOURS)
            began = time.perf_counter()
            assert await connection.fetch("SELECT * FROM next_lead($1)", agent) == []
            plans.closed_next_lead_ms = (time.perf_counter() - began) * 1000
            began = time.perf_counter()
            await connection.fetch(QUERIES["held_back"], agent)
            plans.closed_queue_holds_ms = (time.perf_counter() - began) * 1000
        finally:
            await transaction.rollback()
        plans.queue_holds_plan = await explain(connection, QUERIES["held_back"], agent)
        plans.indexes_used["queue_holds"] = scans(plans.queue_holds_plan)
    finally:
        await connection.close()
    return plans


async def probe_worn_queue(url: str, seeded: Seeded) -> Probe:
    """next_lead() after the worn phase, on a new connection warmed first."""
    setup = await asyncpg.connect(url)
    try:
        prospect = await one_row(setup, SOME_CALLED_PROSPECT)
    finally:
        await setup.close()
    connection = await plans_connection(url, prospect["prospect"], seeded.agent_ids[0])
    try:
        return await probe_next_lead(connection, seeded.agent_ids[0], "after the worn phase")
    finally:
        await connection.close()


# --- reporting --------------------------------------------------------------------------


@dataclass
class Options:
    """The command line."""

    seconds: float
    warmup: float
    prospects: int
    call_logs: int
    agents: int
    concurrency: list[int]
    phases: list[str]
    json: bool
    rate: float | None = None
    seed_dir: str | None = None
    seed_only: bool = False


def ratio(results: list[Result], result: Result) -> str:
    """graphql/asyncpg nextLead/s for the same concurrency, in the fresh phase only (worn
    runs inherit the longer head their predecessors left, so they do not compare)."""
    if result.path != "graphql" or result.phase != FRESH:
        return ""
    for other in results:
        if (other.phase, other.path, other.concurrency) == (
            result.phase,
            "asyncpg",
            result.concurrency,
        ) and other.per_second:
            return f"{result.per_second / other.per_second:.2f}"
    return ""


def table(results: list[Result]) -> str:
    """The results as a fixed-width table."""
    header = (
        f"{'phase':<6} {'path':<8} {'agents':>6} {'leads/s':>8} {'first¼':>7} {'last¼':>7} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'gql/apg':>7} {'checks':>6} "
        f"{'db ms':>7} {'nothing':>7} {'dup':>4} {'errors':>6} {'others':>6}   cpu ms/lead: "
        f"{'bench':>6} {'server':>6} {'pg':>6}"
    )
    lines = [header, "-" * len(header)]
    for result in results:
        checks = f"{result.checks_per_lead:.2f}" if result.checks_per_lead is not None else "-"
        database_ms = (
            f"{result.database_ms_per_lead:.2f}" if result.database_ms_per_lead is not None else "-"
        )
        server = f"{result.server_cpu_ms:.2f}" if result.server_cpu_ms is not None else "-"
        lines.append(
            f"{result.phase:<6} {result.path:<8} {result.concurrency:>6} "
            f"{result.per_second:>8.1f} {result.early_per_second:>7.1f} "
            f"{result.late_per_second:>7.1f} {result.p50_ms:>8.2f} {result.p99_ms:>8.2f} "
            f"{result.max_ms:>8.1f} {ratio(results, result):>7} {checks:>6} {database_ms:>7} "
            f"{result.nothing_callable:>7} {result.duplicates + result.repeats:>4} "
            f"{result.errors + result.end_errors:>6} {result.other_cores:>6.2f}   {'':>12} "
            f"{result.bench_cpu_ms:>6.2f} "
            f"{server:>6} {result.postgres_cpu_ms:>6.2f}"
        )
    return "\n".join(lines)


def summary(results: list[Result], plans: Plans) -> str:
    """A few lines: throughput per phase and concurrency, correctness, the slow paths."""
    lines = []
    by_key = {(r.phase, r.concurrency, r.path): r for r in results}
    for phase, concurrency in dict.fromkeys((r.phase, r.concurrency) for r in results):
        parts = []
        for path in ("graphql", "asyncpg"):
            result = by_key.get((phase, concurrency, path))
            if result is not None:
                parts.append(
                    f"{result.per_second:.1f} nextLead/s via {path} "
                    f"(p50 {result.p50_ms:.0f} ms, p99 {result.p99_ms:.0f} ms, "
                    f"{result.checks_per_lead or 0:.1f} eligibility checks each)"
                )
        graphql = by_key.get((phase, concurrency, "graphql"))
        ratio_text = ratio(results, graphql) if graphql else ""
        lines.append(
            f"{phase}, {concurrency} agents: "
            + "; ".join(parts)
            + (f"; GraphQL/asyncpg {ratio_text}" if ratio_text else "")
        )
    bad = sum(
        r.duplicates + r.repeats + r.nothing_callable + r.errors + r.end_errors + r.deadlocks
        for r in results
    )
    lines.append(
        f"correctness: {sum(r.duplicates for r in results)} duplicates, "
        f"{sum(r.repeats for r in results)} repeats, "
        f"{sum(r.nothing_callable for r in results)} nothing-callable answers, "
        f"{sum(r.errors + r.end_errors for r in results)} errors, "
        f"{sum(r.deadlocks for r in results)} deadlocks in {len(results)} runs"
        + ("" if not bad else "  <-- FAILED")
    )
    for probe in plans.probes:
        lines.append(
            f"next_lead() {probe.when}, warm connection, median of {PROBE_CALLS}: "
            f"{probe.database_ms:.2f} ms in the database (20th percentile "
            f"{probe.database_p20_ms:.2f}), {probe.milliseconds:.2f} ms round trip, "
            f"{probe.checks} rule checks (call_refusal())"
        )
    lines.append(f"nothing callable: held_back() takes {plans.queue_holds_ms:.0f} ms")
    lines.append(
        f"every zone closed: next_lead() finds nothing in {plans.closed_next_lead_ms:.0f} ms, "
        f"held_back() counts why in {plans.closed_queue_holds_ms:.0f} ms"
    )
    return "\n".join(lines)


def indent(text: str, prefix: str = "    ") -> str:
    """Every line of text, indented."""
    return "\n".join(prefix + line for line in text.splitlines())


def report(
    options: Options,
    seeded: Seeded,
    results: list[Result],
    plans: Plans,
    settings: dict[str, str],
    worn: tuple[int, float] | None,
) -> None:
    """Print the table, the checks, the plans and a summary (or JSON) on stdout."""
    if options.json:
        document = {
            "machine": common.machine_facts(),
            "options": asdict(options),
            "data": {
                key: value
                for key, value in asdict(seeded).items()
                if key not in {"agent_ids", "tokens"}
            },
            "postgres": settings,
            "worn": {"closed": worn[0], "seconds": worn[1]} if worn else None,
            "results": [asdict(result) for result in results],
            "plans": asdict(plans),
        }
        print(json.dumps(document, indent=2, default=str))
        return

    seconds = seeded.seconds
    print(common.machine_note())
    print(
        f"data: {seeded.prospects:,} prospects ({seeded.open_prospects:,} open in the queue, "
        f"{seeded.never_called:,} never called, {seeded.capped:,} open ones at the "
        f"{settings['max_attempts_total']}-attempt cap, at most {seeded.most_calls} calls), "
        f"{seeded.call_logs:,} call logs over the last year on {seeded.called:,} prospects, "
        f"{seeded.agents} agents, {seeded.assignments:,} assignments "
        f"({seeded.live_assignments:,} live), {seeded.callbacks:,} open callbacks "
        f"({seeded.due_callbacks} due), {seeded.do_not_call:,} Do-Not-Call numbers."
    )
    print(
        f"rules: default attempt caps ({settings['max_attempts_total']} in total, "
        f"{settings['max_attempts_per_day']} per local day, "
        f"{settings['max_attempts_per_number_24h']} per number in 24 h); calling hours "
        f"opened 00:00-24:00 every day; min call interval {MIN_CALL_INTERVAL_SECONDS}s; "
        f"'{common.OUTCOME}' recycles the prospect for 2 h."
    )
    print(
        "seeding: "
        f"{seconds['total']:.0f}s ("
        + ", ".join(
            f"{name} {took:.0f}s" for name, took in seconds.items() if name not in {"total"}
        )
        + ")."
    )
    print(
        f"postgres {settings['server_version']}: shared_buffers {settings['shared_buffers']}, "
        f"max_wal_size {settings['max_wal_size']}, max_connections "
        f"{settings['max_connections']}; server: 1 uvicorn worker, pool of up to "
        f"{SERVER_POOL_SIZE}; asyncpg: one connection per agent."
    )
    print(f"migrations: {settings['migrations']}")
    if worn:
        print(
            f"worn phase: {worn[0]:,} never-called prospects closed and prospects vacuumed "
            f"({worn[1]:.0f}s) before it."
        )
    warmups = ", ".join(
        f"{warmup_seconds(options, concurrency):.1f}s for {concurrency} agents"
        for concurrency in options.concurrency
    )
    print(f"{options.seconds:g}s per measurement after a warm-up of {warmups}.")
    print()
    print(table(results))
    print()
    print(
        "leads/s counts nextLead answers completed in the window (endCall is not timed); "
        "first¼/last¼: the rate in the first and last quarter of it. checks: "
        "call_refusal() runs per next_lead() (1.00 = the first candidate was taken; "
        "each rejected candidate adds one). db ms: "
        "mean time inside next_lead() (pg_stat_user_functions). nothing: nothingCallable "
        "answers. dup: prospects handed to two agents at once or twice in the run. errors: "
        "failed nextLead or endCall. others: cores busy with other processes on the machine "
        "during the window (other sessions' work, PostgreSQL's background). cpu ms/lead: "
        "CPU per nextLead+endCall of this process, "
        "the server and PostgreSQL's backends."
    )
    for result in results:
        ok = (
            not result.duplicates
            and not result.repeats
            and not result.nothing_callable
            and not result.errors
            and not result.end_errors
            and not result.called_twice
            and not result.left_active
            and not result.deadlocks
        )
        print(
            f"check {result.phase} {result.path} x{result.concurrency}: "
            f"{result.calls_logged} calls logged, {result.called_twice} prospects called twice, "
            f"{result.left_active} left active, {result.deadlocks} deadlocks, "
            f"{result.duplicates} duplicates, {result.repeats} repeats, "
            f"{result.nothing_callable} nothing-callable" + ("" if ok else "  <-- FAILED")
        )
        for text, count in result.error_texts.items():
            print(f"    {count} x {text}")
    print(
        f"check data: {seeded.orphan_calls} orphan call logs; {seeded.invalid_phones} invalid "
        f"and {seeded.wrong_zones} wrongly zoned numbers in a sample of {seeded.sampled_phones}"
    )
    if any(result.operations < common.FEW_OPERATIONS for result in results):
        print(
            f"note: fewer than {common.FEW_OPERATIONS} operations in a window; use more --seconds"
        )

    print()
    print("== Plans (after the fresh phase) ==")
    print()
    print(
        f"open_queue_zones(now()): {plans.open_zones} sets of zones open "
        f"({plans.open_zone_sets}), {plans.open_zones_ms:.1f} ms to find"
    )
    print()
    print("pool stage of next_lead(), the open sets ranked by their heads (no locks):")
    print(indent(plans.pool_ranking))
    print()
    print("pool stage of next_lead(), the best free row of one set, locked ('{}' rejected so far):")
    print(indent(plans.pool_stage))
    print()
    print(
        f"call_eligibility(<queue-head called prospect>, <agent>): "
        f"{plans.call_eligibility_ms:.2f} ms; its statements on call_logs and do_not_call:"
    )
    for title, plan in plans.eligibility.items():
        print(f"  -- {title}")
        print(indent(plan))
    print()
    for probe in plans.probes:
        print(
            f"next_lead() {probe.when}, each call rolled back, on a connection that made "
            f"{PROBE_WARM_CALLS} calls first; median of {PROBE_CALLS}: "
            f"{probe.database_ms:.2f} ms inside next_lead() (20th percentile "
            f"{probe.database_p20_ms:.2f}), of which call_refusal() {probe.refusal_ms:.2f} ms "
            f"and record_call_start() {probe.record_ms:.2f} ms; {probe.milliseconds:.2f} ms "
            f"round trip; {probe.checks} rule checks (call_refusal())"
            + ("" if probe.handed else ", nothing handed out")
        )
    print()
    print(
        f"one next_lead() call, {plans.next_lead_ms:.1f} ms with auto_explain on; its nested "
        "statements (total duration, statement, scans; repeats folded):"
    )
    for line in plans.nested:
        print("  " + line)
    print()
    print(
        f"held_back(<agent>) (run by nextLead when nothing is callable): "
        f"{plans.queue_holds_ms:.0f} ms; plan:"
    )
    print(indent(ZONE_ARRAY.sub("'{...}'::text[]", plans.queue_holds_plan)))
    print()
    print("== Index use ==")
    for name in WATCHED_INDEXES:
        where = [
            title
            for title, nodes in plans.indexes_used.items()
            if any(name in node for node in nodes)
        ]
        nested = any(name in line for line in plans.nested)
        places = where + (["next_lead() nested statements"] if nested else [])
        print(f"  {name:<34} {'; '.join(places) if places else 'not used'}")
    scanned: dict[str, list[str]] = {}
    for title, nodes in plans.indexes_used.items():
        for node in nodes:
            if node.startswith("Seq Scan on"):
                scanned.setdefault(node.removeprefix("Seq Scan on "), []).append(title)
    for line in plans.nested:
        for node in SCAN_NODE.findall(line):
            if node.startswith("Seq Scan on"):
                found = scanned.setdefault(node.removeprefix("Seq Scan on "), [])
                if "next_lead() nested statements" not in found:
                    found.append("next_lead() nested statements")
    print("  sequential scans:")
    for relation, where in sorted(scanned.items()):
        print(f"    {relation:<32} {'; '.join(where)}")
    print()
    print("== Summary ==")
    print(summary(results, plans))


# --- entry point ------------------------------------------------------------------------


def parse_options(argv: list[str] | None) -> Options:
    """Options from the command line."""
    parser = argparse.ArgumentParser(
        prog="bench/next_lead.py",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first")
    parser.add_argument("--prospects", type=int, default=1_000_000, help="prospects to seed")
    parser.add_argument("--call-logs", type=int, default=10_000_000, help="call logs to seed")
    parser.add_argument("--agents", type=int, default=200, help="agents to create")
    parser.add_argument(
        "--concurrency", default="16,64", help="comma-separated concurrent agents per run"
    )
    parser.add_argument("--phases", default="fresh,worn", help="fresh, worn or both")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--rate",
        type=float,
        help="open loop: nextLead requests per second offered by all agents together, on a "
        "fixed schedule (default: closed loop, each agent asks again as soon as it is free)",
    )
    parser.add_argument(
        "--seed-dir",
        help="keep a copy of the seeded database here, or start from the copy kept there",
    )
    parser.add_argument(
        "--seed-only", action="store_true", help="seed (and keep, with --seed-dir), then stop"
    )
    args = parser.parse_args(argv)
    try:
        concurrency = [int(part) for part in args.concurrency.split(",") if part.strip()]
    except ValueError:
        parser.error("--concurrency must be comma-separated integers")
    phases = [part.strip() for part in args.phases.split(",") if part.strip()]
    if not concurrency or min(concurrency) < 1:
        parser.error("--concurrency must be positive")
    if max(concurrency) > args.agents:
        parser.error("--agents must be at least the largest --concurrency")
    if max(concurrency) > SERVER_POOL_SIZE:
        parser.error(f"--concurrency above {SERVER_POOL_SIZE} would wait for the server's pool")
    if not 10_000 <= args.prospects <= 20_000_000:
        parser.error("--prospects must be between 10,000 and 20,000,000")
    if args.call_logs < args.prospects * CALLED_SHARE:
        parser.error(f"--call-logs must be at least {CALLED_SHARE:.0%} of --prospects")
    if not phases or set(phases) - {FRESH, WORN}:
        parser.error("--phases takes fresh and/or worn")
    if args.seconds <= 0 or args.warmup < 0:
        parser.error("--seconds must be positive")
    if args.rate is not None and args.rate <= 0:
        parser.error("--rate must be positive")
    return Options(
        seconds=args.seconds,
        warmup=args.warmup,
        prospects=args.prospects,
        call_logs=args.call_logs,
        agents=args.agents,
        concurrency=concurrency,
        phases=phases,
        json=args.json,
        rate=args.rate,
        seed_dir=args.seed_dir,
        seed_only=args.seed_only,
    )


async def read_settings(url: str) -> dict[str, str]:
    """The PostgreSQL settings and dialing rules the report names."""
    connection = await asyncpg.connect(url)
    try:
        found = {
            name: str(await connection.fetchval("SELECT current_setting($1)", name))
            for name in ("server_version", "shared_buffers", "max_wal_size", "max_connections")
        }
        found["migrations"] = str(await connection.fetchval(MIGRATIONS))
        rules = await one_row(connection, QUERIES["dialing_rules"])
        found.update({key: str(rules[key]) for key in rules.keys()})  # noqa: SIM118
        return found
    finally:
        await connection.close()


def main(argv: list[str] | None = None) -> int:
    """Set up, seed, measure, explain, report, and tear everything down whatever happens."""
    options = parse_options(argv)
    try:
        return common.run_benchmark("cf-nl-", DATABASE_NAME, partial(benchmark, options))
    except common.GraphQLFailed as error:
        common.log(f"GraphQL failed: {error}")
        return 1


def benchmark(options: Options, postgres: common.TemporaryPostgres, url: str) -> int:
    """Seed, restart PostgreSQL, serve, measure, explain and report; the exit status."""
    seed_dir = Path(options.seed_dir) if options.seed_dir else None
    if seed_dir is not None and (seed_dir / SEEDED_FILE).exists():
        seeded = restore_seed(postgres, seed_dir, options)
        url = database.with_database(postgres.restart(), DATABASE_NAME)
        # This checkout's migrations and changed functions.
        common.run(common.migrate_database(url))
    else:
        common.log(
            f"seeding {options.prospects:,} prospects and {options.call_logs:,} call logs ..."
        )
        seeded = common.run(seed(url, options))
        common.log(f"seeded in {seeded.seconds['total']:.0f}s; restarting PostgreSQL ...")
        if seed_dir is not None:
            keep_seed(postgres, seeded, seed_dir)
        url = database.with_database(postgres.restart(), DATABASE_NAME)
    if options.seed_only:
        return 0
    settings = common.run(read_settings(url))

    results: list[Result] = []
    plans = Plans()
    worn: tuple[int, float] | None = None
    port = common.free_port()
    base_url = f"http://127.0.0.1:{port}"
    common.log(f"starting the server on {base_url} ...")
    server_settings = {
        "MIN_CALL_INTERVAL_SECONDS": str(MIN_CALL_INTERVAL_SECONDS),
        # Every connection opened before the warm-up, as the asyncpg path's pool is: a
        # connection opened inside the window pays for connecting and for planning
        # next_lead()'s statements on its first call (30 to 50 ms).
        "DB_POOL_MIN_SIZE": str(SERVER_POOL_SIZE),
        "DB_POOL_MAX_SIZE": str(SERVER_POOL_SIZE),
        "WEB_CONCURRENCY": "1",
    }
    server_log = postgres.directory / "server.log"
    with common.server_process(url, port, server_log, server_settings) as server_pid:
        common.run(common.wait_until_healthy(base_url, server_pid))
        meter = common.CpuMeter(server_pid, postgres.postmaster_pid(), DATABASE_NAME)
        if FRESH in options.phases:
            results += common.run(measure_phase(FRESH, options, url, base_url, seeded, meter))
        common.log("explaining ...")
        plans = common.run(collect_plans(url, seeded))
        if WORN in options.phases:
            common.log("closing the never-called prospects ...")
            worn = common.run(wear_queue(url))
            results += common.run(measure_phase(WORN, options, url, base_url, seeded, meter))
            plans.probes.append(common.run(probe_worn_queue(url, seeded)))
    report(options, seeded, results, plans, settings, worn)
    failed = any(
        result.errors
        or result.end_errors
        or result.duplicates
        or result.repeats
        or result.nothing_callable
        or result.called_twice
        for result in results
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
