"""Compiled reads answer exactly what graphql-core answers.

Two servers on one database: one with compiled reads (the default), one without
(COMPILED_READS=0), which is plain Strawberry and graphql-core. Every document of the
corpus goes to both, and the answers must be the same: status, media type, and the JSON
parsed (data, errors, their paths and codes). The compiled server's counters say which
path answered, so a case meant for the compiled path cannot pass by falling back.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import asyncpg
import httpx
import pytest
from graphql import GraphQLObjectType, is_non_null_type
from helpers import Api, Team, add_user, bearer, parse_scrape, running_server

from graph.read_plans import SCALARS
from graph.schema import create_schema
from settings import Settings

# ---------------------------------------------------------------------------------------
# The data: every kind of value in a nullable position, null and not.

ARRANGE = """
INSERT INTO prospects (name, phone, email, company, time_zone, priority, created_at)
SELECT 'Prospect ' || i,
       '+1212555' || lpad(i::text, 4, '0'),
       CASE WHEN i % 3 = 0 THEN NULL ELSE 'p' || i || '@mail.test' END,
       CASE WHEN i % 4 = 0 THEN NULL WHEN i % 4 = 1 THEN 'Initech' ELSE 'Acme 50%' END,
       CASE WHEN i % 5 = 0 THEN 'America/Chicago' END,
       i % 3,
       -- whole seconds for some, microseconds for others, a zero fraction's worth too
       timestamptz '2026-01-01 00:00:00+00' + make_interval(secs => i * 61 + (i % 2) * 0.25)
FROM generate_series(1, 30) i
"""
CALLS = """
INSERT INTO call_logs (prospect_id, caller_id, phone_number, from_number, started_at,
                       ended_at, outcome, duration, notes, recording_url)
SELECT p.id, $1, p.phone, CASE WHEN n = 2 THEN '+12125550000' END,
       timestamptz '2026-02-01 00:00:00+00' + make_interval(secs => p.priority * 7 + n * 3600
           + substr(p.name, 10)::int * 86400 + n * 0.000001),
       CASE WHEN n < 3 THEN timestamptz '2026-02-02 00:00:00.5+00' END,
       CASE WHEN n < 3 THEN 'No Answer' END, CASE WHEN n = 1 THEN 42 END,
       CASE WHEN n = 1 THEN 'called back "later"' END,
       CASE WHEN n = 2 THEN 'https://rec.test/' || p.id END
FROM prospects p CROSS JOIN generate_series(1, 3) n
WHERE substr(p.name, 10)::int % 7 <> 0
"""
ACTIVE_CALL = """
INSERT INTO active_calls (prospect_id, caller_id, call_log_id, phone_number, started_at)
SELECT DISTINCT ON (c.prospect_id) c.prospect_id, c.caller_id, c.id, c.phone_number,
       timestamptz '2026-03-01 10:00:00+00' + make_interval(secs => substr(p.name, 10)::int)
FROM call_logs c JOIN prospects p ON p.id = c.prospect_id
WHERE p.name IN ('Prospect 30', 'Prospect 12')
ORDER BY c.prospect_id, c.started_at DESC
"""
ASSIGN = """
INSERT INTO lead_assignments (prospect_id, agent_id, assigned_by, expires_at)
SELECT id, $1, CASE WHEN substr(name, 10)::int % 2 = 0 THEN $2::uuid END,
       CASE WHEN substr(name, 10)::int % 4 = 0 THEN now() + interval '1 day' END
