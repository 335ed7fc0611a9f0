"""Who may do what: tokens, logout, roles, and no password hash anywhere (login throttling:
test_login_throttling.py)."""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any

import asyncpg
import bcrypt
from helpers import PASSWORD, Api, Team, add_prospect, bearer, start

from settings import Settings

LOGIN = (
    "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token user { id } } }"
)
START = """
mutation($id: ID!) { startCall(prospectId: $id) { activeCallId callLogId } }
"""
END = """
mutation($id: ID!, $log: ID!, $outcome: String!) {
  endCall(prospectId: $id, callLogId: $log, outcome: $outcome) { id outcome endedAt callerId }
}
"""
ASSIGN = """
mutation($id: ID!, $agent: ID!) { assignLead(prospectId: $id, agentId: $agent) { id agentId } }
"""
UNASSIGN = "mutation($id: ID!) { unassignLead(prospectId: $id) }"
USERS = "{ users { id email name role active createdAt } }"
CREATE_USER = """
mutation($input: CreateUserInput!) { createUser(input: $input) { id email role active } }
"""
ROOT_FIELDS = """
{
  __schema {
    queryType { fields { name } }
    mutationType { fields { name } }
    subscriptionType { fields { name } }
  }
}
"""
ALL_TYPES = """
{ __schema { types { name kind fields(includeDeprecated: true) { name } } } }
"""
SECRET_NAME = re.compile(r"pass|hash|secret|salt", re.IGNORECASE)


async def post(
    api: Api, query: str, variables: dict[str, Any] | None, headers: dict[str, str]
) -> dict[str, Any]:
    """POST /graphql with exactly these headers."""
    response = await api.client.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def codes(body: dict[str, Any]) -> list[str]:
    """The extensions.code of every error in a response."""
    return [error["extensions"]["code"] for error in body.get("errors") or []]


async def row_counts(pool: asyncpg.Pool) -> dict[str, int]:
    """Rows per table that a request could write."""
    counts = {}
    for table in ("users", "prospects", "call_logs", "active_calls", "lead_assignments"):
        counts[table] = await pool.fetchval(f"SELECT count(*) FROM {table}")
    return counts


# -- no token, no access --------------------------------------------------------------------


