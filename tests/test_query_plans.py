"""The dialing rules stay index-driven: the plans PostgreSQL runs inside the functions.

auto_explain logs the plan of every statement the functions run; the test reads those
plans back (LOG messages sent to the client) from a database big enough that a sequential
scan would be the planner's choice if the conditions hid the indexes from it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import asyncpg
import pytest
from helpers import nodes, read_plans, traced_connection

PROSPECTS = 30_000

ARRANGE = f"""
INSERT INTO users (email, name, password_hash, role)
VALUES ('plans-agent@test.example', 'Agent', 'x', 'agent'),
       ('plans-other@test.example', 'Other', 'x', 'agent');
INSERT INTO prospects (name, phone, phone_time_zones, priority, created_at)
SELECT 'Prospect ' || g, '+1212' || lpad(g::text, 7, '0'),
       (ARRAY['{{America/New_York}}', '{{America/Chicago}}', '{{}}'])[g % 3 + 1]::text[],
       g % 5, now() - g * interval '1 second'
FROM generate_series(1, {PROSPECTS}) g;
INSERT INTO lead_assignments (prospect_id, agent_id)
SELECT id, (SELECT id FROM users WHERE email = 'plans-other@test.example')
FROM prospects WHERE priority = 4 LIMIT 300;
INSERT INTO do_not_call (phone, source)
SELECT phone, 'api' FROM prospects WHERE priority = 3 LIMIT 500;
INSERT INTO callbacks (prospect_id, due_at)
SELECT id, now() + interval '1 day' FROM prospects WHERE priority = 2 LIMIT 3000;
INSERT INTO call_logs (prospect_id, caller_id, phone_number, started_at, ended_at, outcome)
SELECT p.id, (SELECT id FROM users WHERE email = 'plans-other@test.example'), p.phone,
       now() - interval '3 days', now() - interval '3 days', 'No Answer'
FROM prospects p, generate_series(1, 2)
WHERE p.priority < 2;
INSERT INTO call_logs_archive (id, prospect_id, caller_id, phone_number, started_at, ended_at,
                               outcome, created_at)
SELECT gen_random_uuid(), c.prospect_id, c.caller_id, c.phone_number,
       c.started_at - interval '1 year', c.ended_at - interval '1 year', c.outcome, c.created_at
FROM call_logs c;
ANALYZE;
"""

# Tables with a handful of rows, where a sequential scan is the right plan.
SMALL_TABLES = {
    "dialing_rules",
    "calling_hours",
    "dispositions",
    "prospect_statuses",
    "users",
    "active_calls",
}
INDEXES_USED = {
    "prospects_queue_idx",
    "lead_assignments_one_active_key",
    "do_not_call_one_listed_key",
    "call_logs_prospect_id_idx",
    "call_logs_archive_prospect_id_idx",
    "call_logs_phone_number_idx",
    "callbacks_open_due_idx",
    "callbacks_open_prospect_idx",
}
CONDITIONS = (
    "in_queue(",
    "assignment_is_live(",
    "do_not_call_in_force(",
    "called_recently(",
    "recycling(",
    "callback_reserves(",
)


@pytest.fixture
async def traced(database_url: str) -> AsyncIterator[tuple[asyncpg.Connection, list[str]]]:
    """A connection whose every statement, nested ones included, logs its plan to us."""
    async with traced_connection(database_url, ARRANGE) as traced:
        yield traced


async def test_next_lead_start_and_end_read_through_indexes(
    traced: tuple[asyncpg.Connection, list[str]],
) -> None:
    connection, plans = traced
    agent = await connection.fetchval(
        "SELECT id FROM users WHERE email = 'plans-agent@test.example'"
    )
    lead = await connection.fetchrow("SELECT * FROM next_lead($1)", agent)
    assert lead is not None
    await connection.fetch(
        "SELECT * FROM end_call($1, $2, $3, 'No Answer', 30, NULL, NULL)",
        lead["prospect_id"],
        lead["call_log_id"],
        agent,
    )
    other = await connection.fetchval(
        "SELECT id FROM prospects WHERE priority = 1 ORDER BY created_at LIMIT 1"
    )
    started = await connection.fetchrow(
        "SELECT * FROM start_call($1, $2, NULL, NULL)", other, agent
    )
    assert started is not None
    rules = await connection.fetch("SELECT * FROM call_eligibility($1, $2)", other, agent)
    assert [r["code"] for r in rules if r["blocking"]] == ["ALREADY_IN_CALL", "RECENTLY_CALLED"]

    every_node = [node for plan in read_plans(plans) for node in nodes(plan)]
    sequential = {n["Relation Name"] for n in every_node if n["Node Type"] == "Seq Scan"}
    indexes = {n["Index Name"] for n in every_node if "Index Name" in n}
    assert sequential <= SMALL_TABLES, f"sequential scans: {sequential - SMALL_TABLES}"
    assert indexes >= INDEXES_USED, f"indexes never used: {INDEXES_USED - indexes}"
    # The conditions written once as functions are inlined: the planner sees their columns.
    expressions = json.dumps(every_node)
    assert [c for c in CONDITIONS if c in expressions] == []