FROM prospects WHERE substr(name, 10)::int % 5 IN (0, 1)
"""
# Status changes: by a user (app.user_id set) and by hand in SQL (no user).
CHANGE_STATUS = """
SELECT set_config('app.user_id', $1, false);
UPDATE prospects SET status = 'Attempted' WHERE substr(name, 10)::int % 2 = 0;
SELECT set_config('app.user_id', '', false);
UPDATE prospects SET status = 'Contacted' WHERE substr(name, 10)::int % 4 = 0;
"""


@dataclass
class Servers:
    """The compiled server, the reference one, and the ids the corpus uses."""

    compiled: Api
    reference: Api
    team: Team
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def counters(self) -> Any:
        return self.compiled.app.state.compiled_reads


@pytest.fixture
async def servers(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[Servers]:
    async with (
        running_server(settings) as compiled,
        running_server(replace(settings, compiled_reads=False)) as reference,
    ):
        assert reference.app.state.compiled_reads is None
        team = Team(
            admin=await add_user(pool, compiled, "admin@test.example", "admin"),
            manager=await add_user(pool, compiled, "manager@test.example", "manager"),
            agents=[await add_user(pool, compiled, "agent1@test.example", "agent")],
        )
        # A user without a name: callerName falls back to the email.
        await pool.execute("UPDATE users SET name = '' WHERE email = 'manager@test.example'")
        await pool.execute(ARRANGE)
        await pool.execute(CALLS, team.agent["id"])
        await pool.execute(ACTIVE_CALL)
        await pool.execute(ASSIGN, team.agent["id"], team.manager["id"])
        async with pool.acquire() as connection:
            await connection.execute(CHANGE_STATUS.replace("$1", f"'{team.manager['id']}'"))
        rows = await pool.fetch("SELECT name, id::text FROM prospects")
        ids = {row["name"]: row["id"] for row in rows}
        yield Servers(compiled, reference, team, ids)


# ---------------------------------------------------------------------------------------
# The corpus.

PROSPECT_ALL = """
fragment UserFields on User { id email name role active createdAt __typename }
query Everything($id: ID!) {
  __typename
  prospect(id: $id) {
    __typename id name phone email company status lastCall createdAt updatedAt
    timeZone timeZones priority
    callHistory(first: 5) {
      __typename id prospectId callerId phoneNumber fromNumber startedAt endedAt outcome
      duration notes recordingUrl
      caller { ...UserFields }
      prospect { id name callHistory(first: 1) { id } }
    }
    statusHistory(first: 20) {
      __typename id prospectId oldStatus newStatus changedById createdAt
      changedBy { ...UserFields }
    }
    activeCall {
      __typename id prospectId callerId callLogId phoneNumber startedAt leaseExpiresAt
      prospectName callerName
      caller { email }
      prospect { name activeCall { id } }
    }
    assignment {
      __typename id prospectId agentId assignedById assignedAt expiresAt active
      agent { ...UserFields }
    }
  }
}
"""

ALIASES_AND_FRAGMENTS = """
query Shapes($a: ID!, $b: ID!, $calls: Int = 2) {
  first: prospect(id: $a) { ...Basics  who: name  ... on Prospect { phone } }
  second: prospect(id: $b) {
    ... { id }
    ...Basics
    recent: callHistory(first: $calls) { when: startedAt }
    older: callHistory(first: 3) { id outcome }
    ...Histories
  }
  me: viewer { id }
  viewer { email role }
}
fragment Basics on Prospect { id name status ...Deeper }
fragment Deeper on Prospect { company email id }
fragment Histories on Prospect {
  statusHistory(first: 1) { newStatus }
  statusHistory(first: 1) { oldStatus }
}
"""

DIRECTIVES = """
query Directives($id: ID!, $withCalls: Boolean!, $skipName: Boolean = false) {
  prospect(id: $id) {
    id
    name @skip(if: $skipName)
    callHistory(first: 2) @include(if: $withCalls) { id }
    statusHistory(first: 2) @skip(if: true) { id }
    ... @include(if: $withCalls) { phone }
    ...Extra @skip(if: $withCalls)
  }
}
fragment Extra on Prospect { email }
"""

PAGE = """
query Page($first: Int, $after: String, $filter: ProspectFilter) {
  prospects(first: $first, after: $after, filter: $filter) {
    __typename
    edges {
      __typename cursor
      node { id name email company status createdAt assignment { agentId } }
    }
    pageInfo { __typename hasNextPage hasPreviousPage startCursor endCursor }
  }
}
"""

PAGE_NESTED = """
query PageNested($first: Int!) {
  prospects(first: $first) {
    edges {
      node {
        id name phone status
        activeCall { id callerId startedAt caller { name } }
        assignment { agentId expiresAt agent { email } }
        callHistory(first: 5) { id startedAt outcome caller { email } }
        statusHistory(first: 3) { newStatus changedBy { email } }
      }
    }
    pageInfo { hasNextPage endCursor }
  }
}
"""

DEFAULT_PAGE = "{ prospects { edges { node { id } } pageInfo { hasNextPage startCursor } } }"

ACTIVE_CALLS = """
query ActiveCalls {
  activeCalls {
    id prospectId callerId callLogId phoneNumber startedAt leaseExpiresAt prospectName
    callerName caller { id name } prospect { id name activeCall { callerName } }
  }
}
"""

# The reads bench/peers.py measures, as it writes them: (a) to (e).
BENCH_PROSPECT = """
query Prospect($id: ID!) {
  prospect(id: $id) {
    id name phone status
    callHistory(first: 5) { id startedAt outcome }
  }
}"""
BENCH_PAGE = """
query Page($first: Int!) {
  prospects(first: $first) { edges { node { id name phone status } } }
}"""
BENCH_PAGE_NESTED = """
query PageNested($first: Int!) {
  prospects(first: $first) {
    edges {
      node {
        id name phone status
        activeCall { id callerId startedAt }
        assignment { agentId expiresAt }
        callHistory(first: 5) { id startedAt outcome }
      }
    }
  }
}"""
BENCH_ACTIVE_CALLS = """
query ActiveCalls {
  activeCalls { id prospectId callerId startedAt prospectName callerName }
}"""
BENCH_STATUS_HISTORY = """
query StatusHistory($id: ID!) {
  prospect(id: $id) {
    statusHistory(first: 20) { id oldStatus newStatus changedById createdAt }
  }
}"""

TWO_OPERATIONS = """
query One($id: ID!) { prospect(id: $id) { name } }
query Two { activeCalls { id } }
"""


@dataclass
class Case:
    """One request to both servers; compiled says which path must answer it."""

    name: str
    query: str
    variables: dict[str, Any] | None = None
    compiled: bool = True
    token: str | None = "agent"
    operation_name: str | None = None
    accept: str | None = None
    body: Any = None


def corpus(ids: dict[str, str]) -> list[Case]:
    """Every case, with the ids of the arranged data."""
    called, active = ids["Prospect 12"], ids["Prospect 30"]
    quiet = ids["Prospect 7"]  # no calls, no email, no assignment, no active call
    assigned = ids["Prospect 20"]  # assigned with an expiry, Contacted
    unknown = "00000000-0000-4000-8000-000000000000"
    bench = [
        case
        for role in ("agent", "manager", "admin")
        for case in (
            Case(f"bench (a), {role}", BENCH_PROSPECT, {"id": called}, token=role),
            Case(f"bench (b), {role}", BENCH_PAGE, {"first": 50}, token=role),
            Case(f"bench (c), {role}", BENCH_PAGE_NESTED, {"first": 50}, token=role),
            Case(f"bench (d), {role}", BENCH_ACTIVE_CALLS, token=role),
            Case(f"bench (e), {role}", BENCH_STATUS_HISTORY, {"id": assigned}, token=role),
        )
    ]
    return [
        *bench,
        Case("everything, on a call", PROSPECT_ALL, {"id": active}),
        Case("everything, called", PROSPECT_ALL, {"id": called}),
        Case("everything, nothing to show", PROSPECT_ALL, {"id": quiet}),
        Case("everything, assigned", PROSPECT_ALL, {"id": assigned}),
        Case("aliases and fragments", ALIASES_AND_FRAGMENTS, {"a": called, "b": active}),
        Case("a default overridden", ALIASES_AND_FRAGMENTS, {"a": quiet, "b": called, "calls": 0}),
        Case("directives on", DIRECTIVES, {"id": called, "withCalls": True}),
        Case("directives off", DIRECTIVES, {"id": called, "withCalls": False, "skipName": True}),
        Case(
            "an ID as a number",
            "query($id: ID!) { prospect(id: $id) { id } }",
            {"id": 5},
            compiled=False,
        ),
        Case("a page", PAGE, {"first": 7}),
        Case("the default page", DEFAULT_PAGE),
        Case("a full page", PAGE, {"first": 100}),
        Case("an empty page", PAGE, {"first": 0}),
        Case("status", PAGE, {"first": 5, "filter": {"status": "Attempted"}}),
        Case("search a name", PAGE, {"first": 5, "filter": {"search": " prospect 1 "}}),
        Case("search an email", PAGE, {"first": 5, "filter": {"search": "P2@MAIL"}}),
        Case("search a company", PAGE, {"first": 5, "filter": {"search": "initech"}}),
        Case("search a wildcard", PAGE, {"first": 5, "filter": {"search": "50%"}}),
        Case("search a percent", PAGE, {"first": 5, "filter": {"search": "%"}}),
        Case("search phone digits", PAGE, {"first": 5, "filter": {"search": "(212) 555-0011"}}),
        Case("search blank", PAGE, {"first": 5, "filter": {"search": "   "}}),
        Case("search nothing", PAGE, {"first": 5, "filter": {"search": "zebulon"}}),
        Case("assigned", PAGE, {"first": 5, "filter": {"assignedTo": "AGENT"}}),
        Case(
            "assigned, searched, status",
            PAGE,
            {"first": 5, "filter": {"assignedTo": "AGENT", "search": "1", "status": "New"}},
        ),
        Case("a null filter", PAGE, {"first": 3, "filter": None}),
        Case("nested page", PAGE_NESTED, {"first": 30}),
        Case("active calls", ACTIVE_CALLS),
        Case("viewer", "{ viewer { id email name role active createdAt } }"),
        Case("viewer, a manager", "query Me { viewer { email } }", token="manager"),
        Case("chosen operation", TWO_OPERATIONS, {"id": called}, operation_name="One"),
        Case("other operation", TWO_OPERATIONS, operation_name="Two"),
        Case(
            "graphql-response+json", PAGE, {"first": 2}, accept="application/graphql-response+json"
        ),
        Case(
            "either media type",
            DEFAULT_PAGE,
            accept="application/graphql-response+json, application/json;q=0.9",
        ),
        Case("accepting neither JSON", BENCH_PAGE, {"first": 2}, accept="text/html"),
        Case(
            "a streamed response",
            BENCH_PAGE,
            {"first": 2},
            accept="multipart/mixed",
            compiled=False,
        ),
        # Errors, and what the compiler does not know: graphql-core answers.
        Case("no token", DEFAULT_PAGE, compiled=False, token=None),
        Case("a bad token", DEFAULT_PAGE, compiled=False, token="not-a-token"),
        Case(
            "no token, graphql-response+json",
            DEFAULT_PAGE,
            compiled=False,
            token=None,
            accept="application/graphql-response+json",
        ),
        Case("an unknown prospect", PROSPECT_ALL, {"id": unknown}, compiled=False),
        Case("a malformed id", PROSPECT_ALL, {"id": "nope"}, compiled=False),
        Case("a literal malformed id", '{ prospect(id: "x") { id } }', compiled=False),
        Case("first over 100", PAGE, {"first": 101}, compiled=False),
        Case("first negative", PAGE, {"first": -1}, compiled=False),
        Case("a bad cursor", PAGE, {"first": 2, "after": "bm9wZQ=="}, compiled=False),
        Case("a bad agent", PAGE, {"first": 2, "filter": {"assignedTo": "x"}}, compiled=False),
        Case("a long search", PAGE, {"first": 2, "filter": {"search": "x" * 201}}, compiled=False),
        Case(
            "a history too long",
            "query($id: ID!) { prospect(id: $id) { callHistory(first: 101) { id } } }",
            {"id": called},
            compiled=False,
        ),
        Case(
            "a nested history too long",
            "{ prospects(first: 2) { edges { node { name statusHistory(first: -1) { id } } } } }",
            compiled=False,
        ),
        Case("a missing variable", PAGE_NESTED, compiled=False),
        Case("first: null", PAGE, {"first": None}, compiled=False),
        Case(
            "a literal first: null",
            "{ prospects(first: null) { edges { cursor } } }",
            compiled=False,
        ),
        Case(
            "a literal history first: null",
            "{ activeCalls { prospect { callHistory(first: null) { id } } } }",
            compiled=False,
        ),
        Case(
            "literal arguments",
            '{ prospects(first: 3, filter: {status: "Attempted", search: "1"}) '
            "{ edges { node { id status } } pageInfo { hasPreviousPage } } }",
        ),
        Case(
            "an error deep in a list",
            "{ activeCalls { id prospect { name callHistory(first: 101) { id } } } }",
            compiled=False,
        ),
        Case(
            "an error deep in a page",
            "query($n: Int!) { prospects(first: 2) { edges { node { activeCall { prospect "
            "{ statusHistory(first: $n) { id } } } } } } }",
            {"n": 1000},
            compiled=False,
        ),
        Case("a variable of the wrong type", PAGE_NESTED, {"first": "x"}, compiled=False),
        Case("an unknown field", "{ prospects { edges { node { shoeSize } } } }", compiled=False),
        Case("a syntax error", "{ prospects { ", compiled=False),
        Case(
            "too deep",
            "{ activeCalls { prospect { activeCall { prospect { activeCall { "
            "prospect { activeCall { prospect { activeCall { id } } } } } } } } } }",
            compiled=False,
        ),
        Case("introspection", "{ __schema { queryType { name } } }", compiled=False),
        Case(
            "introspection beside data",
            '{ __type(name: "User") { name } viewer { id } }',
            compiled=False,
        ),
        Case("a field it does not compile", "{ dispositions { name } }", compiled=False),
        Case(
            "a mutation", 'mutation { updateProspect(id: "x", input: {}) { id } }', compiled=False
        ),
        Case("a subscription", "subscription { activeCallEvents { type } }", compiled=False),
        Case(
            "an operation not in the document",
            TWO_OPERATIONS,
            operation_name="Three",
            compiled=False,
        ),
        Case("no operation chosen", TWO_OPERATIONS, compiled=False),
        Case("not an object", "", body=[1, 2], compiled=False),
        Case(
            "variables not an object",
            "",
            body={"query": DEFAULT_PAGE, "variables": [1]},
            compiled=False,
        ),
    ]


async def ask(api: Api, case: Case, tokens: dict[str, str]) -> httpx.Response:
    headers = bearer(tokens.get(case.token, case.token)) if case.token else {}
    if case.accept:
        headers["accept"] = case.accept
    body = case.body
    if body is None:
        body = {"query": case.query, "variables": case.variables}
        if case.operation_name:
            body["operationName"] = case.operation_name
    return await api.client.post("/graphql", json=body, headers=headers)


def _resolve(value: Any, servers: Servers) -> Any:
    """Stand-ins in variables: AGENT is the agent's id."""
    if value == "AGENT":
        return servers.team.agent["id"]
    if isinstance(value, dict):
        return {key: _resolve(item, servers) for key, item in value.items()}
    return value


