"""The seed's REST endpoints: its paths and JSON, rule refusals as 409, bad input as 4xx."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg
import httpx
from helpers import PASSWORD, Api, Team, add_prospect, bearer

RECENTLY_CALLED = "Prospect was called recently (within 5 minutes)"
IN_ANOTHER_CALL = "Prospect is currently on another call"
UPDATE = """
mutation($id: ID!, $status: String!) { updateProspect(id: $id, input: {status: $status}) { id } }
"""
ASSIGN = """
mutation($id: ID!, $agent: ID!) { assignLead(prospectId: $id, agentId: $agent) { id } }
"""


async def start(
    api: Api, token: str, prospect_id: str, body: dict[str, Any] | None = None
) -> httpx.Response:
    """POST start-call."""
    return await api.client.post(
        f"/api/prospects/{prospect_id}/start-call", json=body or {}, headers=bearer(token)
    )


async def end(api: Api, token: str, prospect_id: str, body: dict[str, Any]) -> httpx.Response:
    """POST end-call."""
    return await api.client.post(
        f"/api/prospects/{prospect_id}/end-call", json=body, headers=bearer(token)
    )


async def started_call(api: Api, token: str, prospect_id: str) -> dict[str, str]:
    """Start a call that must start; returns {activeCallId, callLogId}."""
    response = await start(api, token, prospect_id)
    assert response.status_code == 201, response.text
    ids: dict[str, str] = response.json()
    return ids


async def call_state(pool: asyncpg.Pool) -> dict[str, Any]:
    """The call tables and prospect statuses, to prove a refusal wrote nothing."""
    return {
        "call_logs": [dict(row) for row in await pool.fetch("SELECT * FROM call_logs ORDER BY id")],
        "active_calls": [
            dict(row) for row in await pool.fetch("SELECT * FROM active_calls ORDER BY id")
        ],
        "prospects": [
            dict(row)
            for row in await pool.fetch("SELECT id, status, last_call FROM prospects ORDER BY id")
        ],
        "status_log": await pool.fetchval("SELECT count(*) FROM prospect_status_log"),
    }


def parse_time(text: str) -> datetime:
    """A timestamp from the seed's JSON."""
    return datetime.fromisoformat(text)


# -- health and login -----------------------------------------------------------------------


async def test_healthz_answers_ok_while_the_database_answers(api: Api) -> None:
    response = await api.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_login_returns_a_token_and_the_public_user(api: Api, team: Team) -> None:
    response = await api.client.post(
        "/api/auth/login", json={"email": team.agent["email"], "password": PASSWORD}
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"token", "user"}
    assert body["user"] == {
        "id": team.agent["id"],
        "email": team.agent["email"],
        "name": "agent1",
        "role": "agent",
    }
    viewer = await api.data("{ viewer { id } }", token=body["token"])
    assert viewer["viewer"]["id"] == team.agent["id"]
    active = await api.client.get("/api/active-calls", headers=bearer(body["token"]))
    assert active.status_code == 200


