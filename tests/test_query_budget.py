"""Nested fields are batched: a page costs the same number of statements for 5 or 50 rows."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import asyncpg
import pytest
from helpers import Team, add_user, running_server

from settings import Settings
from sql.queries import QUERIES

PAGE = """
query($first: Int!) {
  prospects(first: $first) {
    edges {
      cursor
      node {
        id name phone status
        activeCall { id callerId caller { email } }
        assignment { agentId expiresAt agent { email } }
        callHistory(first: 3) { id outcome caller { email } }
        statusHistory(first: 3) { newStatus }
      }
    }
    pageInfo { hasNextPage endCursor }
  }
}
"""


async def arrange(pool: asyncpg.Pool, team: dict[str, Any]) -> None:
    """60 prospects; every one with calls, some in a call, some assigned."""
    await pool.execute(
        """
        INSERT INTO prospects (name, phone)
        SELECT 'P' || i, '+1212555' || lpad(i::text, 4, '0') FROM generate_series(1, 60) i
        """
    )
    await pool.execute(
        """
        INSERT INTO call_logs (prospect_id, caller_id, phone_number, started_at, outcome)
        SELECT p.id, $1, p.phone, now() - make_interval(hours => n), 'No Answer'
        FROM prospects p CROSS JOIN generate_series(1, 4) n
        """,
        team["agent"],
    )
    await pool.execute(
        """
        INSERT INTO active_calls (prospect_id, caller_id, call_log_id, phone_number)
        SELECT DISTINCT ON (c.prospect_id) c.prospect_id, c.caller_id, c.id, c.phone_number
        FROM call_logs c JOIN prospects p ON p.id = c.prospect_id
        WHERE p.name LIKE '%3'
        ORDER BY c.prospect_id, c.started_at DESC
        """
    )
    await pool.execute(
        """
        INSERT INTO lead_assignments (prospect_id, agent_id)
        SELECT id, $1 FROM prospects WHERE name LIKE '%5'
        """,
        team["agent"],
    )
    await pool.execute("UPDATE prospects SET status = 'Attempted'")


# Session lookup, the page, then one batch each: active calls, assignments, call history,
# status history, and the users they point to. Compiled, the whole read is one statement.
@pytest.mark.parametrize(("compiled_reads", "expected"), [(False, 7), (True, 1)])
async def test_page_statement_count_does_not_grow_with_rows(
    settings: Settings, pool: asyncpg.Pool, compiled_reads: bool, expected: int
) -> None:
    statements: list[str] = []

    def note(record: Any) -> None:
        # The request's statements: not the event reader's poll, which runs every second
        # through the same pool whatever the requests do.
        if record.query != QUERIES["call_events_after"]:
            statements.append(record.query)

    async def count_statements(connection: asyncpg.Connection) -> None:
        connection.add_query_logger(note)

    settings = replace(settings, compiled_reads=compiled_reads)
    async with running_server(settings, on_connect=count_statements) as api:
        agent = await add_user(pool, api, "budget@test.example", "agent")
        await arrange(pool, {"agent": agent["id"]})
        counts = {}
        for first in (5, 50):
            await api.data(PAGE, {"first": first}, agent["token"])  # warm the statement caches
            statements.clear()
            data = await api.data(PAGE, {"first": first}, agent["token"])
            edges = data["prospects"]["edges"]
            assert len(edges) == first
            counts[first] = len(statements)
        assert any(e["node"]["activeCall"] for e in edges)
        assert any(e["node"]["assignment"] for e in edges)
        assert all(len(e["node"]["callHistory"]) == 3 for e in edges)
    assert counts[5] == counts[50], counts
    assert counts[50] == expected, statements


async def test_pages_follow_each_other_without_gaps(
    settings: Settings, pool: asyncpg.Pool, team: Team
) -> None:
    await arrange(pool, {"agent": team.agent["id"]})
    async with running_server(settings) as api:
        seen: list[str] = []
        after = None
        while True:
            data = await api.data(
                "query($a: String) { prospects(first: 7, after: $a) {"
                " edges { node { id } } pageInfo { hasNextPage endCursor } } }",
                {"a": after},
                team.agent["token"],
            )
            page = data["prospects"]
            seen += [edge["node"]["id"] for edge in page["edges"]]
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
        assert len(seen) == len(set(seen)) == 60


async def test_filters(settings: Settings, pool: asyncpg.Pool, team: Team) -> None:
    await arrange(pool, {"agent": team.agent["id"]})
    await pool.execute(
        "UPDATE prospects SET status = 'Qualified', company = 'Initech' WHERE name = 'P7'"
    )
    async with running_server(settings) as api:
        query = (
            "query($f: ProspectFilter) { prospects(first: 100, filter: $f) {"
            " edges { node { name } } } }"
        )

        async def names(filter: dict[str, Any]) -> set[str]:
            data = await api.data(query, {"f": filter}, team.agent["token"])
            return {e["node"]["name"] for e in data["prospects"]["edges"]}

        assert await names({"status": "Qualified"}) == {"P7"}
        assert await names({"search": "initech"}) == {"P7"}
        assert await names({"search": "(212) 555-0007"}) == {"P7"}
        assert await names({"assignedTo": team.agent["id"]}) == {
            f"P{i}" for i in (5, 15, 25, 35, 45, 55)
        }
        assert await names({"search": "%"}) == set()