def ordered(text: str) -> Any:
    """The JSON with each object as its list of (key, value) pairs, in order."""
    return json.loads(text, object_pairs_hook=list)


async def test_compiled_reads_answer_as_graphql_core(servers: Servers) -> None:
    tokens = {
        "agent": servers.team.agent["token"],
        "manager": servers.team.manager["token"],
        "admin": servers.team.admin["token"],
    }
    for case in corpus(servers.ids):
        case.variables = _resolve(case.variables, servers)
        answered = servers.counters.answered
        compiled = await ask(servers.compiled, case, tokens)
        reference = await ask(servers.reference, case, tokens)
        ran_compiled = servers.counters.answered - answered == 1
        assert ran_compiled == case.compiled, f"{case.name}: compiled path ran: {ran_compiled}"
        assert compiled.status_code == reference.status_code, case.name
        for header in ("content-type", "vary"):
            assert compiled.headers.get(header) == reference.headers.get(header), (
                case.name,
                header,
            )
        if reference.headers.get("content-type", "").startswith("application/"):
            # Keys in order too: a response follows the order of the selection.
            assert ordered(compiled.text) == ordered(reference.text), case.name
            if case.compiled:
                assert "errors" not in compiled.json(), case.name
        else:
            assert compiled.text == reference.text, case.name


