"""Manager reports checked against hand-computed answers, and against counting directly."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from helpers import Api, Team

from resolvers import reports

D = datetime(2025, 3, 10, tzinfo=UTC)  # a Monday; New York is on daylight time (UTC-4)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return D + timedelta(days=day, hours=hour, minutes=minute)


def iso(moment: datetime) -> str:
    return moment.isoformat()


async def add_prospect_row(pool: asyncpg.Pool, name: str, phone: str) -> UUID:
    prospect_id: UUID = await pool.fetchval(
        "INSERT INTO prospects (name, phone) VALUES ($1, $2) RETURNING id", name, phone
    )
    return prospect_id


async def add_call(
    pool: asyncpg.Pool,
    caller: str | UUID,
    prospect: UUID,
    started_at: datetime,
    outcome: str | None,
    duration: int | None,
) -> UUID:
    """A call log written directly, with a fixed start; no outcome means it never ended."""
    ended_at = started_at + timedelta(seconds=duration or 0) if outcome else None
    call_id: UUID = await pool.fetchval(
        """
        INSERT INTO call_logs (prospect_id, caller_id, phone_number, started_at, ended_at,
                               outcome, duration)
        VALUES ($1, $2, '+12125550100', $3, $4, $5, $6) RETURNING id
        """,
        prospect,
        UUID(str(caller)),
        started_at,
        ended_at,
        outcome,
        duration,
    )
    return call_id


class Floor:
    """The fixed data set: four prospects and eleven calls by two agents and a manager."""

    def __init__(self, team: Team, prospects: dict[str, UUID]) -> None:
        self.team = team
        self.prospects = prospects


@pytest.fixture
async def floor(pool: asyncpg.Pool, team: Team) -> Floor:
    a1, a2, boss = team.agents[0]["id"], team.agents[1]["id"], team.manager["id"]
    p = {
        name: await add_prospect_row(pool, name, phone)
        for name, phone in (
            ("P1", "+12125550101"),
            ("P2", "+12125550102"),
            ("P3", "+12125550103"),
            ("P4", "+12125550104"),
        )
    }
    calls = [
        # caller, prospect, start, outcome, duration
        (a1, "P1", at(0, 9), "Connected", 120),  # 1
        (a1, "P1", at(0, 9, 20), "No Answer", 0),  # 2
        (a1, "P2", at(0, 10, 5), "Voicemail", 30),  # 3
        (a1, "P3", at(0, 23, 50), "Not Interested", 60),  # 4
        (a2, "P1", at(1, 0, 10), "Connected", 300),  # 5
        (a2, "P2", at(1, 9), "Busy", 5),  # 6
        (a2, "P3", at(1, 9, 7), None, None),  # 7: never ended
        (a1, "P2", at(2, 12), "Callback Requested", 200),  # 8
        (boss, "P1", at(1, 13), "Do Not Call", 40),  # 9: managers call too
        (a2, "P4", at(5, 10), "No Answer", 0),  # 10: outside the report ranges
        (a2, "P4", at(5, 10, 30), "Voicemail", 20),  # 11
    ]
    for caller, prospect, started_at, outcome, duration in calls:
        await add_call(pool, caller, p[prospect], started_at, outcome, duration)
    return Floor(team, p)


AGENT_PERFORMANCE = """
query($from: DateTime!, $to: DateTime!) {
  agentPerformance(from: $from, to: $to) {
    agent { email }
    calls contacts contactRate callsWithoutOutcome totalTalkSeconds averageTalkSeconds
    outcomes { outcome calls contact }
  }
}
"""


def performance(
    email: str,
    calls: int,
    contacts: int,
    talk: int,
    average: float | None,
    outcomes: list[tuple[str, int, bool]],
    without_outcome: int = 0,
) -> dict[str, Any]:
    return {
        "agent": {"email": email},
        "calls": calls,
        "contacts": contacts,
        "contactRate": contacts / calls if calls else None,
        "callsWithoutOutcome": without_outcome,
        "totalTalkSeconds": talk,
        "averageTalkSeconds": average,
        "outcomes": [{"outcome": o, "calls": n, "contact": c} for o, n, c in outcomes],
    }


async def test_agent_performance_over_whole_days(api: Api, floor: Floor) -> None:
    data = await api.data(
        AGENT_PERFORMANCE, {"from": iso(at(0, 0)), "to": iso(at(3, 0))}, floor.team.manager["token"]
    )
    assert data["agentPerformance"] == [
        performance(
            "agent1@test.example",
            calls=5,  # calls 1, 2, 3, 4, 8
            contacts=3,  # Connected, Not Interested, Callback Requested
            talk=410,
            average=82.0,
            outcomes=[
                ("Callback Requested", 1, True),
                ("Connected", 1, True),
                ("No Answer", 1, False),
                ("Not Interested", 1, True),
                ("Voicemail", 1, False),
            ],
        ),
        performance(
            "agent2@test.example",
            calls=3,  # calls 5, 6, 7
            contacts=1,
            talk=305,
            average=152.5,  # call 7 has no duration
            outcomes=[("Busy", 1, False), ("Connected", 1, True)],
            without_outcome=1,
        ),
        performance(
            "manager@test.example",
            calls=1,
            contacts=1,
            talk=40,
            average=40.0,
            outcomes=[("Do Not Call", 1, True)],
        ),
    ]


async def test_agent_performance_with_partial_days_at_both_ends(
    api: Api, floor: Floor, pool: asyncpg.Pool
) -> None:
    # [day 0 09:10, day 2 13:00): the rest of day 0 and the start of day 2 come from the
    # call logs, day 1 from the rollup; before and after folding the journal.
    variables = {"from": iso(at(0, 9, 10)), "to": iso(at(2, 13))}
    expected = [
        performance(
            "agent1@test.example",
            calls=4,  # calls 2, 3, 4, 8
            contacts=2,
            talk=290,
            average=72.5,
            outcomes=[
                ("Callback Requested", 1, True),
                ("No Answer", 1, False),
                ("Not Interested", 1, True),
                ("Voicemail", 1, False),
            ],
        ),
        performance(
            "agent2@test.example",
            calls=3,
            contacts=1,
            talk=305,
            average=152.5,
            outcomes=[("Busy", 1, False), ("Connected", 1, True)],
            without_outcome=1,
        ),
        performance(
            "manager@test.example",
            calls=1,
            contacts=1,
            talk=40,
            average=40.0,
            outcomes=[("Do Not Call", 1, True)],
        ),
    ]
    assert await pool.fetchval("SELECT count(*) FROM call_stats_changes") == 11
    data = await api.data(AGENT_PERFORMANCE, variables, floor.team.admin["token"])
    assert data["agentPerformance"] == expected
    # The report folded the journal into the rollups on its way.
    assert await pool.fetchval("SELECT count(*) FROM call_stats_changes") == 0
    data = await api.data(AGENT_PERFORMANCE, variables, floor.team.admin["token"])
    assert data["agentPerformance"] == expected


async def test_agents_without_calls_are_listed_with_zeros(api: Api, floor: Floor) -> None:
    # Inside day 0 only agent 1 called; agent 2 is listed, the manager is not.
    data = await api.data(
        AGENT_PERFORMANCE,
        {"from": iso(at(0, 9)), "to": iso(at(0, 9, 30))},
        floor.team.manager["token"],
    )
    assert data["agentPerformance"] == [
        performance(
            "agent1@test.example",
            calls=2,
            contacts=1,
            talk=120,
            average=60.0,
            outcomes=[("Connected", 1, True), ("No Answer", 1, False)],
        ),
        performance("agent2@test.example", calls=0, contacts=0, talk=0, average=None, outcomes=[]),
    ]


CALL_STATS = """
query($from: DateTime!, $to: DateTime!, $bucket: CallStatsBucket!, $zone: String!) {
  callStats(from: $from, to: $to, bucket: $bucket, timeZone: $zone) {
    bucket timeZone calls contacts points { start calls contacts }
  }
}
"""


def points(*rows: tuple[datetime, int, int]) -> list[dict[str, Any]]:
    return [
        {"start": iso(start), "calls": calls, "contacts": contacts}
        for start, calls, contacts in rows
    ]


async def call_stats(
    api: Api, token: str, start: datetime, end: datetime, bucket: str, zone: str
) -> dict[str, Any]:
    data = await api.data(
        CALL_STATS,
        {"from": iso(start), "to": iso(end), "bucket": bucket, "zone": zone},
        token,
    )
    result: dict[str, Any] = data["callStats"]
    return result


async def test_call_stats_per_day_in_utc(api: Api, floor: Floor) -> None:
    stats = await call_stats(api, floor.team.manager["token"], at(0, 0), at(3, 0), "DAY", "UTC")
    assert stats["calls"] == 9
    assert stats["contacts"] == 5
    assert stats["points"] == points(
        (at(0, 0), 4, 2),  # calls 1-4: Connected, Not Interested
        (at(1, 0), 4, 2),  # calls 5, 6, 7, 9: Connected, Do Not Call
        (at(2, 0), 1, 1),  # call 8
    )


async def test_call_stats_per_day_in_new_york(api: Api, floor: Floor) -> None:
    stats = await call_stats(
        api, floor.team.manager["token"], at(0, 0), at(3, 0), "DAY", "America/New_York"
    )
    # The range starts at 20:00 local on 9 March, the day clocks went forward: that day
    # began at 05:00 UTC (EST), the following ones at 04:00 UTC (EDT).
    assert stats["points"] == points(
        (at(-1, 5), 0, 0),
        (at(0, 4), 5, 3),  # calls 1-4, and call 5 at 20:10 local
        (at(1, 4), 3, 1),  # calls 6, 7, 9
        (at(2, 4), 1, 1),  # call 8
    )


async def test_call_stats_in_a_half_hour_time_zone(api: Api, floor: Floor) -> None:
    stats = await call_stats(
        api, floor.team.manager["token"], at(0, 0), at(1, 12), "DAY", "Asia/Kolkata"
    )
    # Local days start at 18:30 UTC; the range ends before call 9.
    assert stats["points"] == points(
        (at(-1, 18, 30), 3, 1),  # calls 1, 2, 3
        (at(0, 18, 30), 4, 2),  # calls 4, 5, 6, 7
    )


async def test_call_stats_per_hour(api: Api, floor: Floor) -> None:
    stats = await call_stats(api, floor.team.admin["token"], at(0, 9), at(0, 12), "HOUR", "UTC")
    assert stats["bucket"] == "HOUR"
    assert stats["points"] == points(
        (at(0, 9), 2, 1),
        (at(0, 10), 1, 0),
        (at(0, 11), 0, 0),
    )


PROSPECTS_CALLED = """
query($min: Int!, $first: Int!, $after: String) {
  prospectsCalledMultipleTimes(minCalls: $min, first: $first, after: $after) {
    edges { cursor node { callCount prospect { name } } }
    pageInfo { hasNextPage endCursor }
  }
}
"""


async def test_prospects_called_multiple_times_pages_by_count(api: Api, floor: Floor) -> None:
    token = floor.team.manager["token"]
    data = await api.data(PROSPECTS_CALLED, {"min": 3, "first": 10}, token)
    connection = data["prospectsCalledMultipleTimes"]
    assert [
        (e["node"]["prospect"]["name"], e["node"]["callCount"]) for e in connection["edges"]
    ] == [
        ("P1", 4),
        ("P2", 3),
    ]
    assert connection["pageInfo"]["hasNextPage"] is False

    # P3 and P4 both have 2 calls: the tie is broken by id, and paging neither skips nor repeats.
    seen: list[tuple[str, int]] = []
    after = None
    while True:
        data = await api.data(PROSPECTS_CALLED, {"min": 2, "first": 1, "after": after}, token)
        connection = data["prospectsCalledMultipleTimes"]
        seen += [
            (e["node"]["prospect"]["name"], e["node"]["callCount"]) for e in connection["edges"]
        ]
        if not connection["pageInfo"]["hasNextPage"]:
            break
        after = connection["pageInfo"]["endCursor"]
    tied = sorted(("P3", "P4"), key=lambda name: floor.prospects[name], reverse=True)
    assert seen == [("P1", 4), ("P2", 3), (tied[0], 2), (tied[1], 2)]


RECENT_STATUS_CHANGES = """
query($first: Int!) {
  recentStatusChanges(first: $first) {
    oldStatus newStatus createdAt archived prospect { name } changedBy { email }
  }
}
"""


async def test_recent_status_changes_across_prospects_newest_first(
    api: Api, floor: Floor, pool: asyncpg.Pool
) -> None:
    boss = UUID(floor.team.manager["id"])
    for prospect, old, new, changed_by, created_at in (
        ("P1", "New", "Contacted", boss, at(10, 9)),
        ("P2", "New", "Attempted", None, at(10, 11)),
        ("P3", "New", "Qualified", boss, at(10, 10)),
    ):
        await pool.execute(
            """
            INSERT INTO prospect_status_log
                   (prospect_id, old_status, new_status, changed_by, created_at)
            VALUES ($1, $2, $3, $4, $5)
            """,
            floor.prospects[prospect],
            old,
            new,
            changed_by,
            created_at,
        )
    # One already archived, older than the rest.
    await pool.execute(
        """
        INSERT INTO prospect_status_log_archive
               (id, prospect_id, old_status, new_status, changed_by, db_user, created_at)
        VALUES (999999, $1, NULL, 'New', $2, 'postgres', $3)
        """,
        floor.prospects["P4"],
        boss,
        at(9, 0),
    )
    data = await api.data(RECENT_STATUS_CHANGES, {"first": 4}, floor.team.manager["token"])
    assert data["recentStatusChanges"] == [
        {
            "oldStatus": "New",
            "newStatus": "Attempted",
            "createdAt": iso(at(10, 11)),
            "archived": False,
            "prospect": {"name": "P2"},
            "changedBy": None,
        },
        {
            "oldStatus": "New",
            "newStatus": "Qualified",
            "createdAt": iso(at(10, 10)),
            "archived": False,
            "prospect": {"name": "P3"},
            "changedBy": {"email": "manager@test.example"},
        },
        {
            "oldStatus": "New",
            "newStatus": "Contacted",
            "createdAt": iso(at(10, 9)),
            "archived": False,
            "prospect": {"name": "P1"},
            "changedBy": {"email": "manager@test.example"},
        },
        {
            "oldStatus": None,
            "newStatus": "New",
            "createdAt": iso(at(9, 0)),
            "archived": True,
            "prospect": {"name": "P4"},
            "changedBy": {"email": "manager@test.example"},
        },
    ]
    data = await api.data(RECENT_STATUS_CHANGES, {"first": 1}, floor.team.admin["token"])
    assert [c["newStatus"] for c in data["recentStatusChanges"]] == ["Attempted"]


REPORTS = {
    "agentPerformance": (AGENT_PERFORMANCE, {"from": iso(at(0, 0)), "to": iso(at(1, 0))}),
    "callStats": (
        CALL_STATS,
        {"from": iso(at(0, 0)), "to": iso(at(1, 0)), "bucket": "DAY", "zone": "UTC"},
    ),
    "prospectsCalledMultipleTimes": (PROSPECTS_CALLED, {"min": 2, "first": 5}),
    "recentStatusChanges": (RECENT_STATUS_CHANGES, {"first": 5}),
}


@pytest.mark.parametrize("report", sorted(REPORTS))
async def test_reports_are_for_managers_and_admins(api: Api, team: Team, report: str) -> None:
    query, variables = REPORTS[report]
    assert await api.error_code(query, variables) == "UNAUTHENTICATED"
    assert await api.error_code(query, variables, team.agent["token"]) == "FORBIDDEN"
    for user in (team.manager, team.admin):
        assert report in await api.data(query, variables, user["token"])


BAD_RANGES = [
    pytest.param(at(1, 0), at(1, 0), id="empty"),
    pytest.param(at(2, 0), at(1, 0), id="backwards"),
    pytest.param(at(0, 0), at(367, 0), id="over-366-days"),
]


@pytest.mark.parametrize(("start", "end"), BAD_RANGES)
async def test_bad_ranges_are_bad_user_input(
    api: Api, team: Team, start: datetime, end: datetime
) -> None:
    token = team.manager["token"]
    variables = {"from": iso(start), "to": iso(end)}
    assert await api.error_code(AGENT_PERFORMANCE, variables, token) == "BAD_USER_INPUT"
    stats = {**variables, "bucket": "HOUR", "zone": "UTC"}
    assert await api.error_code(CALL_STATS, stats, token) == "BAD_USER_INPUT"


async def test_366_days_is_allowed(api: Api, team: Team) -> None:
    variables = {"from": iso(at(0, 0)), "to": iso(at(366, 0))}
    data = await api.data(AGENT_PERFORMANCE, variables, team.manager["token"])
    assert [row["calls"] for row in data["agentPerformance"]] == [0, 0]
    stats = await call_stats(api, team.manager["token"], at(0, 0), at(366, 0), "HOUR", "UTC")
    assert len(stats["points"]) == 366 * 24


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        pytest.param(
            AGENT_PERFORMANCE, {"from": "2025-03-10T00:00:00", "to": iso(at(1, 0))}, id="no-offset"
        ),
        pytest.param(
            CALL_STATS,
            {"from": iso(at(0, 0)), "to": iso(at(1, 0)), "bucket": "DAY", "zone": "Mars/Olympus"},
            id="unknown-zone",
        ),
        pytest.param(
            CALL_STATS,
            {"from": iso(at(0, 0)), "to": iso(at(1, 0)), "bucket": "DAY", "zone": "../etc/passwd"},
            id="path-as-zone",
        ),
        pytest.param(PROSPECTS_CALLED, {"min": 0, "first": 5}, id="min-calls-zero"),
        pytest.param(PROSPECTS_CALLED, {"min": 2, "first": 101}, id="page-too-big"),
        pytest.param(
            PROSPECTS_CALLED, {"min": 2, "first": 5, "after": "bm9wZQ=="}, id="bad-cursor"
        ),
        pytest.param(RECENT_STATUS_CHANGES, {"first": -1}, id="negative-first"),
    ],
)
async def test_bad_report_arguments_are_bad_user_input(
    api: Api, team: Team, query: str, variables: dict[str, Any]
) -> None:
    assert await api.error_code(query, variables, team.manager["token"]) == "BAD_USER_INPUT"


# --- the rollups never change an answer -------------------------------------------------

DIRECT_PERFORMANCE = """
SELECT c.caller_id, count(*) AS calls, count(*) FILTER (WHERE d.counts_as_contact) AS contacts,
       count(*) FILTER (WHERE c.outcome IS NULL) AS calls_without_outcome,
       count(c.duration) AS timed_calls, coalesce(sum(c.duration), 0) AS talk_seconds
