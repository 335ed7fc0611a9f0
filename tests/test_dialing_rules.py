"""The dialing rules: next lead, Do-Not-Call, calling hours, caps, callbacks, assignments."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from helpers import (
    START_CALL,
    Api,
    Team,
    add_prospect,
    add_user,
    assert_in_call,
    end,
    next_phone,
    start,
)

from sql import database

NEXT_LEAD = """
mutation {
  nextLead {
    nothingCallable callLogId
    prospect { id name phone }
    activeCall { callerId prospectId }
    heldBack { code prospects }
  }
}
"""
EXPLAIN = """
query($p: ID!, $at: DateTime) {
  explainEligibility(prospectId: $p, at: $at) {
    callable callableByNextLead
    rules { code blocking queueOnly until reason }
  }
}
"""


@pytest.fixture
async def default_rules(pool: asyncpg.Pool) -> None:
    """The production defaults for hours and caps (the shared template opens everything)."""
    await pool.execute(
        """
        UPDATE calling_hours SET opens_at = '08:00', closes_at = '21:00';
        UPDATE dialing_rules SET max_attempts_total = 12, max_attempts_per_day = 3,
                                 max_attempts_per_number_24h = 3;
        """
    )


async def next_lead(api: Api, token: str) -> dict[str, Any]:
    data = await api.data(NEXT_LEAD, token=token)
    result: dict[str, Any] = data["nextLead"]
    return result


async def explain(api: Api, token: str, prospect_id: str, at: str | None = None) -> dict[str, Any]:
    data = await api.data(EXPLAIN, {"p": prospect_id, "at": at}, token)
    result: dict[str, Any] = data["explainEligibility"]
    return result


def blocking(eligibility: dict[str, Any]) -> list[str]:
    return [rule["code"] for rule in eligibility["rules"] if rule["blocking"]]


async def test_next_lead_starts_a_call_on_the_best_prospect(api: Api, team: Team) -> None:
    low = await add_prospect(api, team.manager["token"], next_phone(), name="Low")
    high = await api.data(
        "mutation($i: CreateProspectInput!) { createProspect(input: $i) { id } }",
        {"i": {"name": "High", "phone": next_phone(), "priority": 5}},
        team.manager["token"],
    )
    lead = await next_lead(api, team.agent["token"])
    assert lead["nothingCallable"] is False
    assert lead["prospect"]["id"] == high["createProspect"]["id"]
    assert lead["activeCall"]["callerId"] == team.agent["id"]
    second = await next_lead(api, team.agents[1]["token"])
    assert second["prospect"]["id"] == low["id"]
    third = await next_lead(api, team.agents[1]["token"])
    assert third["nothingCallable"] is True
    held = {h["code"]: h["prospects"] for h in third["heldBack"]}
    assert held["ALREADY_IN_CALL"] == 2


async def test_do_not_call_blocks_every_path_and_a_disposition_adds_to_it(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    listed = await add_prospect(api, team.manager["token"], "(212) 555-0777")
    await api.data(
        'mutation { addDoNotCall(phone: "+1 212 555 0777", reason: "asked") { phone source } }',
        token=team.manager["token"],
    )
    assert (
        await api.error_code(START_CALL, {"p": listed["id"]}, team.agent["token"]) == "DO_NOT_CALL"
    )
    rest = await api.client.post(
        f"/api/prospects/{listed['id']}/start-call",
        json={},
        headers={"authorization": f"Bearer {team.agent['token']}"},
    )
    assert (rest.status_code, rest.json()["code"]) == (409, "DO_NOT_CALL")
    lead = await next_lead(api, team.agent["token"])
    assert lead["nothingCallable"] is True
    assert {"code": "DO_NOT_CALL", "prospects": 1} in lead["heldBack"]

    # A "Do Not Call" outcome lists the number in the same transaction.
    other = await add_prospect(api, team.manager["token"], next_phone())
    call = await start(api, team.agent["token"], other["id"])
    await end(api, team.agent["token"], other["id"], call["callLogId"], "Do Not Call")
    listed_phones = await pool.fetch(
        "SELECT phone, source FROM do_not_call WHERE removed_at IS NULL"
    )
    assert {(r["phone"], r["source"]) for r in listed_phones} == {
        ("+12125550777", "api"),
        (other["phone"], "disposition"),
    }
    # Removing is audited: the entry stays, marked removed, and calling works again.
    removed = await api.data(
        'mutation { removeDoNotCall(phone: "212-555-0777", reason: "consented") }',
        token=team.manager["token"],
    )
    assert removed["removeDoNotCall"] is True
    row = await pool.fetchrow(
        "SELECT removed_by, removal_reason FROM do_not_call WHERE phone = '+12125550777'"
    )
    assert (str(row["removed_by"]), row["removal_reason"]) == (team.manager["id"], "consented")
    started = await start(api, team.agent["token"], listed["id"])
    await assert_in_call(pool, started, listed["id"], team.agent["id"])


async def test_outside_calling_hours_with_the_next_opening(
    api: Api, team: Team, pool: asyncpg.Pool, default_rules: None
) -> None:
    prospect = await add_prospect(api, team.manager["token"], next_phone())
    # 03:00 in New York on a Wednesday in winter (EST, UTC-5) is 08:00 UTC.
    at = "2027-01-13T08:00:00+00:00"
    result = await explain(api, team.agent["token"], prospect["id"], at)
    hours = next(r for r in result["rules"] if r["code"] == "OUTSIDE_CALLING_HOURS")
    assert hours["blocking"] is True
    assert hours["until"] == "2027-01-13T13:00:00+00:00"  # 08:00 EST
    noon = await explain(api, team.agent["token"], prospect["id"], "2027-01-13T17:00:00+00:00")
    assert "OUTSIDE_CALLING_HOURS" not in blocking(noon)


async def test_daylight_saving_moves_the_window_in_utc(
    api: Api, team: Team, default_rules: None
) -> None:
    prospect = await add_prospect(api, team.manager["token"], next_phone())
    # New York opens at 08:00 local: 13:00 UTC in winter, 12:00 UTC in summer.
    # DST begins 2027-03-14; 12:30 UTC is 07:30 EST on the 13th and 08:30 EDT on the 15th.
    before = await explain(api, team.agent["token"], prospect["id"], "2027-03-13T12:30:00+00:00")
    after = await explain(api, team.agent["token"], prospect["id"], "2027-03-15T12:30:00+00:00")
    assert "OUTSIDE_CALLING_HOURS" in blocking(before)
    assert "OUTSIDE_CALLING_HOURS" not in blocking(after)
    opening = next(r for r in before["rules"] if r["code"] == "OUTSIDE_CALLING_HOURS")["until"]
    assert opening == "2027-03-13T13:00:00+00:00"


async def test_a_number_spanning_zones_gets_only_the_hours_allowed_in_all(
    api: Api, team: Team, default_rules: None
) -> None:
    # +1 208 spans America/Boise (Mountain) and America/Los_Angeles (Pacific).
    idaho = await add_prospect(api, team.manager["token"], "+1 208 555 0142", name="Idaho")
    data = await api.data(
        "query($p: ID!) { prospect(id: $p) { timeZones } }", {"p": idaho["id"]}, team.agent["token"]
    )
    assert sorted(data["prospect"]["timeZones"]) == ["America/Boise", "America/Los_Angeles"]
    # Winter: 08:30 Mountain is 07:30 Pacific (closed); 08:30 Pacific is 09:30 Mountain.
    early = await explain(api, team.agent["token"], idaho["id"], "2027-01-13T15:30:00+00:00")
    assert "OUTSIDE_CALLING_HOURS" in blocking(early)
    hours = next(r for r in early["rules"] if r["code"] == "OUTSIDE_CALLING_HOURS")
    assert hours["until"] == "2027-01-13T16:00:00+00:00"  # 08:00 Pacific
    # 20:30 Pacific is 21:30 Mountain: closed there, so closed.
    late = await explain(api, team.agent["token"], idaho["id"], "2027-01-14T04:30:00+00:00")
    assert "OUTSIDE_CALLING_HOURS" in blocking(late)
    # An explicit zone overrides the number's.
    await api.data(
        "mutation($p: ID!) {"
        ' updateProspect(id: $p, input: {timeZone: "America/Los_Angeles"}) { id } }',
        {"p": idaho["id"]},
        team.manager["token"],
    )
    early_again = await explain(api, team.agent["token"], idaho["id"], "2027-01-13T16:30:00+00:00")
    assert "OUTSIDE_CALLING_HOURS" not in blocking(early_again)


async def test_attempt_caps_at_their_boundaries(api: Api, team: Team, pool: asyncpg.Pool) -> None:
    await pool.execute(
        "UPDATE dialing_rules SET max_attempts_per_day = 2, max_attempts_total = 3,"
        " max_attempts_per_number_24h = 100"
    )
    prospect = await add_prospect(api, team.manager["token"], next_phone())
    for _ in range(2):
        call = await start(api, team.agent["token"], prospect["id"])
        await end(api, team.agent["token"], prospect["id"], call["callLogId"], "Busy")
        await pool.execute("UPDATE call_logs SET started_at = started_at - interval '10 minutes'")
    assert await api.error_code(START_CALL, {"p": prospect["id"]}, team.agent["token"]) == (
        "MAX_ATTEMPTS_REACHED"
    )
    # The queue sets it aside until the callee's next local day (midnight in New York).
    waits_until = await pool.fetchval(
        "SELECT recycle_until = (date_trunc('day', now() AT TIME ZONE 'America/New_York')"
        " + interval '1 day') AT TIME ZONE 'America/New_York' FROM prospects"
    )
    assert waits_until is True
    # Yesterday's attempts no longer count for today; the total cap then holds at 3.
    await pool.execute("UPDATE call_logs SET started_at = started_at - interval '2 days'")
    call = await start(api, team.agent["token"], prospect["id"])
    await end(api, team.agent["token"], prospect["id"], call["callLogId"], "Busy")
    await pool.execute("UPDATE call_logs SET started_at = started_at - interval '2 days'")
    result = await explain(api, team.agent["token"], prospect["id"])
    reasons = [r["reason"] for r in result["rules"] if r["blocking"] and not r["queueOnly"]]
    assert reasons == ["Prospect reached 3 attempts in total"]
    # Used up: it leaves the queue for good rather than being picked and refused again.
    assert await pool.fetchval("SELECT final_at IS NOT NULL FROM prospects") is True


async def test_lowered_caps_are_refused_once_then_the_queue_moves_on(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    """A manager lowers the caps below what prospects already had: nextLead refuses each
    such prospect once and sets it aside (closed at the total cap, until the callee's next
    day at the day cap), rather than picking and refusing it on every call."""
    await pool.execute("UPDATE dialing_rules SET max_attempts_per_number_24h = 100")
    total = await add_prospect(api, team.manager["token"], next_phone(), name="Total")
    today = await add_prospect(api, team.manager["token"], next_phone(), name="Today")
    fresh = await add_prospect(api, team.manager["token"], next_phone(), name="Fresh")
    for prospect, calls in ((total, 3), (today, 2)):
        for _ in range(calls):
            call = await start(api, team.agent["token"], prospect["id"])
            await end(api, team.agent["token"], prospect["id"], call["callLogId"], "Busy")
            await pool.execute(
                "UPDATE call_logs SET started_at = started_at - interval '10 minutes'"
            )
    # "Total"'s calls were yesterday; "Today"'s today. Both wait nothing and lead the queue.
    await pool.execute(
        "UPDATE call_logs SET started_at = started_at - interval '2 days' WHERE prospect_id = $1",
        total["id"],
    )
    await pool.execute(
        "UPDATE prospects SET recycle_until = NULL, last_call = now() - interval '1 day',"
        " priority = CASE WHEN id = $1 THEN 0 ELSE 5 END",
        fresh["id"],
    )
    await api.data(
        "mutation { updateDialingRules(input: {maxAttemptsTotal: 3, maxAttemptsPerDay: 2}) {"
        " maxAttemptsTotal } }",
        token=team.manager["token"],
    )
    lead = await next_lead(api, team.agent["token"])
    assert lead["prospect"]["name"] == "Fresh"
    rows = {
        r["name"]: r
        for r in await pool.fetch("SELECT name, final_at, recycle_until FROM prospects")
    }
    assert rows["Total"]["final_at"] is not None
    next_day = await pool.fetchval(
        "SELECT (date_trunc('day', now() AT TIME ZONE 'America/New_York') + interval '1 day')"
        " AT TIME ZONE 'America/New_York'"
    )
    assert (rows["Today"]["final_at"], rows["Today"]["recycle_until"]) == (None, next_day)
    assert await eligibility_checks_in_next_lead(pool, team.agents[1]["id"]) == 0
    nothing = await next_lead(api, team.agents[1]["token"])
    held = {h["code"]: h["prospects"] for h in nothing["heldBack"]}
    assert (held["PROSPECT_CLOSED"], held["RECYCLE_DELAY"], held["ALREADY_IN_CALL"]) == (1, 1, 1)


async def test_raising_the_total_cap_reopens_only_what_the_cap_closed(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    await pool.execute(
        "UPDATE dialing_rules SET max_attempts_total = 2, max_attempts_per_day = 100,"
        " max_attempts_per_number_24h = 100"
    )
    capped = await add_prospect(api, team.manager["token"], next_phone(), name="Capped")
    refused = await add_prospect(api, team.manager["token"], next_phone(), name="Refused")
    for prospect, outcome in ((capped, "Busy"), (capped, "Busy"), (refused, "Not Interested")):
        call = await start(api, team.agent["token"], prospect["id"])
        await end(api, team.agent["token"], prospect["id"], call["callLogId"], outcome)
        await pool.execute("UPDATE call_logs SET started_at = started_at - interval '10 minutes'")

    async def closed() -> dict[str, str | None]:
        rows = await pool.fetch("SELECT name, closed_by FROM prospects WHERE final_at IS NOT NULL")
        return {r["name"]: r["closed_by"] for r in rows}

    assert await closed() == {"Capped": "attempts", "Refused": "outcome"}
    await api.data(
        "mutation { updateDialingRules(input: {maxAttemptsTotal: 3}) { maxAttemptsTotal } }",
        token=team.manager["token"],
    )
    assert await closed() == {"Refused": "outcome"}
    await pool.execute(
        "UPDATE prospects SET recycle_until = NULL, last_call = now() - interval '1 day'"
    )
    assert (await next_lead(api, team.agent["token"]))["prospect"]["name"] == "Capped"
    # Lowering it again closes it at the next refusal; a final outcome outranks the cap.
    await api.data(
        "mutation { updateDialingRules(input: {maxAttemptsTotal: 2}) { maxAttemptsTotal } }",
        token=team.manager["token"],
    )
    assert await closed() == {"Refused": "outcome"}
    lead = await pool.fetchval("SELECT call_log_id FROM active_calls")
    await end(api, team.agent["token"], capped["id"], str(lead), "Not Interested")
    assert await closed() == {"Capped": "outcome", "Refused": "outcome"}
    await api.data(
        "mutation { updateDialingRules(input: {maxAttemptsTotal: 10}) { maxAttemptsTotal } }",
        token=team.manager["token"],
    )
    assert await closed() == {"Capped": "outcome", "Refused": "outcome"}


async def test_raising_the_day_cap_frees_what_the_day_cap_set_aside(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    """recycle_until does not say which rule set it, so raising the per-day cap works each
    waiting prospect out again: freed when only the day cap held it, still waiting for an
    outcome's recycle delay, and still set aside when the new cap is reached too."""
    await pool.execute(
        "UPDATE dialing_rules SET max_attempts_per_day = 2, max_attempts_total = 100,"
        " max_attempts_per_number_24h = 100;"
        " UPDATE dispositions SET recycle_delay = NULL WHERE name = 'Busy'"
    )
    # A zone where it is not just after midnight, so calls minutes ago were made today.
    zone = next(
        z
        for z in ("America/New_York", "Asia/Tokyo", "Europe/London")
        if 1 <= datetime.now(ZoneInfo(z)).hour < 23
    )
    names = ("Capped", "Delayed", "Full")
    prospects = {n: await add_prospect(api, team.manager["token"], next_phone(), n) for n in names}
    await pool.execute("UPDATE prospects SET time_zone = $1", zone)
    for name, outcomes in (
        ("Capped", ["Busy", "Busy"]),
        ("Delayed", ["Busy", "No Answer"]),
        ("Full", ["Busy", "Busy"]),
    ):
        for outcome in outcomes:
            call = await start(api, team.agent["token"], prospects[name]["id"])
            await end(api, team.agent["token"], prospects[name]["id"], call["callLogId"], outcome)
            # Past the minimum gap between calls, still today.
            await pool.execute(
                "UPDATE call_logs SET started_at = started_at - interval '6 minutes';"
                " UPDATE prospects SET last_call = last_call - interval '6 minutes'"
            )
    # "Full" had a third call today (logged on another path).
    await pool.execute(
        "INSERT INTO call_logs (prospect_id, caller_id, phone_number, started_at, ended_at,"
        " outcome, duration) SELECT id, $2, phone, now() - interval '30 minutes',"
        " now() - interval '29 minutes', 'Busy', 60 FROM prospects WHERE id = $1",
        prospects["Full"]["id"],
        team.agent["id"],
    )
    next_day = await pool.fetchval(
        "SELECT (date_trunc('day', now() AT TIME ZONE $1) + interval '1 day') AT TIME ZONE $1",
        zone,
    )
    delay_ends = await pool.fetchval(
        "SELECT ended_at + interval '2 hours' FROM call_logs c JOIN prospects p"
        " ON p.id = c.prospect_id WHERE p.name = 'Delayed' AND c.outcome = 'No Answer'"
    )

    async def waiting() -> dict[str, datetime | None]:
        rows = await pool.fetch("SELECT name, recycle_until FROM prospects")
        return {r["name"]: r["recycle_until"] for r in rows}

    assert await waiting() == {
        "Capped": next_day,
        "Delayed": max(next_day, delay_ends),
        "Full": next_day,
    }
    await api.data(
        "mutation { updateDialingRules(input: {maxAttemptsPerDay: 3}) { maxAttemptsPerDay } }",
        token=team.manager["token"],
    )
    assert await waiting() == {"Capped": None, "Delayed": delay_ends, "Full": next_day}
    lead = await next_lead(api, team.agents[1]["token"])
    assert lead["prospect"]["name"] == "Capped"
    # Lowering it sets nothing aside by itself (nextLead does, at its first refusal).
    await api.data(
        "mutation { updateDialingRules(input: {maxAttemptsPerDay: 1}) { maxAttemptsPerDay } }",
        token=team.manager["token"],
    )
    assert (await waiting())["Full"] == next_day