async def test_pages_through_the_list_with_cursors(servers: Servers) -> None:
    """Both paths walk the same pages, each cursor from the compiled one."""
    token = servers.team.agent["token"]
    after, seen = None, []
    while True:
        variables = {"first": 4, "after": after, "filter": {"search": "prospect"}}
        compiled = await servers.compiled.graphql(PAGE, variables, token)
        reference = await servers.reference.graphql(PAGE, variables, token)
        assert compiled == reference
        page = compiled["data"]["prospects"]
        seen += [edge["node"]["id"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert len(seen) == len(set(seen)) == 30


async def test_answers_follow_changes_and_emptiness(servers: Servers, pool: asyncpg.Pool) -> None:
    """No active calls and no prospects at all: empty lists and empty pages, as ever."""
    token = servers.team.agent["token"]
    await pool.execute("DELETE FROM active_calls")
    for query in (ACTIVE_CALLS, PAGE, PAGE_NESTED):
        variables = {"first": 3}
        assert await servers.compiled.graphql(query, variables, token) == (
            await servers.reference.graphql(query, variables, token)
        )
    await pool.execute("DELETE FROM prospects")
    answered = servers.counters.answered
    for query in (PAGE, DEFAULT_PAGE):
        variables = {"first": 3}
        compiled = await servers.compiled.graphql(query, variables, token)
        assert compiled == await servers.reference.graphql(query, variables, token)
        assert compiled["data"]["prospects"]["edges"] == []
    assert servers.counters.answered == answered + 2


async def test_a_revoked_token_is_refused_at_once(servers: Servers, pool: asyncpg.Pool) -> None:
    token = servers.team.agent["token"]
    query = "query Me { viewer { email } }"
    assert (await servers.compiled.data(query, token=token))["viewer"]["email"]
    await pool.execute("UPDATE users SET active = false WHERE email = 'agent1@test.example'")
    assert await servers.compiled.error_code(query, token=token) == "UNAUTHENTICATED"


async def test_sessions_that_ended_are_refused_alike(servers: Servers, pool: asyncpg.Pool) -> None:
    """An expired session, a logged-out one, a deactivated user: graphql-core answers."""
    expired = await add_user(pool, servers.compiled, "expired@test.example", "agent")
    logged_out = await add_user(pool, servers.compiled, "out@test.example", "manager")
    deactivated = await add_user(pool, servers.compiled, "gone@test.example", "admin")
    await pool.execute(
        "UPDATE sessions SET expires_at = now() - interval '1 second' WHERE user_id = $1::uuid",
        expired["id"],
    )
    assert await servers.compiled.data("mutation { logout }", token=logged_out["token"])
    await pool.execute("UPDATE users SET active = false WHERE id = $1::uuid", deactivated["id"])
    answered = servers.counters.answered
    for user in (expired, logged_out, deactivated):
        for query, variables in ((BENCH_PAGE, {"first": 5}), (BENCH_ACTIVE_CALLS, None)):
            compiled = await servers.compiled.graphql(query, variables, user["token"])
            reference = await servers.reference.graphql(query, variables, user["token"])
            assert compiled == reference
            assert compiled["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert servers.counters.answered == answered


async def test_many_users_at_once_each_get_their_own_answer(
    servers: Servers, pool: asyncpg.Pool
) -> None:
    """Authentication is per request: 6 users and bad tokens, 40 rounds, all in parallel."""
    users = [servers.team.agent, servers.team.manager, servers.team.admin]
    users += [
        await add_user(pool, servers.compiled, f"u{n}@test.example", "agent") for n in range(3)
    ]
    query = (
        "query Me($first: Int!) { viewer { id email } "
        "prospects(first: $first) { edges { node { id } } } }"
    )
    answered = servers.counters.answered

    async def one(user: dict[str, Any] | None, first: int) -> None:
        token = user["token"] if user else "bad-token"
        body = await servers.compiled.graphql(query, {"first": first}, token)
        if user is None:
            assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
            return
        assert body["data"]["viewer"] == {"id": user["id"], "email": user["email"]}
        assert len(body["data"]["prospects"]["edges"]) == first

    for _ in range(40):
        await asyncio.gather(
            *(one(user, n % 5 + 1) for n, user in enumerate([*users, None, *users]))
        )
    assert servers.counters.answered - answered == 40 * 12


async def test_compiled_requests_are_counted_in_the_metrics(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    token_for_metrics = "scrape-token"
    async with running_server(replace(settings, metrics_token=token_for_metrics)) as api:
        user = await add_user(pool, api, "counted@test.example", "agent")

        async def count(operation: str, outcome: str) -> float:
            response = await api.client.get("/metrics", headers=bearer(token_for_metrics))
            return parse_scrape(response.text).value(
                "callfloor_graphql_requests_total", operation=operation, outcome=outcome
            )

        before = await count("CountedRead", "OK")
        unauthenticated = await count("CountedRead", "UNAUTHENTICATED")
        answered = api.app.state.compiled_reads.answered
        for _ in range(3):
            await api.data("query CountedRead { viewer { id } }", token=user["token"])
        await api.graphql("query CountedRead { viewer { id } }", token="bad")
        assert api.app.state.compiled_reads.answered == answered + 3
        assert await count("CountedRead", "OK") == before + 3
        assert await count("CountedRead", "UNAUTHENTICATED") == unauthenticated + 1


# The table each compiled type is read from (graph/read_plans.py).
TABLES = {
    "User": "users",
    "Prospect": "prospects",
    "CallLog": "call_logs",
    "ActiveCall": "active_calls",
    "StatusChange": "prospect_status_log",
    "LeadAssignment": "lead_assignments",
}


async def test_non_null_fields_read_columns_that_hold_no_null(pool: asyncpg.Pool) -> None:
    """PostgreSQL writes a null where graphql-core would answer an error for one, so a
    non-null field may only read a column that cannot be null."""
    schema = create_schema()._schema
    checked = 0
    for type_name, fields in SCALARS.items():
        graphql_type = schema.get_type(type_name)
        assert isinstance(graphql_type, GraphQLObjectType)
        for name, expression in fields.items():
            column = re.fullmatch(r"(?:graphql_datetime\()?\{t\}\.(\w+)\)?(?:::text)?", expression)
            if column is None or not is_non_null_type(graphql_type.fields[name].type):
                continue
            nullable = await pool.fetchval(
                "SELECT is_nullable FROM information_schema.columns "
                "WHERE table_schema = 'public' AND table_name = $1 AND column_name = $2",
                TABLES[type_name],
                column.group(1),
            )
            assert nullable == "NO", f"{type_name}.{name} reads a nullable column"
            checked += 1
    assert checked > 30
