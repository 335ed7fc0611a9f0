"""Every status change is logged by the trigger, whichever client makes it."""

from __future__ import annotations

import asyncio
import itertools

import asyncpg
from helpers import Api, Team, add_prospect

UPDATE = """
mutation($id: ID!, $input: UpdateProspectInput!) {
  updateProspect(id: $id, input: $input) { status email company }
}
"""
HISTORY = """
query($id: ID!) {
  prospect(id: $id) { statusHistory(first: 10) { oldStatus newStatus changedBy { email } } }
}
"""


async def test_api_status_change_is_logged_with_the_user(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    prospect = await add_prospect(api, team.agent["token"])
    await api.data(
        UPDATE, {"id": prospect["id"], "input": {"status": "Qualified"}}, team.agent["token"]
    )
    data = await api.data(HISTORY, {"id": prospect["id"]}, team.manager["token"])
    assert data["prospect"]["statusHistory"] == [
        {"oldStatus": "New", "newStatus": "Qualified", "changedBy": {"email": team.agent["email"]}}
    ]


async def test_direct_sql_update_is_logged_too(api: Api, team: Team, pool: asyncpg.Pool) -> None:
    prospect = await add_prospect(api, team.agent["token"])
    await pool.execute("UPDATE prospects SET status = 'Bad Number' WHERE id = $1", prospect["id"])
    row = await pool.fetchrow(
        "SELECT old_status, new_status, changed_by, db_user FROM prospect_status_log"
        " WHERE prospect_id = $1",
        prospect["id"],
    )
    assert (row["old_status"], row["new_status"], row["changed_by"]) == ("New", "Bad Number", None)
    assert row["db_user"] == await pool.fetchval("SELECT session_user")


async def test_acting_user_set_by_hand_in_sql_is_recorded(
    team: Team, pool: asyncpg.Pool, api: Api
) -> None:
    prospect = await add_prospect(api, team.agent["token"])
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute("SELECT set_config('app.user_id', $1, true)", team.manager["id"])
        await connection.execute(
            "UPDATE prospects SET status = 'Qualified' WHERE id = $1", prospect["id"]
        )
    changed_by = await pool.fetchval(
        "SELECT changed_by FROM prospect_status_log WHERE prospect_id = $1", prospect["id"]
    )
    assert str(changed_by) == team.manager["id"]


async def test_unchanged_status_and_other_fields_log_nothing(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    prospect = await add_prospect(api, team.agent["token"])
    await api.data(
        UPDATE,
        {"id": prospect["id"], "input": {"status": "New", "company": "Initech"}},
        team.agent["token"],
    )
    assert await pool.fetchval("SELECT count(*) FROM prospect_status_log") == 0


async def test_null_clears_optional_fields(api: Api, team: Team) -> None:
    prospect = await add_prospect(api, team.agent["token"])
    await api.data(
        UPDATE,
        {"id": prospect["id"], "input": {"email": "pat@example.com", "company": "Initech"}},
        team.agent["token"],
    )
    data = await api.data(
        UPDATE, {"id": prospect["id"], "input": {"email": None}}, team.agent["token"]
    )
    assert data["updateProspect"] == {"status": "New", "email": None, "company": "Initech"}


async def test_concurrent_status_changes_are_each_logged(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    prospect = await add_prospect(api, team.agent["token"])
    statuses = ["Attempted", "Contacted", "Callback", "Qualified"] * 10
    for status in statuses:  # sequential chain: each change sees the previous
        await api.data(
            UPDATE, {"id": prospect["id"], "input": {"status": status}}, team.agent["token"]
        )
    await asyncio.gather(
        *(
            api.data(UPDATE, {"id": prospect["id"], "input": {"status": s}}, team.agent["token"])
            for s in ["Attempted", "Contacted"] * 10
        )
    )
    rows = await pool.fetch(
        "SELECT old_status, new_status FROM prospect_status_log WHERE prospect_id = $1 ORDER BY id",
        prospect["id"],
    )
    # The log is an unbroken chain: each entry starts where the previous ended.
    assert rows[0]["old_status"] == "New"
    for previous, current in itertools.pairwise(rows):
        assert current["old_status"] == previous["new_status"]
    final = await pool.fetchval("SELECT status FROM prospects WHERE id = $1", prospect["id"])
    assert rows[-1]["new_status"] == final