async def test_login_refusals(api: Api, team: Team) -> None:
    wrong = await api.client.post(
        "/api/auth/login", json={"email": team.agent["email"], "password": "wrong password"}
    )
    assert wrong.status_code == 401
    assert wrong.json() == {"error": "Invalid email or password", "code": "UNAUTHENTICATED"}
    for body in (
        {"email": team.agent["email"]},
        {"password": PASSWORD},
        {"email": 5, "password": PASSWORD},
        {"email": team.agent["email"], "password": ["a", "list"]},
        {"email": None, "password": PASSWORD},
    ):
        response = await api.client.post("/api/auth/login", json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["code"] == "BAD_USER_INPUT"
    for raw in (b"not json", b"[1, 2]", b'"text"', b"\xff\xfe\x00", b"{" * 100_000):
        response = await api.client.post(
            "/api/auth/login", content=raw, headers={"content-type": "application/json"}
        )
        assert response.status_code in {400, 422}, (raw[:20], response.status_code)
        assert response.json()["code"] == "BAD_USER_INPUT"


# -- can-call -------------------------------------------------------------------------------


async def test_can_call_is_exactly_allowed_true_when_allowed(api: Api, team: Team) -> None:
    prospect = await add_prospect(api, team.agent["token"])
    response = await api.client.get(
        f"/api/prospects/{prospect['id']}/can-call", headers=bearer(team.agent["token"])
    )
    assert response.status_code == 200
    assert response.json() == {"allowed": True}


async def test_can_call_refusals_carry_the_seeds_four_keys(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    first, second = team.agents
    prospect = await add_prospect(api, first["token"])
    ids = await started_call(api, first["token"], prospect["id"])
    started_at = await pool.fetchval(
        "SELECT started_at FROM call_logs WHERE id = $1", ids["callLogId"]
    )
    path = f"/api/prospects/{prospect['id']}/can-call"

    in_call = (await api.client.get(path, headers=bearer(second["token"]))).json()
    assert set(in_call) == {"allowed", "reason", "last_call_time", "last_caller_id"}
    assert in_call["allowed"] is False
    assert in_call["reason"] == IN_ANOTHER_CALL
    assert in_call["last_caller_id"] == first["id"]
    assert parse_time(in_call["last_call_time"]) == started_at

    ended = await end(
        api, first["token"], prospect["id"], {"callLogId": ids["callLogId"], "outcome": "Busy"}
    )
    assert ended.status_code == 200, ended.text
    recent = (await api.client.get(path, headers=bearer(second["token"]))).json()
    assert recent == {
        "allowed": False,
        "reason": RECENTLY_CALLED,
        "last_call_time": in_call["last_call_time"],
        "last_caller_id": first["id"],
    }


# -- start-call -----------------------------------------------------------------------------


async def test_start_call_answers_the_two_ids_and_writes_the_call(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    prospect = await add_prospect(api, team.agent["token"])
    response = await start(
        api,
        team.agent["token"],
        prospect["id"],
        {"phoneNumber": "212.555.0123", "fromNumber": "(646) 555-0100"},
    )
    assert response.status_code == 201, response.text
    ids = response.json()
    assert set(ids) == {"activeCallId", "callLogId"}
    active = await pool.fetchrow("SELECT * FROM active_calls")
    assert str(active["id"]) == ids["activeCallId"]
    assert str(active["call_log_id"]) == ids["callLogId"]
    assert str(active["caller_id"]) == team.agent["id"]
    log = await pool.fetchrow("SELECT * FROM call_logs")
    assert (str(log["id"]), str(log["caller_id"]), str(log["prospect_id"])) == (
        ids["callLogId"],
        team.agent["id"],
        prospect["id"],
    )
    assert (log["phone_number"], log["from_number"], log["ended_at"]) == (
        "+12125550123",
        "+16465550100",
        None,
    )


async def test_start_call_without_a_body_dials_the_prospects_phone(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    prospect = await add_prospect(api, team.agent["token"], "(212) 555-0177")
    response = await api.client.post(
        f"/api/prospects/{prospect['id']}/start-call", headers=bearer(team.agent["token"])
    )
    assert response.status_code == 201, response.text
    assert await pool.fetchval("SELECT phone_number FROM call_logs") == "+12125550177"


async def test_rule_refusals_are_409_with_the_reason(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    first, second = team.agents
    prospect = await add_prospect(api, first["token"])
    ids = await started_call(api, first["token"], prospect["id"])

    before = await call_state(pool)
    for token in (second["token"], first["token"], team.manager["token"]):
        response = await start(api, token, prospect["id"])
        assert response.status_code == 409
        body = response.json()
        assert (body["code"], body["reason"]) == ("ALREADY_IN_CALL", IN_ANOTHER_CALL)
    assert await call_state(pool) == before

    ended = await end(
        api, first["token"], prospect["id"], {"callLogId": ids["callLogId"], "outcome": "No Answer"}
    )
    assert ended.status_code == 200, ended.text
    before = await call_state(pool)
    response = await start(api, second["token"], prospect["id"])
    assert response.status_code == 409
    body = response.json()
    assert (body["code"], body["reason"]) == ("RECENTLY_CALLED", RECENTLY_CALLED)
    started_at = await pool.fetchval("SELECT started_at FROM call_logs")
    assert parse_time(body["lastCallTime"]) == started_at
    assert body["lastCallerId"] == first["id"]
    assert await call_state(pool) == before


async def test_a_lead_assigned_to_another_agent_is_409(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    first, second = team.agents
    prospect = await add_prospect(api, first["token"])
    await api.data(ASSIGN, {"id": prospect["id"], "agent": second["id"]}, team.manager["token"])
    response = await start(api, first["token"], prospect["id"])
    assert response.status_code == 409
    assert response.json()["code"] == "ASSIGNED_TO_OTHER_AGENT"
    assert response.json()["reason"] == "Prospect is assigned to another agent"
    assert await pool.fetchval("SELECT count(*) FROM call_logs") == 0
    can_call = await api.client.get(
        f"/api/prospects/{prospect['id']}/can-call", headers=bearer(first["token"])
    )
    assert can_call.json()["allowed"] is False
    ids = await started_call(api, second["token"], prospect["id"])
    active = await pool.fetchrow(
        "SELECT id::text, call_log_id::text, caller_id::text FROM active_calls"
    )
    assert dict(active) == {
        "id": ids["activeCallId"],
        "call_log_id": ids["callLogId"],
        "caller_id": second["id"],
    }


# -- end-call -------------------------------------------------------------------------------


async def test_end_call_writes_the_outcome_and_clears_the_lock(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    prospect = await add_prospect(api, team.agent["token"])
    ids = await started_call(api, team.agent["token"], prospect["id"])
    response = await end(
        api,
        team.agent["token"],
        prospect["id"],
        {
            "callLogId": ids["callLogId"],
            "outcome": "Connected",
            "duration": 120,
            "notes": "Great conversation",
            "recordingUrl": "https://recordings.example/1.mp3",
        },
    )
    assert response.status_code == 200, response.text
    log = response.json()
    assert {
        "id": ids["callLogId"],
        "prospect_id": prospect["id"],
        "caller_id": team.agent["id"],
        "outcome": "Connected",
        "duration": 120,
        "notes": "Great conversation",
        "recording_url": "https://recordings.example/1.mp3",
    }.items() <= log.items()
    assert log["ended_at"] is not None

    assert await pool.fetchval("SELECT count(*) FROM active_calls") == 0
    row = await pool.fetchrow("SELECT status, last_call FROM prospects")
    assert row["status"] == "Contacted"
    assert row["last_call"] == parse_time(log["started_at"])
    active = await api.client.get("/api/active-calls", headers=bearer(team.agent["token"]))
    assert active.json() == []


async def test_agents_cannot_end_another_agents_call_managers_can(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    first, second = team.agents
    prospect = await add_prospect(api, first["token"])
    ids = await started_call(api, first["token"], prospect["id"])
    before = await call_state(pool)
    body = {"callLogId": ids["callLogId"], "outcome": "Connected"}

    response = await end(api, second["token"], prospect["id"], body)
    assert response.status_code == 403
    assert response.json()["code"] == "FORBIDDEN"
    assert await call_state(pool) == before

    response = await end(api, team.manager["token"], prospect["id"], body)
    assert response.status_code == 200, response.text
    assert response.json()["caller_id"] == first["id"]
    assert await pool.fetchval("SELECT count(*) FROM active_calls") == 0


async def test_ending_a_call_twice_is_409_call_not_active(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    prospect = await add_prospect(api, team.agent["token"])
    ids = await started_call(api, team.agent["token"], prospect["id"])
    body = {"callLogId": ids["callLogId"], "outcome": "Voicemail"}
    assert (await end(api, team.agent["token"], prospect["id"], body)).status_code == 200
    before = await call_state(pool)
    again = await end(api, team.agent["token"], prospect["id"], {**body, "outcome": "Connected"})
    assert again.status_code == 409
    assert again.json()["code"] == "CALL_NOT_ACTIVE"
    assert await call_state(pool) == before
    assert await pool.fetchval("SELECT outcome FROM call_logs") == "Voicemail"


# -- histories and the board ----------------------------------------------------------------


async def test_call_history_is_newest_first_and_takes_a_limit(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    prospect = await add_prospect(api, team.agent["token"])
    older = await pool.fetchval(
        "INSERT INTO call_logs (prospect_id, caller_id, phone_number, started_at, ended_at,"
        " outcome, duration) VALUES ($1, $2, '+12125550123', now() - interval '1 day',"
        " now() - interval '1 day', 'Busy', 0) RETURNING id",
        prospect["id"],
        team.agents[1]["id"],
    )
    ids = await started_call(api, team.agent["token"], prospect["id"])
    path = f"/api/prospects/{prospect['id']}/call-history"
    headers = bearer(team.agent["token"])

    history = (await api.client.get(path, headers=headers)).json()
    assert [row["id"] for row in history] == [ids["callLogId"], str(older)]
    assert {
        "id",
        "prospect_id",
        "caller_id",
        "phone_number",
        "from_number",
        "started_at",
        "ended_at",
        "outcome",
        "duration",
        "notes",
        "recording_url",
    } <= set(history[0])
    assert (history[1]["outcome"], history[1]["caller_id"]) == ("Busy", team.agents[1]["id"])
    assert history[0]["ended_at"] is None

    limited = await api.client.get(path, params={"limit": "1"}, headers=headers)
    assert [row["id"] for row in limited.json()] == [ids["callLogId"]]
    for limit in ("0", "1001", "-1", "abc", "1.5", "", "²", "٣" * 5, "9" * 5000):
        response = await api.client.get(path, params={"limit": limit}, headers=headers)
        assert response.status_code == 422, (limit[:10], response.status_code, response.text)
        assert response.json() == {
            "error": "limit must be between 1 and 1000",
            "code": "BAD_USER_INPUT",
            "field": "limit",
        }


async def test_status_history_lists_changes_newest_first(api: Api, team: Team) -> None:
    prospect = await add_prospect(api, team.agent["token"])
    path = f"/api/prospects/{prospect['id']}/status-history"
    headers = bearer(team.agent["token"])
    assert (await api.client.get(path, headers=headers)).json() == []

    await api.data(UPDATE, {"id": prospect["id"], "status": "Callback"}, team.agent["token"])
    await api.data(UPDATE, {"id": prospect["id"], "status": "Qualified"}, team.manager["token"])
    history = (await api.client.get(path, headers=headers)).json()
    assert [(row["old_status"], row["new_status"], row["changed_by"]) for row in history] == [
        ("Callback", "Qualified", team.manager["id"]),
        ("New", "Callback", team.agent["id"]),
    ]
    assert all(row["prospect_id"] == prospect["id"] for row in history)
    assert all(parse_time(row["created_at"]) for row in history)


async def test_active_calls_lists_every_call_in_progress(api: Api, team: Team) -> None:
    first, second = team.agents
    one = await add_prospect(api, first["token"], "(212) 555-0101")
    two = await add_prospect(api, first["token"], "(212) 555-0102")
    ids_one = await started_call(api, first["token"], one["id"])
    ids_two = await started_call(api, second["token"], two["id"])

    response = await api.client.get("/api/active-calls", headers=bearer(team.manager["token"]))
    assert response.status_code == 200
    board = response.json()
    assert [
        (row["id"], row["call_log_id"], row["prospect_id"], row["caller_id"], row["phone_number"])
        for row in board
    ] == [
        (ids_one["activeCallId"], ids_one["callLogId"], one["id"], first["id"], "+12125550101"),
        (ids_two["activeCallId"], ids_two["callLogId"], two["id"], second["id"], "+12125550102"),
    ]
    assert all(parse_time(row["started_at"]) for row in board)


# -- refusals: 401, 404, 422, never 500 -----------------------------------------------------


def endpoints(prospect_id: str, call_log_id: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    """(method, path, JSON body) for every endpoint that needs a token."""
    base = f"/api/prospects/{prospect_id}"
    return [
        ("GET", f"{base}/can-call", None),
        ("POST", f"{base}/start-call", {}),
        ("POST", f"{base}/end-call", {"callLogId": call_log_id, "outcome": "Connected"}),
        ("GET", f"{base}/call-history", None),
        ("GET", f"{base}/status-history", None),
        ("GET", "/api/active-calls", None),
    ]


async def test_every_endpoint_but_login_and_health_needs_a_token(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    prospect = await add_prospect(api, team.agent["token"])
    ids = await started_call(api, team.agent["token"], prospect["id"])
    before = await call_state(pool)
    for headers in (
        {},
        {"authorization": "Bearer garbage"},
        {"authorization": f"Basic {team.agent['token']}"},
        {"authorization": team.agent["token"]},
    ):
        for method, path, body in endpoints(prospect["id"], ids["callLogId"]):
            response = await api.client.request(method, path, json=body, headers=headers)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.json()["code"] == "UNAUTHENTICATED"
    assert await call_state(pool) == before


async def test_unknown_prospect_or_call_is_404(api: Api, team: Team, pool: asyncpg.Pool) -> None:
    prospect = await add_prospect(api, team.agent["token"])
    ids = await started_call(api, team.agent["token"], prospect["id"])
    before = await call_state(pool)
    unknown = str(uuid.uuid4())
    for method, path, body in endpoints(unknown, ids["callLogId"]):
        if path == "/api/active-calls":
            continue
        response = await api.client.request(
            method, path, json=body, headers=bearer(team.agent["token"])
        )
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["code"] == "NOT_FOUND"
    response = await end(
        api, team.agent["token"], prospect["id"], {"callLogId": unknown, "outcome": "Connected"}
    )
    assert response.status_code == 404
    assert response.json()["code"] == "NOT_FOUND"
    assert await call_state(pool) == before


async def test_bad_input_is_422_and_writes_nothing(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    token = team.agent["token"]
    prospect = await add_prospect(api, token)
    ids = await started_call(api, token, prospect["id"])
    other = await add_prospect(api, token, "(212) 555-0199")
    before = await call_state(pool)
    log = ids["callLogId"]

    for bad_id in ("not-a-uuid", "12345", "6a520a20-048f-4139-a111-11111111111", "%00", "x" * 500):
        for method, path, body in endpoints(bad_id, log):
            if path == "/api/active-calls":
                continue
            response = await api.client.request(method, path, json=body, headers=bearer(token))
            assert response.status_code == 422, (method, path, response.text)
            assert response.json()["code"] == "BAD_USER_INPUT"
            assert response.json()["field"] == "id"

    start_bodies = [
        ({"phoneNumber": "not a phone"}, "phoneNumber"),
        ({"phoneNumber": "123"}, "phoneNumber"),
        ({"phoneNumber": 2125550123}, "phoneNumber"),
        ({"fromNumber": "+1 (000) 000-0000"}, "fromNumber"),
        ({"fromNumber": ["+12125550123"]}, "fromNumber"),
    ]
    for body, field in start_bodies:
        response = await start(api, token, other["id"], body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["code"] == "BAD_USER_INPUT"
        assert response.json()["field"] == field

    end_bodies: list[tuple[dict[str, Any], str | None]] = [
        ({"outcome": "Connected"}, "callLogId"),
        ({"callLogId": "nope", "outcome": "Connected"}, "callLogId"),
        ({"callLogId": 12, "outcome": "Connected"}, "callLogId"),
        ({"callLogId": log}, "outcome"),
        ({"callLogId": log, "outcome": "Sold"}, "outcome"),
        ({"callLogId": log, "outcome": 1}, "outcome"),
        ({"callLogId": log, "outcome": "Connected", "duration": "120"}, "duration"),
        ({"callLogId": log, "outcome": "Connected", "duration": 1.5}, "duration"),
        ({"callLogId": log, "outcome": "Connected", "duration": True}, "duration"),
        ({"callLogId": log, "outcome": "Connected", "duration": -1}, "duration"),
        ({"callLogId": log, "outcome": "Connected", "duration": 86401}, "duration"),
        ({"callLogId": log, "outcome": "Connected", "duration": 10**9}, "duration"),
        ({"callLogId": log, "outcome": "Connected", "duration": 10**30}, "duration"),
        ({"callLogId": log, "outcome": "Connected", "notes": "n" * 10001}, "notes"),
        ({"callLogId": log, "outcome": "Connected", "notes": {"a": 1}}, "notes"),
        ({"callLogId": log, "outcome": "Connected", "recordingUrl": "ftp://x"}, "recordingUrl"),
        ({"callLogId": log, "outcome": "Connected", "notes": "a\x00b"}, "notes"),
    ]
    for body, field in end_bodies:
        response = await end(api, token, prospect["id"], body)
        assert response.status_code == 422, (body, response.text)
        answer = response.json()
        assert answer["code"] == "BAD_USER_INPUT", answer
        assert answer.get("field") == field, (body, answer)

    assert await call_state(pool) == before


async def test_bodies_that_are_not_json_objects_are_refused_never_500(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    token = team.agent["token"]
    prospect = await add_prospect(api, token)
    ids = await started_call(api, token, prospect["id"])
    other = await add_prospect(api, token, "(212) 555-0199")
    before = await call_state(pool)
    raws = [
        b"not json",
        b"{'single': 'quotes'}",
        b'{"callLogId": ',
        b"[1, 2]",
        b'"a string"',
        b"42",
        b"null",
        b"\xff\xfe\x00",
        b"[" * 100_000 + b"]" * 100_000,
    ]
    for path in (
        f"/api/prospects/{other['id']}/start-call",
        f"/api/prospects/{prospect['id']}/end-call",
    ):
        for raw in raws:
            response = await api.client.post(
                path,
                content=raw,
                headers={**bearer(token), "content-type": "application/json"},
            )
            assert response.status_code in {400, 422}, (path, raw[:20], response.status_code)
            assert response.json()["code"] == "BAD_USER_INPUT"
    assert await call_state(pool) == before
    assert (
        await pool.fetchval("SELECT count(*) FROM active_calls WHERE id = $1", ids["activeCallId"])
        == 1
    )


async def test_wrong_methods_are_405_not_500(api: Api, team: Team) -> None:
    prospect = await add_prospect(api, team.agent["token"])
    base = f"/api/prospects/{prospect['id']}"
    for method, path in (
        ("POST", f"{base}/can-call"),
        ("GET", f"{base}/start-call"),
        ("GET", f"{base}/end-call"),
        ("DELETE", "/api/active-calls"),
        ("GET", "/api/auth/login"),
        ("POST", "/healthz"),
    ):
        response = await api.client.request(method, path, headers=bearer(team.agent["token"]))
        assert response.status_code == 405, (method, path, response.status_code)
