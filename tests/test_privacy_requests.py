"""Privacy requests: exporting everything held about a prospect, and erasing it."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from helpers import Api, Team, add_prospect

from resolvers import archive, reports

OLD = datetime.now(UTC) - timedelta(days=400)
NAME, PHONE, EMAIL, COMPANY = "Robin Private", "+12125550177", "robin@private.example", "Hush Ltd"
NOTES, RECORDING = "Robin says call after 5", "https://recordings.example/robin.mp3"
PERSONAL = (NAME, PHONE, EMAIL, COMPANY, NOTES, RECORDING, "robin", "5550177")

EXPORT = "mutation($id: ID!) { exportProspect(id: $id) }"
ERASE = """
mutation($id: ID!) {
  eraseProspect(id: $id) {
    erasedAt callLogsErased archivedCallLogsErased
    prospect { id name phone email company status }
  }
}
"""


async def old_call(pool: asyncpg.Pool, caller: str, prospect: str, days_ago: int) -> None:
    await pool.execute(
        """
        INSERT INTO call_logs (prospect_id, caller_id, phone_number, started_at, ended_at,
                               outcome, duration, notes, recording_url)
        VALUES ($1, $2, '+12125550177', $3::timestamptz, $3::timestamptz + interval '1 minute',
                'Connected', 60, $4, $5)
        """,
        UUID(prospect),
        UUID(caller),
        OLD - timedelta(days=days_ago),
        NOTES,
        RECORDING,
    )


async def robin(api: Api, team: Team, pool: asyncpg.Pool) -> dict[str, Any]:
    """A prospect with personal data everywhere: calls (two archived), notes, history."""
    prospect = await add_prospect(api, team.agent["token"], "(212) 555-0177", NAME)
    await api.data(
        """
        mutation($id: ID!) {
          updateProspect(id: $id, input: {email: "robin@private.example", company: "Hush Ltd",
                                          status: "Qualified"}) { id }
        }
        """,
        {"id": prospect["id"]},
        team.agent["token"],
    )
    await api.data(
        "mutation($p: ID!, $a: ID!) { assignLead(prospectId: $p, agentId: $a) { id } }",
        {"p": prospect["id"], "a": team.agent["id"]},
        team.manager["token"],
    )
    for days_ago in (0, 1):
        await old_call(pool, team.agent["id"], prospect["id"], days_ago)
    cutoff = OLD + timedelta(days=1)
    assert await archive.archive_call_logs_batch(pool, cutoff, 100) == 2
    started = await api.data(
        "mutation($p: ID!) { startCall(prospectId: $p) { callLogId } }",
        {"p": prospect["id"]},
        team.agent["token"],
    )
    await api.data(
        """
        mutation($p: ID!, $c: ID!, $n: String!, $r: String!) {
          endCall(prospectId: $p, callLogId: $c, outcome: "Callback Requested", duration: 95,
                  notes: $n, recordingUrl: $r) { id }
        }
        """,
        {"p": prospect["id"], "c": started["startCall"]["callLogId"], "n": NOTES, "r": RECORDING},
        team.agent["token"],
    )
    return prospect


async def test_an_export_holds_everything_and_is_logged(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    prospect = await robin(api, team, pool)
    data = await api.data(EXPORT, {"id": prospect["id"]}, team.admin["token"])
    export = data["exportProspect"]

    assert export["prospect"]["name"] == NAME
    assert export["prospect"]["phone"] == PHONE
    assert export["prospect"]["email"] == EMAIL
    assert export["prospect"]["company"] == COMPANY
    calls = export["call_logs"]
    assert [(c["archived"], c["outcome"], c["notes"]) for c in calls] == [
        (True, "Connected", NOTES),
        (True, "Connected", NOTES),
        (False, "Callback Requested", NOTES),
    ]
    assert calls[-1]["recording_url"] == RECORDING
    assert [(s["old_status"], s["new_status"]) for s in export["status_changes"]][:2] == [
        ("New", "Qualified"),
        ("Qualified", "Callback"),
    ]
    assert [a["agent_id"] for a in export["lead_assignments"]] == [team.agent["id"]]
    assert export["active_call"] is None
    # Tables added by later migrations that reference prospects come along too.
    assert isinstance(export["other_records"], dict)
    assert [(r["kind"], r["requested_by"]) for r in export["privacy_requests"]] == [
        ("export", team.admin["id"])
    ]
    logged = await pool.fetch("SELECT kind, requested_by, created_at FROM privacy_requests")
    assert [(r["kind"], str(r["requested_by"])) for r in logged] == [("export", team.admin["id"])]
    assert logged[0]["created_at"] > datetime.now(UTC) - timedelta(minutes=1)


@pytest.mark.parametrize("mutation", [EXPORT, ERASE], ids=["export", "erase"])
async def test_privacy_requests_are_for_admins(
    api: Api, team: Team, pool: asyncpg.Pool, mutation: str
) -> None:
    prospect = await add_prospect(api, team.agent["token"], "(212) 555-0178", NAME)
    variables = {"id": prospect["id"]}
    assert await api.error_code(mutation, variables) == "UNAUTHENTICATED"
    for user in (team.agent, team.manager):
        assert await api.error_code(mutation, variables, user["token"]) == "FORBIDDEN"
    unknown = {"id": "00000000-0000-4000-8000-000000000000"}
    assert await api.error_code(mutation, unknown, team.admin["token"]) == "NOT_FOUND"
    assert await api.error_code(mutation, {"id": "nope"}, team.admin["token"]) == "BAD_USER_INPUT"
    assert await pool.fetchval("SELECT count(*) FROM privacy_requests") == 0
    assert await pool.fetchval("SELECT name FROM prospects") == NAME


REPORTS = """
query($from: DateTime!, $to: DateTime!) {
  agentPerformance(from: $from, to: $to) { agentId calls contacts totalTalkSeconds }
  callStats(from: $from, to: $to) { calls contacts }
  prospectsCalledMultipleTimes(minCalls: 2) { edges { node { prospectId callCount } } }
}
"""


async def test_erasure_removes_personal_data_and_keeps_the_counts(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    prospect = await robin(api, team, pool)
    window = {
        "from": (OLD - timedelta(days=2)).isoformat(),
        "to": (OLD + timedelta(days=300)).isoformat(),
    }
    reports_before = await api.data(REPORTS, window, team.manager["token"])
    calls_before = await pool.fetch(
        "SELECT id, caller_id, started_at, ended_at, outcome, duration, archived"
        " FROM call_logs_with_archive ORDER BY id"
    )
    history_before = await pool.fetch("SELECT * FROM prospect_status_log_with_archive ORDER BY id")

    data = await api.data(ERASE, {"id": prospect["id"]}, team.admin["token"])
    erased = data["eraseProspect"]
    assert erased["callLogsErased"] == 1
    assert erased["archivedCallLogsErased"] == 2
    placeholder = erased["prospect"]["phone"]
    assert re.fullmatch(r"\+999\d{12}", placeholder)
    assert erased["prospect"] == {
        "id": prospect["id"],
        "name": "[erased]",
        "phone": placeholder,
        "email": None,
        "company": None,
        "status": "Callback",  # statuses are not personal; reports count them
    }

    # What reports need is untouched; personal data is gone from every call, archived too.
    assert await api.data(REPORTS, window, team.manager["token"]) == reports_before
    assert (
        await pool.fetch(
            "SELECT id, caller_id, started_at, ended_at, outcome, duration, archived"
            " FROM call_logs_with_archive ORDER BY id"
        )
        == calls_before
    )
    assert (
        await pool.fetch("SELECT * FROM prospect_status_log_with_archive ORDER BY id")
        == history_before
    )
    assert (
        await pool.fetch(
            "SELECT DISTINCT phone_number, notes, recording_url FROM call_logs_with_archive"
        )
    ) == [(placeholder, None, None)]

    export = json.dumps(
        (await api.data(EXPORT, {"id": prospect["id"]}, team.admin["token"]))["exportProspect"]
    )
    for value in PERSONAL:
        assert value.lower() not in export.lower(), value
    requests = await pool.fetch(
        "SELECT kind, requested_by, details FROM privacy_requests ORDER BY id"
    )
    assert [(r["kind"], str(r["requested_by"])) for r in requests] == [
        ("erase", team.admin["id"]),
        ("export", team.admin["id"]),
    ]
    assert requests[0]["details"] == {"call_logs": 1, "archived_call_logs": 2}

    # Erasing again is harmless: the same placeholder and erasure time, logged again.
    again = (await api.data(ERASE, {"id": prospect["id"]}, team.admin["token"]))["eraseProspect"]
    assert again["prospect"]["phone"] == placeholder
    assert again["erasedAt"] == erased["erasedAt"]
    assert await pool.fetchval("SELECT count(*) FROM privacy_requests WHERE kind = 'erase'") == 2


async def test_an_erased_prospect_cannot_be_called(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    prospect = await add_prospect(api, team.agent["token"], "(212) 555-0179", NAME)
    await api.data(ERASE, {"id": prospect["id"]}, team.admin["token"])
    code = await api.error_code(
        "mutation($p: ID!) { startCall(prospectId: $p) { callLogId } }",
        {"p": prospect["id"]},
        team.agent["token"],
    )
    # The dialing rules name the reason; a trigger on call_logs stands behind them.
    assert code == "PROSPECT_ERASED"
    assert await pool.fetchval("SELECT count(*) FROM call_logs") == 0
    assert await pool.fetchval("SELECT count(*) FROM active_calls") == 0


async def test_a_prospect_on_a_call_is_not_erased(api: Api, team: Team, pool: asyncpg.Pool) -> None:
    prospect = await add_prospect(api, team.agent["token"], "(212) 555-0180", NAME)
    await api.data(
        "mutation($p: ID!) { startCall(prospectId: $p) { callLogId } }",
        {"p": prospect["id"]},
        team.agent["token"],
    )
    assert await api.error_code(ERASE, {"id": prospect["id"]}, team.admin["token"]) == "CONFLICT"
    assert await pool.fetchval("SELECT name FROM prospects") == NAME
    assert await pool.fetchval("SELECT count(*) FROM privacy_requests") == 0
    assert await pool.fetchval("SELECT count(*) FROM active_calls") == 1


async def test_erasing_while_the_archiver_moves_the_same_calls(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    prospects = [
        await add_prospect(api, team.agent["token"], f"(212) 555-{200 + i:04d}", f"Person {i}")
        for i in range(8)
    ]
    for prospect in prospects:
        for days_ago in range(25):
            await old_call(pool, team.agent["id"], prospect["id"], days_ago)
    total = await pool.fetchval("SELECT count(*) FROM call_logs")
    moving = True

    async def archiver() -> int:
        moved = 0
        cutoff = datetime.now(UTC)
        while moving:
            moved += await archive.archive_call_logs_batch(pool, cutoff, 7)
        return moved

    archiving = asyncio.create_task(archiver())
    for prospect in prospects:
        await api.data(ERASE, {"id": prospect["id"]}, team.admin["token"])
    moving = False
    assert await archiving > 0
    assert await pool.fetchval("SELECT count(*) FROM call_logs_with_archive") == total
    leftovers = await pool.fetchval(
        "SELECT count(*) FROM call_logs_with_archive"
        " WHERE notes IS NOT NULL OR recording_url IS NOT NULL OR phone_number NOT LIKE '+999%'"
    )
    assert leftovers == 0
    await reports.fold_call_stats(pool)
    assert await pool.fetchval("SELECT sum(call_count) FROM prospect_call_counts") == total