FROM call_logs_with_archive c LEFT JOIN dispositions d ON d.name = c.outcome
WHERE c.started_at >= $1 AND c.started_at < $2
GROUP BY c.caller_id
"""
DIRECT_CALL_STATS = """
SELECT date_trunc($3, c.started_at, $4) AS bucket, count(*) AS calls,
       count(*) FILTER (WHERE d.counts_as_contact) AS contacts
FROM call_logs_with_archive c LEFT JOIN dispositions d ON d.name = c.outcome
WHERE c.started_at >= $1 AND c.started_at < $2
GROUP BY 1
"""
OUTCOMES = ["Connected", "No Answer", "Voicemail", "Busy", "Not Interested", None]


async def random_calls(
    pool: asyncpg.Pool, rng: random.Random, callers: list[str], prospects: list[UUID], count: int
) -> None:
    for _ in range(count):
        started = D + timedelta(seconds=rng.randrange(0, 9 * 86400))
        outcome = rng.choice(OUTCOMES)
        duration = rng.choice([None, rng.randrange(0, 900)]) if outcome else None
        await add_call(pool, rng.choice(callers), rng.choice(prospects), started, outcome, duration)


async def test_reports_equal_counting_the_call_logs_directly(
    pool: asyncpg.Pool, team: Team
) -> None:
    rng = random.Random(5)
    callers = [team.agents[0]["id"], team.agents[1]["id"], team.manager["id"]]
    prospects = [await add_prospect_row(pool, f"R{i}", f"+1212555{i:04d}") for i in range(20)]
    # Some calls folded into the rollups, some still journaled, some changed after folding
    # (ended, re-timed, archived, deleted), so every source of a report is exercised.
    await random_calls(pool, rng, callers, prospects, 300)
    assert await reports.fold_call_stats(pool) == 300
    await random_calls(pool, rng, callers, prospects, 100)
    await pool.execute(
        "UPDATE call_logs SET outcome = 'Connected', duration = 61, ended_at = started_at"
        " WHERE outcome IS NULL AND random() < 0.5"
    )
    await pool.execute("SELECT archive_call_logs(now(), 50)")
    await pool.execute("DELETE FROM call_logs WHERE id IN (SELECT id FROM call_logs LIMIT 10)")
    await pool.execute(
        "DELETE FROM call_logs_archive WHERE id IN (SELECT id FROM call_logs_archive LIMIT 5)"
    )

    ranges = [
        (D, D + timedelta(days=9)),
        (D + timedelta(minutes=7), D + timedelta(days=2, hours=3)),
    ]
    for _ in range(25):
        a, b = sorted(D + timedelta(seconds=rng.randrange(-86400, 10 * 86400)) for _ in range(2))
        if a < b:
            ranges.append((a, b))
    for start, end in ranges:
        fields = ("calls", "contacts", "calls_without_outcome", "timed_calls", "talk_seconds")
        direct = {
            r["caller_id"]: tuple(r[f] for f in fields)
            for r in await pool.fetch(DIRECT_PERFORMANCE, start, end)
        }
        reported = {
            r["agent_id"]: tuple(r[f] for f in fields)
            for r in await reports.agent_performance(pool, start, end)
            if r["calls"]
        }
        assert reported == direct, (start, end)
        for bucket, zone in (("day", "America/New_York"), ("hour", "Asia/Kolkata")):
            direct_stats = {
                r["bucket"]: (r["calls"], r["contacts"])
                for r in await pool.fetch(DIRECT_CALL_STATS, start, end, bucket, zone)
            }
            reported_stats = {
                r["bucket"]: (r["calls"], r["contacts"])
                for r in await reports.call_stats(pool, start, end, bucket, zone)
                if r["calls"]
            }
            assert reported_stats == direct_stats, (start, end, bucket, zone)

    counts = await pool.fetch(
        "SELECT prospect_id, count(*) AS n FROM call_logs_with_archive"
        " GROUP BY 1 HAVING count(*) >= 2"
    )
    rows, has_next = await reports.prospects_called_multiple_times(
        pool, min_calls=2, first=100, after=None
    )
    assert not has_next
    assert {r["prospect_id"]: r["call_count"] for r in rows} == {
        r["prospect_id"]: r["n"] for r in counts
    }
    assert [r["call_count"] for r in rows] == sorted((r["call_count"] for r in rows), reverse=True)