def guarded_operations(
    prospect_id: str, call_log_id: str, agent_id: str
) -> dict[str, tuple[str, dict[str, Any]]]:
    """One valid request per root field but login: only the missing token can refuse them."""
    return {
        "viewer": ("{ viewer { id } }", {}),
        "prospect": ("query($id: ID!) { prospect(id: $id) { id } }", {"id": prospect_id}),
        "prospects": ("{ prospects { edges { cursor } } }", {}),
        "canCall": (
            "query($id: ID!) { canCall(prospectId: $id) { allowed } }",
            {"id": prospect_id},
        ),
        "activeCalls": ("{ activeCalls { id } }", {}),
        "users": ("{ users { id } }", {}),
        "dispositions": ("{ dispositions { name } }", {}),
        "logout": ("mutation { logout }", {}),
        "createProspect": (
            'mutation { createProspect(input: {name: "X", phone: "(212) 555-0188"}) { id } }',
            {},
        ),
        "updateProspect": (
            'mutation($id: ID!) { updateProspect(id: $id, input: {status: "Qualified"}) { id } }',
            {"id": prospect_id},
        ),
        "startCall": (START, {"id": prospect_id}),
        "endCall": (END, {"id": prospect_id, "log": call_log_id, "outcome": "Connected"}),
        "heartbeatCall": (
            "mutation($log: ID!) { heartbeatCall(callLogId: $log) { id } }",
            {"log": call_log_id},
        ),
        "releaseStaleCalls": ("mutation { releaseStaleCalls(olderThan: 0) }", {}),
        "assignLead": (ASSIGN, {"id": prospect_id, "agent": agent_id}),
        "unassignLead": (UNASSIGN, {"id": prospect_id}),
        "createUser": (
            CREATE_USER,
            {"input": {"email": "new@test.example", "password": PASSWORD, "role": "admin"}},
        ),
        "explainEligibility": (
            "query($id: ID!) { explainEligibility(prospectId: $id) { callable } }",
            {"id": prospect_id},
        ),
        "doNotCallEntries": ("{ doNotCallEntries { id } }", {}),
        "callingHours": ("{ callingHours { weekday } }", {}),
        "dialingRules": ("{ dialingRules { maxAttemptsTotal } }", {}),
        "callbacks": ("{ callbacks { id } }", {}),
        "dispositionRules": ("{ dispositionRules { name } }", {}),
        "nextLead": ("mutation { nextLead { nothingCallable } }", {}),
        "scheduleCallback": (
            "mutation($id: ID!) {"
            ' scheduleCallback(prospectId: $id, at: "2999-01-01T15:00:00Z") { id } }',
            {"id": prospect_id},
        ),
        "addDoNotCall": ('mutation { addDoNotCall(phone: "212-555-0199") { id } }', {}),
        "removeDoNotCall": ('mutation { removeDoNotCall(phone: "212-555-0199") }', {}),
        "setCallingHours": (
            'mutation { setCallingHours(hours: [{weekday: 1, opensAt: "09:00",'
            ' closesAt: "17:00"}]) { weekday } }',
            {},
        ),
        "updateDialingRules": (
            "mutation { updateDialingRules(input: {maxAttemptsPerDay: 4}) { maxAttemptsPerDay } }",
            {},
        ),
        "agentPerformance": (
            'query { agentPerformance(from: "2026-01-01T00:00:00Z", to: "2026-01-02T00:00:00Z")'
            " { calls } }",
            {},
        ),
        "callStats": (
            'query { callStats(from: "2026-01-01T00:00:00Z", to: "2026-01-02T00:00:00Z")'
            " { calls } }",
            {},
        ),
        "prospectsCalledMultipleTimes": (
            "{ prospectsCalledMultipleTimes { edges { cursor } } }",
            {},
        ),
        "recentStatusChanges": ("{ recentStatusChanges { id } }", {}),
        "importProspects": (
            'mutation { importProspects(csv: "name,phone\\nAl,212-555-0166\\n", dryRun: true)'
            " { __typename } }",
            {},
        ),
        "importDoNotCall": (
            'mutation { importDoNotCall(csv: "212-555-0166\\n", dryRun: true) { __typename } }',
            {},
        ),
        "exportProspect": ("mutation($id: ID!) { exportProspect(id: $id) }", {"id": prospect_id}),
        "eraseProspect": (
            "mutation($id: ID!) { eraseProspect(id: $id) { erasedAt } }",
            {"id": prospect_id},
        ),
        "updateDisposition": (
            'mutation { updateDisposition(name: "Busy", input: {isFinal: false}) { name } }',
            {},
        ),
    }


