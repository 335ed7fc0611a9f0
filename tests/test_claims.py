"""Whose prospect it is, and the attempt caps under real concurrency.

An agent may change a prospect, or schedule a callback on it, only when it is not assigned
to another agent nor reserved by another agent's callback; managers and admins may on any;
nobody changes an erased prospect. Every attempt cap holds exactly when many agents start
calls at once.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from helpers import (
    START_CALL,
    Api,
    Team,
    add_prospect,
    add_user,
    end,
    next_phone,
    running_server,
    start,
)

from settings import Settings

SCHEDULE = """
mutation($p: ID!, $at: DateTime!, $mine: Boolean) {
  scheduleCallback(prospectId: $p, at: $at, mine: $mine) { id agentId dueAt }
}
"""
UPDATE = """
mutation($id: ID!, $input: UpdateProspectInput!) {
  updateProspect(id: $id, input: $input) { id name status }
}
"""
ASSIGN = "mutation($p: ID!, $a: ID!) { assignLead(prospectId: $p, agentId: $a) { id } }"
ERASE = "mutation($id: ID!) { eraseProspect(id: $id) { erasedAt } }"
RULES = """
mutation($input: DialingRulesInput!) { updateDialingRules(input: $input) { maxAttemptsTotal } }
"""


def in_days(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


async def assigned_to_first_agent(api: Api, team: Team) -> dict[str, Any]:
    prospect = await add_prospect(api, team.manager["token"], next_phone())
    await api.data(ASSIGN, {"p": prospect["id"], "a": team.agents[0]["id"]}, team.manager["token"])
    return prospect


async def callbacks_of(pool: asyncpg.Pool, prospect_id: str) -> list[str | None]:
    rows = await pool.fetch(
        "SELECT agent_id::text FROM callbacks WHERE prospect_id = $1 ORDER BY created_at",
        prospect_id,
    )
    return [row["agent_id"] for row in rows]


async def test_an_agent_cannot_reserve_another_agents_lead(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    prospect = await assigned_to_first_agent(api, team)
    other = team.agents[1]["token"]
    for mine in (True, False):
        code = await api.error_code(
            SCHEDULE, {"p": prospect["id"], "at": in_days(1), "mine": mine}, other
        )
        assert code == "ASSIGNED_TO_OTHER_AGENT"
    assert await callbacks_of(pool, prospect["id"]) == []
    # The owner and a manager may; the owner's own call is not held up by it.
    await api.data(SCHEDULE, {"p": prospect["id"], "at": in_days(1)}, team.agents[0]["token"])
    await api.data(
        SCHEDULE, {"p": prospect["id"], "at": in_days(2), "mine": False}, team.manager["token"]
    )
    assert await callbacks_of(pool, prospect["id"]) == [team.agents[0]["id"], None]
    started = await start(api, team.agents[0]["token"], prospect["id"])
    assert started["activeCall"]["callerId"] == team.agents[0]["id"]


async def test_an_agent_cannot_reserve_over_another_agents_callback(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    prospect = await add_prospect(api, team.agent["token"], next_phone())
    first, second = team.agents[0], team.agents[1]
    await api.data(SCHEDULE, {"p": prospect["id"], "at": in_days(1)}, first["token"])
    code = await api.error_code(SCHEDULE, {"p": prospect["id"], "at": in_days(2)}, second["token"])
    assert code == "CALLBACK_RESERVED"
    assert await callbacks_of(pool, prospect["id"]) == [first["id"]]


async def test_a_callback_too_far_ahead_is_bad_input(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    prospect = await add_prospect(api, team.agent["token"], next_phone())
    for at in (in_days(91), "2027-12-31T00:00:00Z", "9999-12-30T00:00:00Z"):
        body = await api.graphql(SCHEDULE, {"p": prospect["id"], "at": at}, team.manager["token"])
        [error] = body["errors"]
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "at"}, at
    assert await callbacks_of(pool, prospect["id"]) == []
    await api.data(SCHEDULE, {"p": prospect["id"], "at": in_days(89)}, team.agent["token"])
    assert await callbacks_of(pool, prospect["id"]) == [team.agent["id"]]


async def test_callback_max_days_is_a_setting(settings: Settings, pool: asyncpg.Pool) -> None:
    async with running_server(replace(settings, callback_max_days=7)) as api:
        agent = await add_user(pool, api, "week@test.example", "agent")
        prospect = await add_prospect(api, agent["token"], next_phone())
        code = await api.error_code(
            SCHEDULE, {"p": prospect["id"], "at": in_days(8)}, agent["token"]
        )
        assert code == "BAD_USER_INPUT"
        await api.data(SCHEDULE, {"p": prospect["id"], "at": in_days(6)}, agent["token"])
    assert await callbacks_of(pool, prospect["id"]) == [agent["id"]]


async def test_an_agent_changes_only_unassigned_prospects_and_their_own(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    owner, other = team.agents[0], team.agents[1]
    prospect = await assigned_to_first_agent(api, team)
    change = {"id": prospect["id"], "input": {"status": "Qualified", "name": "Taken"}}
    assert await api.error_code(UPDATE, change, other["token"]) == "ASSIGNED_TO_OTHER_AGENT"
    row = await pool.fetchrow("SELECT name, status FROM prospects WHERE id = $1", prospect["id"])
    assert dict(row) == {"name": prospect["name"], "status": "New"}
    assert await pool.fetchval("SELECT count(*) FROM prospect_status_log") == 0

    owned = await api.data(UPDATE, change, owner["token"])
    assert owned["updateProspect"]["status"] == "Qualified"
    managed = await api.data(
        UPDATE, {"id": prospect["id"], "input": {"name": "Managed"}}, team.manager["token"]
    )
    assert managed["updateProspect"]["name"] == "Managed"
    # Unassigned: any agent.
    free = await add_prospect(api, team.manager["token"], next_phone())
    changed = await api.data(
        UPDATE, {"id": free["id"], "input": {"status": "Contacted"}}, other["token"]
    )
    assert changed["updateProspect"]["status"] == "Contacted"


async def test_a_callback_reservation_keeps_other_agents_from_changing_it(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    owner, other = team.agents[0], team.agents[1]
    prospect = await add_prospect(api, team.manager["token"], next_phone())
    await api.data(SCHEDULE, {"p": prospect["id"], "at": in_days(1)}, owner["token"])
    code = await api.error_code(
        UPDATE, {"id": prospect["id"], "input": {"status": "Not Interested"}}, other["token"]
    )
    assert code == "CALLBACK_RESERVED"
    assert await pool.fetchval("SELECT status FROM prospects") == "New"


async def test_an_erased_prospect_refuses_every_change(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    prospect = await add_prospect(api, team.agent["token"], next_phone())
    await api.data(ERASE, {"id": prospect["id"]}, team.admin["token"])
    before = await pool.fetchrow("SELECT * FROM prospects WHERE id = $1", prospect["id"])
    for token in (team.agent["token"], team.admin["token"]):
        body = await api.graphql(
            UPDATE, {"id": prospect["id"], "input": {"name": "Back", "phone": next_phone()}}, token
        )
        [error] = body["errors"]
        assert error["extensions"]["code"] == "PROSPECT_ERASED"
    # Whichever path makes the change: psql too. Erasing again changes nothing and passes.
    code = None
    try:
        await pool.execute(
            "UPDATE prospects SET status = 'Qualified' WHERE id = $1", prospect["id"]
        )
    except asyncpg.PostgresError as error:
        code = getattr(error, "hint", None)
    assert code == "PROSPECT_ERASED"
    await api.data(ERASE, {"id": prospect["id"]}, team.admin["token"])
    after = await pool.fetchrow("SELECT * FROM prospects WHERE id = $1", prospect["id"])
    assert {k: v for k, v in after.items() if k != "updated_at"} == {
        k: v for k, v in before.items() if k != "updated_at"
    }


# ---------------------------------------------------------------------------------------
# The caps under concurrency: twenty agents at once, ten rounds each.

AGENTS = 20
ROUNDS = 10
START_DIALLING = """
mutation($p: ID!, $n: String) { startCall(prospectId: $p, phoneNumber: $n) { callLogId } }
"""


async def floor_of(api: Api, pool: asyncpg.Pool, count: int) -> list[dict[str, Any]]:
    return list(
        await asyncio.gather(
            *(add_user(pool, api, f"cap{i}@test.example", "agent") for i in range(count))
        )
    )


async def codes_of(bodies: list[dict[str, Any]]) -> list[str]:
    return sorted(
        "STARTED" if not body.get("errors") else body["errors"][0]["extensions"]["code"]
        for body in bodies
    )


async def test_the_cap_per_number_holds_under_concurrency(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    async with running_server(replace(settings, min_call_interval_seconds=0)) as api:
        agents = await floor_of(api, pool, AGENTS)
        manager = await add_user(pool, api, "cap-manager@test.example", "manager")
        await api.data(RULES, {"input": {"maxAttemptsPerNumber24h": 1}}, manager["token"])
        for round_number in range(ROUNDS):
            number = next_phone()
            prospects = [
                await add_prospect(api, manager["token"], next_phone()) for _ in range(AGENTS)
            ]
            bodies = await asyncio.gather(
                *(
                    api.graphql(START_DIALLING, {"p": p["id"], "n": number}, agent["token"])
                    for p, agent in zip(prospects, agents, strict=True)
                )
            )
            codes = await codes_of(list(bodies))
            assert codes == ["MAX_ATTEMPTS_REACHED"] * (AGENTS - 1) + ["STARTED"], round_number
    dialled = await pool.fetch("SELECT count(*) FROM call_logs GROUP BY phone_number")
    assert [row[0] for row in dialled] == [1] * ROUNDS


async def race_one_prospect(api: Api, agents: list[dict[str, Any]], prospect_id: str) -> list[str]:
    """Every agent starts a call to the prospect at once; the one who got it ends it.
    Repeats until nobody gets it; returns the codes of the last race."""
    while True:
        bodies = await asyncio.gather(
            *(api.graphql(START_CALL, {"p": prospect_id}, agent["token"]) for agent in agents)
        )
        won = [
            (agent, body["data"]["startCall"])
            for agent, body in zip(agents, bodies, strict=True)
            if not body.get("errors")
        ]
        assert len(won) <= 1
        if not won:
            return await codes_of(list(bodies))
        agent, call = won[0]
        await end(api, agent["token"], prospect_id, call["callLogId"])


async def test_the_total_and_daily_caps_hold_under_concurrency(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    async with running_server(replace(settings, min_call_interval_seconds=0)) as api:
        agents = await floor_of(api, pool, AGENTS)
        manager = await add_user(pool, api, "caps-manager@test.example", "manager")
        for cap, rules in (
            ("total", {"maxAttemptsTotal": 3}),
            ("day", {"maxAttemptsTotal": 1000, "maxAttemptsPerDay": 2}),
        ):
            await api.data(RULES, {"input": rules}, manager["token"])
            limit = 3 if cap == "total" else 2
            for round_number in range(ROUNDS):
                prospect = await add_prospect(api, manager["token"], next_phone())
                codes = await race_one_prospect(api, agents, prospect["id"])
                assert codes == ["MAX_ATTEMPTS_REACHED"] * AGENTS, (cap, round_number)
                calls = await pool.fetchval(
                    "SELECT count(*) FROM call_logs WHERE prospect_id = $1", prospect["id"]
                )
                assert calls == limit, (cap, round_number)
