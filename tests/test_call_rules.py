"""The duplicate-call rules: one active call, the minimum gap, assignments, ending calls."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import asyncpg
import pytest
from helpers import (
    END_CALL,
    START_CALL,
    Api,
    Team,
    add_prospect,
    add_user,
    assert_in_call,
    end,
    next_phone,
    running_server,
    start,
)

from settings import Settings

CAN_CALL = """
query($p: ID!) { canCall(prospectId: $p) { allowed reason code lastCallTime lastCallerId } }
"""


async def test_start_and_end_a_call(api: Api, team: Team, pool: asyncpg.Pool) -> None:
    prospect = await add_prospect(api, team.agent["token"], next_phone())
    started = await start(api, team.agent["token"], prospect["id"])
    await assert_in_call(pool, started, prospect["id"], team.agent["id"])

    ended = await api.data(
        END_CALL,
        {"p": prospect["id"], "c": started["callLogId"], "o": "Connected", "d": 95},
        team.agent["token"],
    )
    assert ended["endCall"]["outcome"] == "Connected"
    assert ended["endCall"]["duration"] == 95
    assert ended["endCall"]["endedAt"] is not None
    assert await pool.fetchval("SELECT count(*) FROM active_calls") == 0
    row = await pool.fetchrow(
        "SELECT status, last_call FROM prospects WHERE id = $1", prospect["id"]
    )
    started_at = await pool.fetchval(
        "SELECT started_at FROM call_logs WHERE id = $1", started["callLogId"]
    )
    assert row["status"] == "Contacted"  # the disposition's status
    assert row["last_call"] == started_at


async def test_a_second_start_is_already_in_call(api: Api, team: Team, pool: asyncpg.Pool) -> None:
    prospect = await add_prospect(api, team.agent["token"], next_phone())
    first = await start(api, team.agents[0]["token"], prospect["id"])
    code = await api.error_code(START_CALL, {"p": prospect["id"]}, team.agents[1]["token"])
    assert code == "ALREADY_IN_CALL"
    # The refusal wrote nothing: the first call is still the only one.
    await assert_in_call(pool, first, prospect["id"], team.agents[0]["id"])
    assert await pool.fetchval("SELECT count(*) FROM call_logs") == 1
    check = await api.data(CAN_CALL, {"p": prospect["id"]}, team.agents[1]["token"])
    assert check["canCall"]["allowed"] is False
    assert check["canCall"]["code"] == "ALREADY_IN_CALL"
    assert check["canCall"]["reason"] == "Prospect is currently on another call"


async def test_recently_called_within_the_gap(api: Api, team: Team, pool: asyncpg.Pool) -> None:
    prospect = await add_prospect(api, team.agent["token"], next_phone())
    call = await start(api, team.agent["token"], prospect["id"])
    await end(api, team.agent["token"], prospect["id"], call["callLogId"])

    body = await api.graphql(START_CALL, {"p": prospect["id"]}, team.agents[1]["token"])
    [error] = body["errors"]
    assert error["extensions"]["code"] == "RECENTLY_CALLED"
    assert error["message"] == "Prospect was called recently (within 5 minutes)"
    assert error["extensions"]["lastCallerId"] == team.agent["id"]
    assert error["extensions"]["lastCallTime"]
    assert await pool.fetchval("SELECT count(*) FROM call_logs") == 1

    check = await api.data(CAN_CALL, {"p": prospect["id"]}, team.agents[1]["token"])
    assert check["canCall"]["code"] == "RECENTLY_CALLED"
    assert check["canCall"]["lastCallerId"] == team.agent["id"]


async def test_the_gap_is_over_once_it_has_passed(api: Api, team: Team, pool: asyncpg.Pool) -> None:
    prospect = await add_prospect(api, team.agent["token"], next_phone())
    call = await start(api, team.agent["token"], prospect["id"])
    await end(api, team.agent["token"], prospect["id"], call["callLogId"])
    # Move the call six minutes into the past rather than waiting for it.
    await pool.execute(
        "UPDATE call_logs SET started_at = started_at - interval '6 minutes' WHERE id = $1",
        call["callLogId"],
    )
    check = await api.data(CAN_CALL, {"p": prospect["id"]}, team.agents[1]["token"])
    assert check["canCall"] == {
        "allowed": True,
        "reason": None,
        "code": None,
        "lastCallTime": check["canCall"]["lastCallTime"],
        "lastCallerId": team.agent["id"],
    }
    second = await start(api, team.agents[1]["token"], prospect["id"])
    await assert_in_call(pool, second, prospect["id"], team.agents[1]["id"])


async def test_the_gap_is_configurable(settings: Settings, pool: asyncpg.Pool) -> None:
    async with running_server(replace(settings, min_call_interval_seconds=90)) as api:
        agent = await add_user(pool, api, "gap@test.example", "agent")
        prospect = await add_prospect(api, agent["token"], next_phone())
        call = await start(api, agent["token"], prospect["id"])
        await end(api, agent["token"], prospect["id"], call["callLogId"])
        body = await api.graphql(START_CALL, {"p": prospect["id"]}, agent["token"])
        assert body["errors"][0]["message"] == "Prospect was called recently (within 90 seconds)"
        assert await pool.fetchval("SELECT count(*) FROM call_logs") == 1
        await pool.execute("UPDATE call_logs SET started_at = started_at - interval '91 seconds'")
        again = await start(api, agent["token"], prospect["id"])
        await assert_in_call(pool, again, prospect["id"], agent["id"])


async def test_can_call_prospect_returns_the_seed_json(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    prospect = await add_prospect(api, team.agent["token"], next_phone())
    assert await pool.fetchval(
        "SELECT can_call_prospect($1, $2)", prospect["id"], team.agent["id"]
    ) == {"allowed": True}
    call = await start(api, team.agent["token"], prospect["id"])
    answer = await pool.fetchval(
        "SELECT can_call_prospect($1, $2)", prospect["id"], team.agents[1]["id"]
    )
    assert set(answer) == {"allowed", "reason", "last_call_time", "last_caller_id"}
    assert answer["allowed"] is False
    assert answer["reason"] == "Prospect is currently on another call"
    assert answer["last_caller_id"] == team.agent["id"]
    started_at = await pool.fetchval(
        "SELECT started_at FROM call_logs WHERE id = $1", call["callLogId"]
    )
    assert answer["last_call_time"].startswith(started_at.isoformat()[:19])


async def test_assigned_prospect_is_refused_to_other_agents(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    prospect = await add_prospect(api, team.agent["token"], next_phone())
    await api.data(
        "mutation($p: ID!, $a: ID!) { assignLead(prospectId: $p, agentId: $a) { id } }",
        {"p": prospect["id"], "a": team.agents[0]["id"]},
        team.manager["token"],
    )
    code = await api.error_code(START_CALL, {"p": prospect["id"]}, team.agents[1]["token"])
    assert code == "ASSIGNED_TO_OTHER_AGENT"
    assert await pool.fetchval("SELECT count(*) FROM call_logs") == 0
    # The manager may override; the assigned agent may call.
    call = await start(api, team.manager["token"], prospect["id"])
    await assert_in_call(pool, call, prospect["id"], team.manager["id"])
    await end(api, team.manager["token"], prospect["id"], call["callLogId"])
    await pool.execute("UPDATE call_logs SET started_at = started_at - interval '1 hour'")
    assigned = await start(api, team.agents[0]["token"], prospect["id"])
    await assert_in_call(pool, assigned, prospect["id"], team.agents[0]["id"])


async def test_expired_assignment_no_longer_holds(api: Api, team: Team, pool: asyncpg.Pool) -> None:
    prospect = await add_prospect(api, team.agent["token"], next_phone())
    await api.data(
        "mutation($p: ID!, $a: ID!, $e: DateTime) {"
        " assignLead(prospectId: $p, agentId: $a, expiresAt: $e) { expiresAt } }",
        {"p": prospect["id"], "a": team.agents[0]["id"], "e": "2999-01-01T00:00:00Z"},
        team.manager["token"],
    )
    # While it holds, the other agent is refused.
    code = await api.error_code(START_CALL, {"p": prospect["id"]}, team.agents[1]["token"])
    assert code == "ASSIGNED_TO_OTHER_AGENT"
    await pool.execute("UPDATE lead_assignments SET expires_at = now() - interval '1 second'")
    started = await start(api, team.agents[1]["token"], prospect["id"])
    await assert_in_call(pool, started, prospect["id"], team.agents[1]["id"])


async def test_unassign_frees_the_prospect(api: Api, team: Team, pool: asyncpg.Pool) -> None:
    prospect = await add_prospect(api, team.agent["token"], next_phone())
    assign = "mutation($p: ID!, $a: ID!) { assignLead(prospectId: $p, agentId: $a) { id } }"
    await api.data(assign, {"p": prospect["id"], "a": team.agents[0]["id"]}, team.manager["token"])
    code = await api.error_code(START_CALL, {"p": prospect["id"]}, team.agents[1]["token"])
    assert code == "ASSIGNED_TO_OTHER_AGENT"
    unassigned = await api.data(
        "mutation($p: ID!) { unassignLead(prospectId: $p) }",
        {"p": prospect["id"]},
        team.manager["token"],
    )
    assert unassigned["unassignLead"] is True
    active = "SELECT count(*) FROM lead_assignments WHERE prospect_id = $1 AND active"
    assert await pool.fetchval(active, prospect["id"]) == 0
    started = await start(api, team.agents[1]["token"], prospect["id"])
    await assert_in_call(pool, started, prospect["id"], team.agents[1]["id"])


async def test_ending_twice_is_call_not_active(api: Api, team: Team, pool: asyncpg.Pool) -> None:
    prospect = await add_prospect(api, team.agent["token"], next_phone())
    call = await start(api, team.agent["token"], prospect["id"])
    await end(api, team.agent["token"], prospect["id"], call["callLogId"])
    code = await api.error_code(
        END_CALL,
        {"p": prospect["id"], "c": call["callLogId"], "o": "Connected"},
        team.agent["token"],
    )
    assert code == "CALL_NOT_ACTIVE"
    # The first ending stands.
    outcome = await pool.fetchval("SELECT outcome FROM call_logs WHERE id = $1", call["callLogId"])
    assert outcome == "No Answer"


async def test_disposition_status_is_applied_and_logged(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    prospect = await add_prospect(api, team.agent["token"], next_phone())
    call = await start(api, team.agent["token"], prospect["id"])
    await end(api, team.agent["token"], prospect["id"], call["callLogId"], "Callback Requested")
    rows = await pool.fetch(
        "SELECT old_status, new_status, changed_by FROM prospect_status_log WHERE prospect_id = $1",
        prospect["id"],
    )
    assert [(r["old_status"], r["new_status"], str(r["changed_by"])) for r in rows] == [
        ("New", "Callback", team.agent["id"])
    ]


async def test_caller_is_the_signed_in_user_not_an_argument(api: Api) -> None:
    schema = await api.graphql('{ __type(name: "Mutation") { fields { name args { name } } } }')
    fields = {f["name"]: {a["name"] for a in f["args"]} for f in schema["data"]["__type"]["fields"]}
    assert fields["startCall"] == {"prospectId", "phoneNumber", "fromNumber"}
    assert "callerId" not in fields["endCall"]


ROUNDS = 20
RACERS = 50


async def test_fifty_agents_racing_exactly_one_wins(settings: Settings, pool: asyncpg.Pool) -> None:
    """50 agents start a call on one prospect at the same moment, over 20 rounds."""
    async with running_server(replace(settings, pool_max_size=25)) as api:
        agents = await asyncio.gather(
            *(add_user(pool, api, f"racer{i}@test.example", "agent") for i in range(RACERS))
        )
        for round_number in range(ROUNDS):
            prospect = await add_prospect(api, agents[0]["token"], next_phone())
            barrier = asyncio.Event()

            async def race(
                agent: dict[str, Any], prospect_id: str = prospect["id"], go: Any = barrier
            ) -> Any:
                await go.wait()
                return await api.graphql(START_CALL, {"p": prospect_id}, agent["token"])

            tasks = [asyncio.create_task(race(agent)) for agent in agents]
            await asyncio.sleep(0)  # a yield: every racer reaches the barrier first
            barrier.set()
            results = await asyncio.gather(*tasks)
            winners = [r for r in results if not r.get("errors")]
            codes = [r["errors"][0]["extensions"]["code"] for r in results if r.get("errors")]
            assert len(winners) == 1, f"round {round_number}: {len(winners)} winners"
            assert codes == ["ALREADY_IN_CALL"] * (RACERS - 1), f"round {round_number}: {codes}"
            assert (
                await pool.fetchval(
                    "SELECT count(*) FROM call_logs WHERE prospect_id = $1", prospect["id"]
                )
                == 1
            )
        assert await pool.fetchval("SELECT count(*) FROM active_calls") == ROUNDS


async def test_racing_directly_in_sql_exactly_one_wins(
    database_url: str, pool: asyncpg.Pool
) -> None:
    """The rule holds for any client: 50 raw connections call start_call() at once."""
    callers = [
        await pool.fetchval(
            "INSERT INTO users (email, password_hash, role) VALUES ($1, 'x', 'agent') RETURNING id",
            f"sql{i}@test.example",
        )
        for i in range(RACERS)
    ]
    connections = await asyncio.gather(*(asyncpg.connect(database_url) for _ in callers))
    try:
        for round_number in range(ROUNDS):
            prospect_id = await pool.fetchval(
                "INSERT INTO prospects (name, phone) VALUES ('Race', $1) RETURNING id",
                f"+1212555{round_number:04d}",
            )

            async def attempt(
                connection: asyncpg.Connection, caller: Any, prospect: Any = prospect_id
            ) -> str:
                try:
                    await connection.fetchrow(
                        "SELECT * FROM start_call($1, $2, NULL, NULL)", prospect, caller
                    )
                except asyncpg.PostgresError as error:
                    return f"{error.sqlstate}:{getattr(error, 'hint', '')}"
                return "WON"

            outcomes = await asyncio.gather(
                *(attempt(c, caller) for c, caller in zip(connections, callers, strict=True))
            )
            assert sorted(outcomes) == ["CF000:ALREADY_IN_CALL"] * (RACERS - 1) + ["WON"]
    finally:
        await asyncio.gather(*(c.close() for c in connections))


async def test_racing_end_calls_end_it_once(api: Api, team: Team, pool: asyncpg.Pool) -> None:
    """An agent and a manager end the same call at once: one ends it, one hears it is over."""
    for _ in range(10):
        prospect = await add_prospect(api, team.agent["token"], next_phone())
        call = await start(api, team.agent["token"], prospect["id"])
        variables = {"p": prospect["id"], "c": call["callLogId"], "o": "Busy"}
        results = await asyncio.gather(
            api.graphql(END_CALL, variables, team.agent["token"]),
            api.graphql(END_CALL, variables, team.manager["token"]),
        )
        codes = sorted(
            r["errors"][0]["extensions"]["code"] if r.get("errors") else "OK" for r in results
        )
        assert codes == ["CALL_NOT_ACTIVE", "OK"]
    assert await pool.fetchval("SELECT count(*) FROM prospect_status_log") == 10


@pytest.mark.parametrize("outcome", ["Voicemail", "Do Not Call"])
async def test_outcomes_come_from_the_dispositions_table(
    api: Api, team: Team, pool: asyncpg.Pool, outcome: str
) -> None:
    prospect = await add_prospect(api, team.agent["token"], next_phone())
    call = await start(api, team.agent["token"], prospect["id"])
    await end(api, team.agent["token"], prospect["id"], call["callLogId"], outcome)
    expected = await pool.fetchval("SELECT sets_status FROM dispositions WHERE name = $1", outcome)
    status = await pool.fetchval("SELECT status FROM prospects WHERE id = $1", prospect["id"])
    assert status == expected


async def test_a_team_adds_its_own_outcome(api: Api, team: Team, pool: asyncpg.Pool) -> None:
    await pool.execute("INSERT INTO prospect_statuses (name) VALUES ('Demo Booked')")
    await pool.execute(
        "INSERT INTO dispositions (name, sets_status) VALUES ('Booked Demo', 'Demo Booked')"
    )
    prospect = await add_prospect(api, team.agent["token"], next_phone())
    call = await start(api, team.agent["token"], prospect["id"])
    await end(api, team.agent["token"], prospect["id"], call["callLogId"], "Booked Demo")
    status = await pool.fetchval("SELECT status FROM prospects WHERE id = $1", prospect["id"])
    assert status == "Demo Booked"