async def test_every_field_but_login_refuses_without_a_valid_token(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    prospect = await add_prospect(api, team.agent["token"])
    started = await start(api, team.agent["token"], prospect["id"])
    operations = guarded_operations(prospect["id"], started["callLogId"], team.agent["id"])

    schema = (await post(api, ROOT_FIELDS, None, {}))["data"]["__schema"]
    root_fields = {
        field["name"] for kind in ("queryType", "mutationType") for field in schema[kind]["fields"]
    }
    # A new root field must be added here, so nobody forgets to guard it.
    assert root_fields - {"login"} <= set(operations)
    operations = {name: operation for name, operation in operations.items() if name in root_fields}

    before = await row_counts(pool)
    status_before = await pool.fetchval("SELECT status FROM prospects")
    for headers in (
        {},
        {"authorization": "Bearer garbage"},
        {"authorization": f"Bearer {uuid.uuid4().hex}{uuid.uuid4().hex}"},
        {"authorization": "Bearer"},
        {"authorization": f"Basic {team.admin['token']}"},
        {"authorization": team.admin["token"]},
        {"authorization": f"Bearer {team.admin['token']}x"},
    ):
        for name, (query, variables) in operations.items():
            body = await post(api, query, variables, headers)
            assert codes(body) == ["UNAUTHENTICATED"], (name, headers, body)
            assert not any((body.get("data") or {}).values()), (name, body)
    assert await row_counts(pool) == before
    assert await pool.fetchval("SELECT status FROM prospects") == status_before
    assert await pool.fetchval("SELECT count(*) FROM active_calls") == 1
    # The real token still works: nothing above revoked or broke it.
    assert (await api.data("{ viewer { id } }", token=team.admin["token"]))["viewer"]


async def test_subscriptions_are_refused_over_plain_http(api: Api, team: Team) -> None:
    """They stream over WebSocket (whose token check test_live_events covers); never a 500."""
    schema = (await post(api, ROOT_FIELDS, None, {}))["data"]["__schema"]
    subscriptions = [
        field["name"] for field in (schema["subscriptionType"] or {}).get("fields", [])
    ]
    assert subscriptions
    for name in subscriptions:
        for headers in ({}, {"authorization": "Bearer garbage"}, bearer(team.agent["token"])):
            response = await api.client.post(
                "/graphql",
                json={"query": f"subscription {{ {name} {{ __typename }} }}"},
                headers=headers,
            )
            assert response.status_code == 400, (name, headers, response.text)
            assert "subscriptions are not allowed" in response.text


async def test_login_needs_no_token(api: Api, team: Team) -> None:
    body = await post(api, LOGIN, {"e": team.agent["email"], "p": PASSWORD}, {})
    assert body["data"]["login"]["user"]["id"] == team.agent["id"]
    assert body["data"]["login"]["token"]


# -- logout ---------------------------------------------------------------------------------


async def test_logout_revokes_the_token_for_graphql_and_rest(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    token = await api.login(team.agent["email"])
    assert (await api.data("{ viewer { id } }", token=token))["viewer"]["id"] == team.agent["id"]
    response = await api.client.get("/api/active-calls", headers=bearer(token))
    assert response.status_code == 200

    assert (await api.data("mutation { logout }", token=token)) == {"logout": True}

    assert await api.error_code("{ viewer { id } }", token=token) == "UNAUTHENTICATED"
    assert await api.error_code("mutation { logout }", token=token) == "UNAUTHENTICATED"
    response = await api.client.get("/api/active-calls", headers=bearer(token))
    assert response.status_code == 401
    assert response.json()["code"] == "UNAUTHENTICATED"
    revoked_at = await pool.fetchval(
        "SELECT revoked_at FROM sessions WHERE token_hash = $1",
        hashlib.sha256(token.encode()).digest(),
    )
    assert revoked_at is not None
    # Only that token: the same user's other session lives on.
    assert (await api.data("{ viewer { id } }", token=team.agent["token"]))["viewer"]


async def test_tokens_are_stored_only_as_a_hash(api: Api, team: Team, pool: asyncpg.Pool) -> None:
    token = team.agent["token"]
    stored = await pool.fetch("SELECT token_hash FROM sessions")
    assert all(token.encode() not in bytes(row["token_hash"]) for row in stored)
    digest = hashlib.sha256(token.encode()).digest()
    assert await pool.fetchval("SELECT count(*) FROM sessions WHERE token_hash = $1", digest) == 1


async def test_expired_token_stops_working(api: Api, team: Team, pool: asyncpg.Pool) -> None:
    digest = hashlib.sha256(team.agent["token"].encode()).digest()
    await pool.execute(
        "UPDATE sessions SET expires_at = now() - interval '1 second' WHERE token_hash = $1", digest
    )
    assert await api.error_code("{ viewer { id } }", token=team.agent["token"]) == "UNAUTHENTICATED"


async def test_deactivated_user_token_stops_working(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    token = team.agent["token"]
    prospect = await add_prospect(api, token)
    await pool.execute("UPDATE users SET active = false WHERE id = $1", team.agent["id"])

    assert await api.error_code("{ viewer { id } }", token=token) == "UNAUTHENTICATED"
    assert await api.error_code(START, {"id": prospect["id"]}, token) == "UNAUTHENTICATED"
    response = await api.client.get(
        f"/api/prospects/{prospect['id']}/can-call", headers=bearer(token)
    )
    assert response.status_code == 401
    body = await post(api, LOGIN, {"e": team.agent["email"], "p": PASSWORD}, {})
    assert codes(body) == ["UNAUTHENTICATED"]
    assert body["errors"][0]["message"] == "Invalid email or password"
    assert await pool.fetchval("SELECT count(*) FROM call_logs") == 0


# -- roles ----------------------------------------------------------------------------------


async def test_agents_cannot_list_users_assign_or_create_users(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    agent = team.agent["token"]
    prospect = await add_prospect(api, agent)
    await api.data(
        ASSIGN, {"id": prospect["id"], "agent": team.agents[1]["id"]}, team.manager["token"]
    )
    assignments_before = [dict(row) for row in await pool.fetch("SELECT * FROM lead_assignments")]
    users_before = await pool.fetchval("SELECT count(*) FROM users")

    assert await api.error_code(USERS, token=agent) == "FORBIDDEN"
    variables = {"id": prospect["id"], "agent": team.agent["id"]}
    assert await api.error_code(ASSIGN, variables, agent) == "FORBIDDEN"
    assert await api.error_code(UNASSIGN, {"id": prospect["id"]}, agent) == "FORBIDDEN"
    new_user = {"email": "sneaky@test.example", "password": PASSWORD, "role": "admin"}
    assert await api.error_code(CREATE_USER, {"input": new_user}, agent) == "FORBIDDEN"
    started = await start(api, team.agents[1]["token"], prospect["id"])
    release = "mutation { releaseStaleCalls(olderThan: 0) }"
    assert await api.error_code(release, token=agent) == "FORBIDDEN"
    assert await pool.fetchval("SELECT count(*) FROM active_calls") == 1
    log = await pool.fetchrow("SELECT ended_at FROM call_logs WHERE id = $1", started["callLogId"])
    assert log["ended_at"] is None

    assignments = [dict(row) for row in await pool.fetch("SELECT * FROM lead_assignments")]
    assert assignments == assignments_before
    assert await pool.fetchval("SELECT count(*) FROM users") == users_before
    assert not await pool.fetchval("SELECT count(*) FROM users WHERE email = 'sneaky@test.example'")


async def test_managers_list_users_and_assign_but_cannot_create_users(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    manager = team.manager["token"]
    users = (await api.data(USERS, token=manager))["users"]
    assert {user["email"] for user in users} == {
        "admin@test.example",
        "manager@test.example",
        "agent1@test.example",
        "agent2@test.example",
    }

    prospect = await add_prospect(api, team.agent["token"])
    assigned = await api.data(ASSIGN, {"id": prospect["id"], "agent": team.agent["id"]}, manager)
    assert assigned["assignLead"]["agentId"] == team.agent["id"]
    row = await pool.fetchrow("SELECT agent_id, assigned_by, active FROM lead_assignments")
    assert (str(row["agent_id"]), str(row["assigned_by"]), row["active"]) == (
        team.agent["id"],
        team.manager["id"],
        True,
    )
    assert await api.data(UNASSIGN, {"id": prospect["id"]}, manager) == {"unassignLead": True}
    assert await pool.fetchval("SELECT count(*) FROM lead_assignments WHERE active") == 0

    new_user = {"email": "promoted@test.example", "password": PASSWORD, "role": "admin"}
    assert await api.error_code(CREATE_USER, {"input": new_user}, manager) == "FORBIDDEN"
    assert not await pool.fetchval(
        "SELECT count(*) FROM users WHERE email = 'promoted@test.example'"
    )


async def test_admins_create_users_who_can_then_sign_in(
    api: Api, team: Team, pool: asyncpg.Pool, settings: Settings
) -> None:
    new_user = {"email": "New.Agent@test.example", "password": PASSWORD, "role": "agent"}
    created = (await api.data(CREATE_USER, {"input": new_user}, team.admin["token"]))["createUser"]
    assert (created["email"], created["role"], created["active"]) == (
        "New.Agent@test.example",
        "agent",
        True,
    )
    stored = await pool.fetchval("SELECT password_hash FROM users WHERE id = $1", created["id"])
    assert stored.startswith(f"$2b${settings.bcrypt_rounds:02d}$")
    assert bcrypt.checkpw(PASSWORD.encode(), stored.encode())
    token = await api.login("new.agent@test.example")
    assert (await api.data("{ viewer { id role } }", token=token))["viewer"] == {
        "id": created["id"],
        "role": "agent",
    }
    # The same email in another case is the same user.
    duplicate = {**new_user, "email": "new.agent@TEST.example"}
    assert (
        await api.error_code(CREATE_USER, {"input": duplicate}, team.admin["token"]) == "CONFLICT"
    )


async def test_agents_end_only_their_own_calls_managers_end_any(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    first, second = team.agents
    prospect = await add_prospect(api, first["token"])
    started = await start(api, first["token"], prospect["id"])
    variables = {"id": prospect["id"], "log": started["callLogId"], "outcome": "Connected"}

    assert await api.error_code(END, variables, second["token"]) == "FORBIDDEN"
    assert await pool.fetchval("SELECT count(*) FROM active_calls") == 1
    log = await pool.fetchrow("SELECT ended_at, outcome, caller_id FROM call_logs")
    assert (log["ended_at"], log["outcome"], str(log["caller_id"])) == (None, None, first["id"])
    assert await pool.fetchval("SELECT status FROM prospects") == "New"

    ended = (await api.data(END, variables, team.manager["token"]))["endCall"]
    assert ended["outcome"] == "Connected"
    assert ended["callerId"] == first["id"]  # the call stays the agent's
    assert await pool.fetchval("SELECT count(*) FROM active_calls") == 0
    assert await pool.fetchval("SELECT outcome FROM call_logs") == "Connected"


async def test_admins_end_any_call_and_agents_their_own(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    first_prospect = await add_prospect(api, team.agent["token"], "(212) 555-0101")
    second_prospect = await add_prospect(api, team.agent["token"], "(212) 555-0102")
    own = await start(api, team.agent["token"], first_prospect["id"])
    other = await start(api, team.agents[1]["token"], second_prospect["id"])
    await api.data(
        END,
        {"id": first_prospect["id"], "log": own["callLogId"], "outcome": "Voicemail"},
        team.agent["token"],
    )
    await api.data(
        END,
        {"id": second_prospect["id"], "log": other["callLogId"], "outcome": "Busy"},
        team.admin["token"],
    )
    assert await pool.fetchval("SELECT count(*) FROM active_calls") == 0
    outcomes = await pool.fetch("SELECT outcome FROM call_logs ORDER BY outcome")
    assert [row["outcome"] for row in outcomes] == ["Busy", "Voicemail"]


# -- no password hash anywhere --------------------------------------------------------------


async def test_no_output_type_has_a_password_or_hash_field(api: Api) -> None:
    types = (await post(api, ALL_TYPES, None, {}))["data"]["__schema"]["types"]
    exposed = [
        f"{graph_type['name']}.{field['name']}"
        for graph_type in types
        if graph_type["kind"] in {"OBJECT", "INTERFACE"} and not graph_type["name"].startswith("__")
        for field in graph_type["fields"] or []
        if SECRET_NAME.search(field["name"])
    ]
    assert exposed == []
    assert await api.error_code("{ viewer { passwordHash } }") == "GRAPHQL_VALIDATION_FAILED"


async def test_no_response_carries_a_password_hash(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    hashes = [row["password_hash"] for row in await pool.fetch("SELECT password_hash FROM users")]
    assert hashes
    assert all(value.startswith("$2b$") for value in hashes)

    users = await api.client.post(
        "/graphql", json={"query": USERS}, headers=bearer(team.admin["token"])
    )
    graphql_login = await api.client.post(
        "/graphql",
        json={
            "query": "mutation($e: String!, $p: String!) "
            "{ login(email: $e, password: $p) { token user { id email name role active } } }",
            "variables": {"e": team.agent["email"], "p": PASSWORD},
        },
    )
    rest_login = await api.client.post(
        "/api/auth/login", json={"email": team.agent["email"], "password": PASSWORD}
    )
    viewer = await api.client.post(
        "/graphql", json={"query": "{ viewer { id email } }"}, headers=bearer(team.agent["token"])
    )
    for response in (users, graphql_login, rest_login, viewer):
        assert response.status_code == 200, response.text
        assert "$2b$" not in response.text
        assert not any(value in response.text for value in hashes)
    listed = users.json()["data"]["users"]
    assert len(listed) == 4
    assert all(
        set(user) == {"id", "email", "name", "role", "active", "createdAt"} for user in listed
    )
    assert set(rest_login.json()["user"]) == {"id", "email", "name", "role"}


async def test_passwords_are_stored_with_bcrypt(api: Api, team: Team, pool: asyncpg.Pool) -> None:
    rows = await pool.fetch("SELECT email, password_hash FROM users")
    assert len(rows) == 4
    for row in rows:
        assert row["password_hash"].startswith("$2b$"), row["email"]
        assert PASSWORD not in row["password_hash"]
        assert bcrypt.checkpw(PASSWORD.encode(), row["password_hash"].encode())
    # Salted: the same password never hashes to the same text twice.
    assert len({row["password_hash"] for row in rows}) == len(rows)


# -- failed logins --------------------------------------------------------------------------


async def test_failed_login_does_not_reveal_whether_the_email_exists(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    await pool.execute("UPDATE users SET active = false WHERE id = $1", team.agents[1]["id"])
    attempts = [
        ("nobody@test.example", PASSWORD),  # unknown email
        (team.agent["email"], "wrong password"),  # wrong password
        (team.agent["email"], ""),
        (team.agents[1]["email"], PASSWORD),  # deactivated
    ]
    graphql_errors = []
    rest_answers = []
    for email, password in attempts:
        body = await post(api, LOGIN, {"e": email, "p": password}, {})
        assert body["data"] is None
        graphql_errors.append({key: body["errors"][0][key] for key in ("message", "extensions")})
        response = await api.client.post(
            "/api/auth/login", json={"email": email, "password": password}
        )
        rest_answers.append((response.status_code, response.json()))
    assert graphql_errors == [
        {"message": "Invalid email or password", "extensions": {"code": "UNAUTHENTICATED"}}
    ] * len(attempts)
    assert rest_answers == [
        (401, {"error": "Invalid email or password", "code": "UNAUTHENTICATED"})
    ] * len(attempts)


async def test_the_caller_of_a_call_is_always_the_signed_in_user(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    arguments = await post(
        api,
        '{ __type(name: "Mutation") { fields { name args { name } } } }',
        None,
        {},
    )
    start_call = next(
        field for field in arguments["data"]["__type"]["fields"] if field["name"] == "startCall"
    )
    assert {arg["name"] for arg in start_call["args"]} == {
        "prospectId",
        "phoneNumber",
        "fromNumber",
    }
    prospect = await add_prospect(api, team.agent["token"])
    await start(api, team.agents[1]["token"], prospect["id"])
    caller = await pool.fetchval("SELECT caller_id FROM call_logs")
    assert str(caller) == team.agents[1]["id"]