async def eligibility_checks_in_next_lead(pool: asyncpg.Pool, agent_id: str) -> int:
    """Run next_lead() once, rolled back, and count the rule checks (call_refusal()) it made."""
    async with pool.acquire() as connection:
        transaction = connection.transaction()
        await transaction.start()
        try:
            await connection.execute("SET LOCAL track_functions = 'all'")
            await connection.fetch("SELECT * FROM next_lead($1)", agent_id)
            checks: int = await connection.fetchval(
                "SELECT coalesce(sum(calls), 0) FROM pg_stat_xact_user_functions"
                " WHERE funcname = 'call_refusal'"
            )
            return checks
        finally:
            await transaction.rollback()


async def test_a_due_callback_on_a_closed_prospect_is_not_offered(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    """Not offered, and not even picked and refused: a closed prospect's callback would
    otherwise cost every nextLead a full rule check."""
    prospect = await add_prospect(api, team.manager["token"], next_phone())
    await pool.execute(
        "INSERT INTO callbacks (prospect_id, due_at) VALUES ($1, now() - interval '1 minute')",
        prospect["id"],
    )
    await pool.execute("UPDATE prospects SET final_at = now()")
    assert await eligibility_checks_in_next_lead(pool, team.agent["id"]) == 0
    assert (await next_lead(api, team.agent["token"]))["nothingCallable"] is True
    await pool.execute("UPDATE prospects SET final_at = NULL")
    assert await eligibility_checks_in_next_lead(pool, team.agent["id"]) == 1
    assert (await next_lead(api, team.agent["token"]))["prospect"]["id"] == prospect["id"]


async def test_rolling_cap_per_number(api: Api, team: Team, pool: asyncpg.Pool) -> None:
    await pool.execute("UPDATE dialing_rules SET max_attempts_per_number_24h = 2")
    prospect = await add_prospect(api, team.manager["token"], next_phone())
    for _ in range(2):
        call = await start(api, team.agent["token"], prospect["id"])
        await end(api, team.agent["token"], prospect["id"], call["callLogId"], "Busy")
        await pool.execute("UPDATE call_logs SET started_at = started_at - interval '6 hours'")
    assert await api.error_code(START_CALL, {"p": prospect["id"]}, team.agent["token"]) == (
        "MAX_ATTEMPTS_REACHED"
    )
    assert await pool.fetchval("SELECT count(*) FROM call_logs") == 2  # refused: none logged
    await pool.execute("UPDATE call_logs SET started_at = started_at - interval '13 hours'")
    # The older call left the 24-hour window: a third may start.
    third = await start(api, team.agent["token"], prospect["id"])
    await assert_in_call(pool, third, prospect["id"], team.agent["id"])


async def test_refusals_count_in_words_that_agree(api: Api, team: Team, pool: asyncpg.Pool) -> None:
    """'called 1 time', not '1 times': caps of one and of two, in the reasons agents read."""
    prospect = await add_prospect(api, team.manager["token"], next_phone())
    for _ in range(2):
        call = await start(api, team.agent["token"], prospect["id"])
        await end(api, team.agent["token"], prospect["id"], call["callLogId"], "Busy")
        await pool.execute("UPDATE call_logs SET started_at = started_at - interval '10 minutes'")
        await pool.execute("UPDATE prospects SET last_call = last_call - interval '10 minutes'")
    for cap, ending in ((1, ""), (2, "s")):
        await pool.execute(
            "UPDATE dialing_rules SET max_attempts_per_day = $1, max_attempts_total = $1,"
            " max_attempts_per_number_24h = $1",
            cap,
        )
        result = await explain(api, team.agent["token"], prospect["id"])
        reasons = {r["reason"] for r in result["rules"] if r["blocking"]}
        assert reasons >= {
            f"Prospect reached {cap} attempt{ending} in total",
            f"Prospect reached {cap} attempt{ending} today",
            f"The number was called {cap} time{ending} in 24 hours",
        }, reasons


async def test_final_and_recycled_prospects_leave_the_queue_but_not_manual_dial(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    closed = await add_prospect(api, team.manager["token"], next_phone(), name="Closed")
    recycled = await add_prospect(api, team.manager["token"], next_phone(), name="Recycled")
    for prospect, outcome in ((closed, "Not Interested"), (recycled, "No Answer")):
        call = await start(api, team.agent["token"], prospect["id"])
        await end(api, team.agent["token"], prospect["id"], call["callLogId"], outcome)
    await pool.execute("UPDATE call_logs SET started_at = started_at - interval '1 hour'")
    await pool.execute("UPDATE prospects SET last_call = last_call - interval '1 hour'")
    lead = await next_lead(api, team.agent["token"])
    assert lead["nothingCallable"] is True
    held = {h["code"]: h["prospects"] for h in lead["heldBack"]}
    assert held["PROSPECT_CLOSED"] == 1
    assert held["RECYCLE_DELAY"] == 1
    result = await explain(api, team.agent["token"], recycled["id"])
    assert result["callable"] is True
    assert result["callableByNextLead"] is False
    await pool.execute("UPDATE prospects SET recycle_until = now() - interval '1 second'")
    assert (await next_lead(api, team.agent["token"]))["prospect"]["id"] == recycled["id"]


async def test_callbacks_come_first_and_fall_back_after_the_grace(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    await add_prospect(api, team.manager["token"], next_phone(), name="Pool")
    wanted = await add_prospect(api, team.manager["token"], next_phone(), name="Wanted")
    due = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    scheduled = await api.data(
        "mutation($p: ID!, $at: DateTime!) {"
        " scheduleCallback(prospectId: $p, at: $at) { agentId dueAt } }",
        {"p": wanted["id"], "at": due},
        team.agents[0]["token"],
    )
    assert scheduled["scheduleCallback"]["agentId"] == team.agents[0]["id"]
    # Not due yet: the pool prospect comes first, the callback prospect is held back.
    other = await next_lead(api, team.agents[1]["token"])
    assert other["prospect"]["name"] == "Pool"
    # Due: reserved for its agent during the grace period.
    await pool.execute("UPDATE callbacks SET due_at = now() - interval '1 minute'")
    assert (await next_lead(api, team.agents[1]["token"]))["nothingCallable"] is True
    assert await api.error_code(START_CALL, {"p": wanted["id"]}, team.agents[1]["token"]) == (
        "CALLBACK_RESERVED"
    )
    # Past the grace: anyone may take it.
    await pool.execute("UPDATE callbacks SET due_at = now() - interval '1 hour'")
    taken = await next_lead(api, team.agents[1]["token"])
    assert taken["prospect"]["id"] == wanted["id"]
    assert await pool.fetchval("SELECT taken_at IS NOT NULL FROM callbacks") is True


async def test_a_callback_outside_hours_is_refused_or_moved(
    api: Api, team: Team, default_rules: None
) -> None:
    prospect = await add_prospect(api, team.manager["token"], next_phone())
    # A night in New York a month ahead (callbacks may be at most 90 days ahead).
    day = (datetime.now(UTC) + timedelta(days=30)).date()
    new_york = ZoneInfo("America/New_York")
    night = datetime(day.year, day.month, day.day, 3, tzinfo=new_york).isoformat()
    opening = datetime(day.year, day.month, day.day, 8, tzinfo=new_york).astimezone(UTC)
    schedule = (
        "mutation($p: ID!, $at: DateTime!, $move: Boolean!) {"
        " scheduleCallback(prospectId: $p, at: $at, mine: false, moveToNextWindow: $move)"
        " { dueAt agentId } }"
    )
    body = await api.graphql(
        schedule, {"p": prospect["id"], "at": night, "move": False}, team.agent["token"]
    )
    assert body["errors"][0]["extensions"]["code"] == "OUTSIDE_CALLING_HOURS"
    assert body["errors"][0]["extensions"]["until"] == opening.isoformat()
    moved = await api.data(
        schedule, {"p": prospect["id"], "at": night, "move": True}, team.agent["token"]
    )
    assert moved["scheduleCallback"] == {"dueAt": opening.isoformat(), "agentId": None}


async def test_assignments_are_offered_to_their_agent_first_until_they_expire(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    await add_prospect(api, team.manager["token"], next_phone(), name="Pool")
    mine = await add_prospect(api, team.manager["token"], next_phone(), name="Mine")
    await api.data(
        "mutation($p: ID!, $a: ID!) { assignLead(prospectId: $p, agentId: $a) { id } }",
        {"p": mine["id"], "a": team.agents[1]["id"]},
        team.manager["token"],
    )
    # Agent 0 never gets agent 1's lead; agent 1 gets it first, before the older pool one.
    first = await next_lead(api, team.agents[0]["token"])
    assert first["prospect"]["name"] == "Pool"
    second = await next_lead(api, team.agents[1]["token"])
    assert second["prospect"]["name"] == "Mine"


async def test_an_expired_assignment_returns_to_everyone(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    lead = await add_prospect(api, team.manager["token"], next_phone())
    await api.data(
        "mutation($p: ID!, $a: ID!) {"
        ' assignLead(prospectId: $p, agentId: $a, expiresAt: "2999-01-01T00:00:00Z") { id } }',
        {"p": lead["id"], "a": team.agents[1]["id"]},
        team.manager["token"],
    )
    assert (await next_lead(api, team.agents[0]["token"]))["nothingCallable"] is True
    await pool.execute("UPDATE lead_assignments SET expires_at = now() - interval '1 second'")
    assert (await next_lead(api, team.agents[0]["token"]))["prospect"]["id"] == lead["id"]


async def test_do_not_call_added_mid_queue_is_honoured_on_the_next_call(
    api: Api, team: Team
) -> None:
    first = await add_prospect(api, team.manager["token"], next_phone(), name="First")
    second = await add_prospect(api, team.manager["token"], next_phone(), name="Second")
    got = await next_lead(api, team.agents[0]["token"])
    assert got["prospect"]["id"] == first["id"]
    await api.data(
        "mutation($n: String!) { addDoNotCall(phone: $n) { id } }",
        {"n": second["phone"]},
        team.manager["token"],
    )
    assert (await next_lead(api, team.agents[1]["token"]))["nothingCallable"] is True


def zones_open_and_closed_now() -> tuple[str, str]:
    """Two fixed-offset zones: local time is about noon in the first and about midnight in
    the second, whatever the hour the test runs (with hours 09:00-15:00 every day)."""
    hour = datetime.now(UTC).hour
    noon = 12 - hour  # UTC offset of the zone where it is now about noon: -11 .. +12
    midnight = noon - 12 if noon - 12 >= -12 else noon + 12

    def etc(offset: int) -> str:
        # POSIX sign: Etc/GMT-9 is nine hours ahead of UTC.
        return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"

    return etc(noon), etc(midnight)


async def test_next_lead_passes_over_closed_zones_to_an_open_one(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    """Prospects ahead in the queue whose hours are closed (in any of their zones) are passed
    over, and counted; an open one behind them is handed out."""
    open_zone, closed_zone = zones_open_and_closed_now()
    await pool.execute("UPDATE calling_hours SET opens_at = '09:00', closes_at = '15:00'")
    rows = [
        ("Closed", closed_zone, None, 9),
        ("Open", open_zone, None, 0),
        ("Spanning", None, [open_zone, closed_zone], 5),
        ("Closed too", None, [closed_zone], 7),
    ]
    ids = {}
    for name, zone, phone_zones, priority in rows:
        prospect = await add_prospect(api, team.manager["token"], next_phone(), name=name)
        ids[name] = prospect["id"]
        await pool.execute(
            "UPDATE prospects SET time_zone = $2, phone_time_zones = coalesce($3::text[], '{}'),"
            " priority = $4 WHERE id = $1",
            prospect["id"],
            zone,
            phone_zones,
            priority,
        )
    lead = await next_lead(api, team.agent["token"])
    assert lead["prospect"]["name"] == "Open"
    nothing = await next_lead(api, team.agents[1]["token"])
    assert nothing["nothingCallable"] is True
    held = {h["code"]: h["prospects"] for h in nothing["heldBack"]}
    assert held["OUTSIDE_CALLING_HOURS"] == 3
    assert held["ALREADY_IN_CALL"] == 1
    # The same answer, prospect by prospect.
    for name in ("Closed", "Spanning", "Closed too"):
        assert "OUTSIDE_CALLING_HOURS" in blocking(
            await explain(api, team.manager["token"], ids[name])
        )
    # Opening the closed zone's hours makes the best of them next, with no job or rewrite.
    await pool.execute("UPDATE calling_hours SET opens_at = '00:00', closes_at = '24:00'")
    assert (await next_lead(api, team.agents[1]["token"]))["prospect"]["name"] == "Closed"


async def test_held_back_counts_are_per_agent(api: Api, team: Team, pool: asyncpg.Pool) -> None:
    """Assignments and reserved callbacks hold a prospect back from the other agents only;
    the counts shared by all agents are corrected per agent."""
    me, other = team.agents[0], team.agents[1]
    names = ["Mine", "Theirs", "My due callback", "Their due callback", "Later callback"]
    ids = {}
    for name in names:
        ids[name] = (await add_prospect(api, team.manager["token"], next_phone(), name=name))["id"]
    # Every one of them on the Do-Not-Call list too, so that nothing is callable for anyone.
    await pool.execute("INSERT INTO do_not_call (phone, source) SELECT phone, 'api' FROM prospects")
    await pool.execute(
        """
        INSERT INTO lead_assignments (prospect_id, agent_id, assigned_by)
        VALUES ($1, $3, $4), ($2, $5, $4)
        """,
        ids["Mine"],
        ids["Theirs"],
        me["id"],
        team.manager["id"],
        other["id"],
    )
    await pool.execute(
        """
        INSERT INTO callbacks (prospect_id, due_at, agent_id) VALUES
            ($1, now() - interval '1 minute', $4),
            ($2, now() - interval '1 minute', $5),
            ($3, now() + interval '1 hour', NULL)
        """,
        ids["My due callback"],
        ids["Their due callback"],
        ids["Later callback"],
        me["id"],
        other["id"],
    )

    async def held(agent: dict[str, Any]) -> dict[str, int]:
        lead = await next_lead(api, agent["token"])
        assert lead["nothingCallable"] is True
        return {h["code"]: h["prospects"] for h in lead["heldBack"]}

    mine, theirs = await held(me), await held(other)
    assert (mine["ASSIGNED_TO_OTHER_AGENT"], theirs["ASSIGNED_TO_OTHER_AGENT"]) == (1, 1)
    # Each is held by the other's due callback (within its grace) and the later one.
    assert (mine["CALLBACK_PENDING"], theirs["CALLBACK_PENDING"]) == (2, 2)
    assert mine["DO_NOT_CALL"] == theirs["DO_NOT_CALL"] == 5
    # The same counts from the database's own composition, read now.
    for agent, counts in ((me, mine), (other, theirs)):
        rows = await pool.fetch("SELECT code, prospects FROM held_back($1)", agent["id"])
        assert {r["code"]: r["prospects"] for r in rows} == counts


async def test_agents_share_one_read_of_the_held_back_counts(pool: asyncpg.Pool) -> None:
    """Reading the counts goes through every prospect: concurrent and repeated asks within
    the window share one read, and a later ask reads again."""
    from resolvers.dialing import HeldBackCache

    await pool.execute(
        "INSERT INTO prospects (name, phone, final_at) VALUES ('Closed', '+12125550100', now())"
    )
    shared = HeldBackCache(seconds=60)
    together = await asyncio.gather(*(shared.get(pool) for _ in range(10)))
    assert len({id(result) for result in together}) == 1
    assert together[0].counts["PROSPECT_CLOSED"] == 1
    await pool.execute(
        "INSERT INTO prospects (name, phone, final_at) VALUES ('Closed 2', '+12125550101', now())"
    )
    assert await shared.get(pool) is together[0]  # within the window: the same read
    fresh = HeldBackCache(seconds=0)
    assert (await fresh.get(pool)).counts["PROSPECT_CLOSED"] == 2


async def test_a_failed_read_of_the_held_back_counts_is_not_kept(
    database_url: str, pool: asyncpg.Pool
) -> None:
    """Every waiter sees the failure, and the next ask reads again."""
    from resolvers.dialing import HeldBackCache
    from sql import database

    gone = await database.create_pool(
        database_url,
        session=database.SessionSettings(min_call_interval_seconds=300),
        min_size=1,
        max_size=1,
    )
    await gone.close()
    shared = HeldBackCache(seconds=60)
    failures = await asyncio.gather(*(shared.get(gone) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(failure, asyncpg.InterfaceError) for failure in failures)
    assert (await shared.get(pool)).counts["PROSPECT_CLOSED"] == 0


ROUNDS = 10
AGENTS = 20


async def test_twenty_agents_pull_from_one_queue(api: Api, team: Team, pool: asyncpg.Pool) -> None:
    """No prospect handed out twice; nobody told 'nothing callable' while one was callable."""
    agents = [await add_user(pool, api, f"puller{i}@test.example", "agent") for i in range(AGENTS)]
    for round_number in range(ROUNDS):
        await pool.execute("DELETE FROM active_calls")
        await pool.execute("DELETE FROM call_logs")
        await pool.execute("DELETE FROM prospects")
        # Fewer callable prospects than agents, plus some that no rule allows.
        callable_count = 12
        await pool.execute(
            """
            INSERT INTO prospects (name, phone)
            SELECT 'Q' || i, '+1212555' || lpad(($1 * 100 + i)::text, 4, '0')
            FROM generate_series(1, $2) i
            """,
            round_number,
            callable_count + 5,
        )
        await pool.execute(
            "INSERT INTO do_not_call (phone, source) SELECT phone, 'api' FROM prospects"
            " ORDER BY phone DESC LIMIT 5"
        )
        # Spread over several sets of zones (each its own part of the queue index).
        await pool.execute(
            """
            UPDATE prospects p SET time_zone = (ARRAY['America/Chicago', 'Europe/Paris',
                                                      'Asia/Tokyo', NULL])[1 + n.i % 4],
                                   phone_time_zones = CASE WHEN n.i % 5 = 0
                                       THEN ARRAY['America/Denver', 'America/Phoenix']
                                       ELSE '{}' END
            FROM (SELECT id, row_number() OVER (ORDER BY phone) AS i FROM prospects) n
            WHERE n.id = p.id
            """
        )
        results = await asyncio.gather(*(next_lead(api, agent["token"]) for agent in agents))
        handed = [r["prospect"]["id"] for r in results if not r["nothingCallable"]]
        assert len(handed) == len(set(handed)), f"round {round_number}: a prospect twice"
        assert len(handed) == callable_count, f"round {round_number}: {len(handed)} handed out"
        assert await pool.fetchval("SELECT count(*) FROM active_calls") == callable_count


async def test_a_later_change_cannot_undo_a_do_not_call_outcome(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    prospect = await add_prospect(api, team.manager["token"], next_phone())
    call = await start(api, team.agent["token"], prospect["id"])
    await end(api, team.agent["token"], prospect["id"], call["callLogId"], "Do Not Call")
    await api.data(
        'mutation($p: ID!) { updateProspect(id: $p, input: {status: "New"}) { status } }',
        {"p": prospect["id"]},
        team.manager["token"],
    )
    await pool.execute("UPDATE call_logs SET started_at = started_at - interval '1 day'")
    await pool.execute("UPDATE prospects SET final_at = NULL")
    code = await api.error_code(START_CALL, {"p": prospect["id"]}, team.manager["token"])
    assert code == "DO_NOT_CALL"


async def test_a_do_not_call_entry_may_expire(api: Api, team: Team, pool: asyncpg.Pool) -> None:
    prospect = await add_prospect(api, team.manager["token"], next_phone())
    await api.data(
        "mutation($n: String!) {"
        ' addDoNotCall(phone: $n, expiresAt: "2999-01-01T00:00:00Z", scope: "internal") { id } }',
        {"n": prospect["phone"]},
        team.manager["token"],
    )
    assert await api.error_code(START_CALL, {"p": prospect["id"]}, team.agent["token"]) == (
        "DO_NOT_CALL"
    )
    assert await pool.fetchval("SELECT count(*) FROM call_logs") == 0
    await pool.execute("UPDATE do_not_call SET expires_at = now() - interval '1 second'")
    started = await start(api, team.agent["token"], prospect["id"])
    await assert_in_call(pool, started, prospect["id"], team.agent["id"])


async def test_agents_cannot_manage_the_rules(api: Api, team: Team) -> None:
    for mutation in (
        'mutation { addDoNotCall(phone: "212-555-0100") { id } }',
        'mutation { removeDoNotCall(phone: "212-555-0100") }',
        "mutation { updateDialingRules(input: {maxAttemptsPerDay: 9}) { maxAttemptsPerDay } }",
        'mutation { updateDisposition(name: "Busy", input: {isFinal: true}) { name } }',
        "mutation { setCallingHours(hours: []) { weekday } }",
    ):
        assert await api.error_code(mutation, token=team.agent["token"]) == "FORBIDDEN"


async def test_hours_closing_at_24_00_written_in_sql_are_read_back(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    """'24:00' is how psql users (and the test template) write the end of the day; reading
    it back was INTERNAL_SERVER_ERROR (Python's time stops at 23:59:59.999999). Found by
    tests/test_fuzz.py."""
    await pool.execute("UPDATE calling_hours SET opens_at = '08:00', closes_at = '24:00'")
    data = await api.data(
        "{ callingHours { weekday opensAt closesAt } }", token=team.agent["token"]
    )
    assert {(row["opensAt"], row["closesAt"]) for row in data["callingHours"]} == {
        ("08:00", "24:00")
    }
    assert len(data["callingHours"]) == await pool.fetchval("SELECT count(*) FROM calling_hours")
    assert await pool.fetchval("SELECT bool_and(closes_at = '24:00') FROM calling_hours")


async def test_managers_tune_the_rules(api: Api, team: Team, pool: asyncpg.Pool) -> None:
    token = team.manager["token"]
    hours = await api.data(
        'mutation { setCallingHours(hours: [{weekday: 1, opensAt: "09:30", closesAt: "24:00"}])'
        " { weekday opensAt closesAt } }",
        token=token,
    )
    assert hours["setCallingHours"] == [{"weekday": 1, "opensAt": "09:30", "closesAt": "24:00"}]
    assert await pool.fetchval("SELECT count(*) FROM calling_hours") == 1
    bad = await api.graphql(
        'mutation { setCallingHours(hours: [{weekday: 1, opensAt: "18:00", closesAt: "09:00"}])'
        " { weekday } }",
        token=token,
    )
    assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert await pool.fetchval("SELECT count(*) FROM calling_hours") == 1  # unchanged
    rules = await api.data(
        "mutation { updateDialingRules(input:"
        ' {maxAttemptsPerDay: 5, defaultTimeZone: "Europe/Paris"})'
        " { maxAttemptsPerDay defaultTimeZone maxAttemptsTotal } }",
        token=token,
    )
    assert rules["updateDialingRules"]["maxAttemptsPerDay"] == 5
    assert rules["updateDialingRules"]["defaultTimeZone"] == "Europe/Paris"
    outcome = await api.data(
        'mutation { updateDisposition(name: "Busy",'
        " input: {recycleDelaySeconds: 60, isFinal: false}) { recycleDelaySeconds isFinal } }",
        token=token,
    )
    assert outcome["updateDisposition"] == {"recycleDelaySeconds": 60, "isFinal": False}
    unknown = await api.graphql(
        'mutation { updateDisposition(name: "Nope", input: {isFinal: true}) { name } }', token=token
    )
    assert unknown["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    zone = await api.graphql(
        "mutation { updateDialingRules(input:"
        ' {defaultTimeZone: "Mars/Olympus"}) { defaultTimeZone } }',
        token=token,
    )
    assert zone["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


# --- the open sets of zones each connection keeps for the minute (open_queue_zone_sets()) ---


async def arrange_zoned_prospects(
    pool: asyncpg.Pool, rows: list[tuple[str, str, int]]
) -> dict[str, str]:
    """Prospects (name, explicit zone, priority) straight into the table; their ids by name."""
    ids = {}
    for name, zone, priority in rows:
        ids[name] = str(
            await pool.fetchval(
                "INSERT INTO prospects (name, phone, time_zone, priority)"
                " VALUES ($1, $2, $3, $4) RETURNING id",
                name,
                next_phone().replace(" ", ""),
                zone,
                priority,
            )
        )
    return ids


async def next_lead_checked(connection: asyncpg.Connection, agent_id: str) -> tuple[str, int]:
    """next_lead() committed on this connection: the prospect and the rule checks it made."""
    checks = (
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_xact_user_functions"
        " WHERE funcname = 'call_refusal'"
    )
    async with connection.transaction():
        await connection.execute("SET LOCAL track_functions = 'all'")
        # The view also holds counts of earlier transactions not flushed yet.
        before = await connection.fetchval(checks)
        row = await connection.fetchrow("SELECT prospect_id FROM next_lead($1)", agent_id)
        made: int = await connection.fetchval(checks) - before
    assert row is not None, "nothing handed out"
    return str(row["prospect_id"]), made


async def test_a_set_of_zones_new_to_the_queue_is_offered_before_nothing_callable(
    team: Team, pool: asyncpg.Pool
) -> None:
    """A connection that found the queue's sets of zones this minute still hands out a
    prospect of a set that joined the queue since, rather than answer "nothing callable"."""
    ids = await arrange_zoned_prospects(pool, [("Paris", "Europe/Paris", 0)])
    async with pool.acquire() as connection:
        assert await next_lead_checked(connection, team.agents[0]["id"]) == (ids["Paris"], 1)
        kept = await connection.fetchval("SELECT current_setting('app.queue_zone_sets')")
        assert kept == '{"{Europe/Paris}"}'
        ids |= await arrange_zoned_prospects(pool, [("Tokyo", "Asia/Tokyo", 0)])
        assert await next_lead_checked(connection, team.agents[1]["id"]) == (ids["Tokyo"], 1)
        kept = await connection.fetchval("SELECT current_setting('app.queue_zone_sets')")
        assert sorted(kept.strip("{}").split(",")) == ['"{Asia/Tokyo}"', '"{Europe/Paris}"']


async def test_changed_calling_hours_are_seen_within_the_minute(
    team: Team, pool: asyncpg.Pool
) -> None:
    """The sets kept for the minute are kept for the hours they were judged under: changing
    the hours finds them again, so a closed zone is neither offered nor refused."""
    open_zone, closed_zone = zones_open_and_closed_now()
    ids = await arrange_zoned_prospects(
        pool, [("Closed", closed_zone, 9), ("Open", open_zone, 0), ("Open too", open_zone, 0)]
    )
    async with pool.acquire() as connection:
        # All day: the best, in the zone about to close, with both sets kept.
        assert await next_lead_checked(connection, team.agents[0]["id"]) == (ids["Closed"], 1)
        await pool.execute("DELETE FROM active_calls")
        await pool.execute("UPDATE prospects SET last_call = NULL")
        await pool.execute("UPDATE calling_hours SET opens_at = '09:00', closes_at = '15:00'")
        assert await next_lead_checked(connection, team.agents[1]["id"]) == (ids["Open"], 1)


async def test_a_set_found_closed_by_its_refusal_is_looked_up_again(
    team: Team, pool: asyncpg.Pool
) -> None:
    """Hours closing off the minute: the kept sets name a set that has closed since. Its
    prospect is refused once (OUTSIDE_CALLING_HOURS), the sets are found again, and the
    open one is handed out, without walking through the closed set."""
    open_zone, closed_zone = zones_open_and_closed_now()
    await pool.execute("UPDATE calling_hours SET opens_at = '09:00', closes_at = '15:00'")
    rows = [(f"Closed {n}", closed_zone, 9) for n in range(5)] + [("Open", open_zone, 0)]
    ids = await arrange_zoned_prospects(pool, rows)
    checks = (
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_xact_user_functions"
        " WHERE funcname = 'call_refusal'"
    )
    async with pool.acquire() as connection, connection.transaction():
        # One transaction, so one now(): the sets are kept for its minute.
        await connection.execute("SET LOCAL track_functions = 'all'")
        await connection.execute("SELECT open_queue_zone_sets(false)")
        # As if found open earlier in the minute.
        await connection.execute(
            "SELECT set_config('app.queue_zone_sets', $1, false)",
            f'{{"{{{closed_zone}}}","{{{open_zone}}}"}}',
        )
        before = await connection.fetchval(checks)
        lead = await connection.fetchval(
            "SELECT prospect_id FROM next_lead($1)", team.agents[0]["id"]
        )
        assert (str(lead), await connection.fetchval(checks) - before) == (ids["Open"], 2)
        kept = await connection.fetchval("SELECT current_setting('app.queue_zone_sets')")
        assert kept == f'{{"{{{open_zone}}}"}}'
    # The refused prospects were not taken out of the queue or changed.
    changed = (
        "SELECT count(*) FROM prospects WHERE recycle_until IS NOT NULL OR final_at IS NOT NULL"
    )
    assert await pool.fetchval(changed) == 0


async def test_agents_pull_from_sets_of_zones_that_change_every_round(
    pool: asyncpg.Pool, database_url: str
) -> None:
    """Many agents on connections that keep the sets between rounds, while each round's
    prospects are in sets of zones the previous round did not have: every callable prospect
    is handed out once, none twice, and nobody is told "nothing callable" early."""
    agents = [
        str(
            await pool.fetchval(
                "INSERT INTO users (email, name, password_hash, role)"
                " VALUES ($1, 'Agent', 'x', 'agent') RETURNING id",
                f"sets{i}@test.example",
            )
        )
        for i in range(16)
    ]
    zones = ["Europe/Paris", "Asia/Tokyo", "America/Chicago", "Australia/Sydney",
             "Africa/Cairo", "America/Denver", "Asia/Kolkata", "Europe/London",
             "America/Sao_Paulo", "Pacific/Auckland", "Asia/Dubai", "Europe/Berlin"]  # fmt: skip
    floor = await database.create_pool(
        database_url,
        session=database.SessionSettings(min_call_interval_seconds=300),
        min_size=len(agents),
        max_size=len(agents),
    )
    try:
        for round_number in range(12):
            await pool.execute("DELETE FROM active_calls")
            await pool.execute("DELETE FROM call_logs")
            await pool.execute("DELETE FROM prospects")
            # Two sets new this round, twelve prospects: ten callable, two numbers listed.
            first, second = zones[round_number], zones[(round_number + 6) % 12]
            rows = [(f"R{round_number} {n}", first if n % 2 else second, n % 3) for n in range(12)]
            ids = await arrange_zoned_prospects(pool, rows)
            await pool.execute(
                "INSERT INTO do_not_call (phone, source) SELECT phone, 'api' FROM prospects"
                " ORDER BY phone LIMIT 2"
            )
            results = await asyncio.gather(
                *(floor.fetchrow("SELECT prospect_id FROM next_lead($1)", a) for a in agents)
            )
            handed = [str(r["prospect_id"]) for r in results if r is not None]
            assert len(handed) == len(set(handed)), f"round {round_number}: a prospect twice"
            assert len(handed) == 10, f"round {round_number}: {len(handed)} handed out"
            assert set(handed) <= set(ids.values())
            await pool.execute("DELETE FROM do_not_call")
    finally:
        await floor.close()
