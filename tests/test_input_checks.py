"""Every input passes one text check and every date-time one range check, where input
enters (the GraphQL document and its variables, over HTTP and WebSockets, and the REST
bodies), so a value the database cannot hold is BAD_USER_INPUT, never a crash."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
import websockets
from graphql import GraphQLNamedType, get_named_type
from helpers import Api, Team, add_prospect, only_error, start, table_rows

from graph.schema import create_schema

# What a refused request could have written.
TABLES = (
    "users",
    "sessions",
    "login_failures",
    "prospects",
    "prospect_status_log",
    "call_logs",
    "active_calls",
    "lead_assignments",
    "callbacks",
    "do_not_call",
    "dialing_rules",
)

# Valid ISO 8601 date-times that leave Python's (and so asyncpg's) range once in UTC, or
# come so close to its end that what the SQL derives from them would.
OUT_OF_RANGE = [
    "9999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
    "0001-06-01T00:00:00Z",
    "9999-06-01T00:00:00+00:00",
]


def no_crash_logged(caplog: pytest.LogCaptureFixture) -> None:
    """No error, with or without a traceback, was logged for any request."""
    crashes = [
        record.getMessage()
        for record in caplog.records
        if record.levelno >= logging.ERROR
        and (record.name.startswith(("callfloor", "strawberry")) or record.name == "uvicorn.error")
    ]
    assert not crashes, crashes


# -- date-times ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DateTimeInput:
    """A DateTime argument, with a document taking it as `{value}` (a variable `$v` or a
    literal) and the other variables that document needs."""

    field: str
    argument: str
    document: str
    role: str


DATE_TIME_INPUTS = [
    DateTimeInput(
        "explainEligibility",
        "at",
        "query($p: ID!{header}) { explainEligibility(prospectId: $p, at: {value}) { callable } }",
        "agent",
    ),
    DateTimeInput(
        "scheduleCallback",
        "at",
        "mutation($p: ID!{header}) { scheduleCallback(prospectId: $p, at: {value}) { id } }",
        "agent",
    ),
    DateTimeInput(
        "endCall",
        "callbackAt",
        "mutation($p: ID!, $c: ID!{header}) { endCall(prospectId: $p, callLogId: $c,"
        ' outcome: "Callback", callbackAt: {value}) { id } }',
        "agent",
    ),
    DateTimeInput(
        "assignLead",
        "expiresAt",
        "mutation($p: ID!, $a: ID!{header}) {"
        " assignLead(prospectId: $p, agentId: $a, expiresAt: {value}) { id } }",
        "manager",
    ),
    DateTimeInput(
        "addDoNotCall",
        "expiresAt",
        'mutation{header_alone} { addDoNotCall(phone: "212-555-0199", expiresAt: {value}) { id } }',
        "manager",
    ),
    DateTimeInput(
        "importDoNotCall",
        "expiresAt",
        'mutation{header_alone} { importDoNotCall(csv: "212-555-0198\\n", expiresAt: {value})'
        " { added } }",
        "manager",
    ),
    DateTimeInput(
        "agentPerformance",
        "from",
        'query{header_alone} { agentPerformance(from: {value}, to: "2026-01-01T00:00:00Z")'
        " { agentId } }",
        "manager",
    ),
    DateTimeInput(
        "agentPerformance",
        "to",
        'query{header_alone} { agentPerformance(from: "2026-01-01T00:00:00Z", to: {value})'
        " { agentId } }",
        "manager",
    ),
    DateTimeInput(
        "callStats",
        "from",
        'query{header_alone} { callStats(from: {value}, to: "2026-01-01T00:00:00Z") { calls } }',
        "manager",
    ),
    DateTimeInput(
        "callStats",
        "to",
        'query{header_alone} { callStats(from: "2026-01-01T00:00:00Z", to: {value}) { calls } }',
        "manager",
    ),
]


def document_of(case: DateTimeInput, literal: str | None) -> str:
    """The case's document taking the value as variable $v, or as this literal."""
    header, value = (", $v: DateTime!", "$v") if literal is None else ("", json.dumps(literal))
    alone = "($v: DateTime!)" if literal is None else ""
    return (
        case.document.replace("{header}", header)
        .replace("{header_alone}", alone)
        .replace("{value}", value)
    )


def test_every_date_time_input_of_the_schema_is_covered_here() -> None:
    """A DateTime argument added to the schema without a case here fails."""
    schema = create_schema()._schema
    arguments = set()
    for root in (schema.query_type, schema.mutation_type, schema.subscription_type):
        for name, field in (root.fields if root else {}).items():
            for argument_name, argument in field.args.items():
                named: GraphQLNamedType = get_named_type(argument.type)
                if named.name == "DateTime":
                    arguments.add((name, argument_name))
    inputs = [t for t in schema.type_map.values() if getattr(t, "kind", "") == "input_object"]
    assert not [
        (t.name, name)
        for t in inputs
        for name, field in getattr(t, "fields", {}).items()
        if get_named_type(field.type).name == "DateTime"
    ], "an input object has a DateTime field: add it to DATE_TIME_INPUTS"
    assert arguments == {(case.field, case.argument) for case in DATE_TIME_INPUTS}


async def test_date_times_beyond_the_database_are_bad_input_and_write_nothing(
    api: Api, team: Team, pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    agent = team.agent
    prospect = await add_prospect(api, agent["token"])
    started = await start(api, agent["token"], prospect["id"])
    other = await add_prospect(api, agent["token"], "(212) 555-0177", name="Other")
    variables = {
        "p": prospect["id"],
        "c": started["callLogId"],
        "a": agent["id"],
    }
    tokens = {"agent": agent["token"], "manager": team.manager["token"]}
    before = await table_rows(pool, TABLES)
    for case in DATE_TIME_INPUTS:
        needed = {name: value for name, value in variables.items() if f"${name}" in case.document}
        if case.field in {"scheduleCallback", "assignLead"}:
            needed["p"] = other["id"]  # a prospect that is not on a call
        for bad in OUT_OF_RANGE:
            for literal in (None, bad):
                query = document_of(case, literal)
                values = needed if literal is not None else {**needed, "v": bad}
                error = only_error(await api.graphql(query, values, tokens[case.role]))
                where = (case.field, case.argument, bad, literal is not None)
                # Named by the argument, as a variable or as a literal.
                assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": case.argument}, (
                    where,
                    error,
                )
                assert "0002-01-01T00:00:00Z and 9998-12-31T23:59:59Z" in error["message"], where
    assert await table_rows(pool, TABLES) == before
    no_crash_logged(caplog)


async def test_date_times_at_the_edges_of_the_range_are_answered(api: Api, team: Team) -> None:
    """The margin keeps what the SQL derives from the input (the next opening of calling
    hours, the 24 hours before) decodable: these used to come back as year-10000 rows."""
    token = team.agent["token"]
    prospect = await add_prospect(api, token)
    explain = document_of(DATE_TIME_INPUTS[0], None).replace("callable", "callable rules { until }")
    for edge in ("0002-01-01T00:00:00Z", "9998-12-31T23:59:59Z", "9998-12-31T23:59:59-14:00"):
        if edge.endswith("-14:00"):
            body = await api.graphql(explain, {"p": prospect["id"], "v": edge}, token)
            assert only_error(body)["extensions"]["code"] == "BAD_USER_INPUT"
            continue
        data = await api.data(explain, {"p": prospect["id"], "v": edge}, token)
        assert data["explainEligibility"]["callable"] in {True, False}
    report = (
        "query($f: DateTime!, $t: DateTime!) { agentPerformance(from: $f, to: $t) { agentId } }"
    )
    data = await api.data(
        report, {"f": "9998-01-01T00:00:00Z", "t": "9998-12-31T00:00:00Z"}, team.manager["token"]
    )
    assert {row["agentId"] for row in data["agentPerformance"]} >= {team.agent["id"]}


# -- text ----------------------------------------------------------------------------------

LOGIN = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }"
NOT_TEXT = ["\ud800", "pass\udfffword", "\x00", "pass\x00word"]


async def test_text_that_is_not_text_in_a_login_is_bad_input_without_a_traceback(
    api: Api, team: Team, pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    """Anonymous requests: a lone surrogate in the password used to be
    INTERNAL_SERVER_ERROR with a traceback in the log for every request."""
    caplog.set_level(logging.ERROR)
    before = await table_rows(pool, TABLES)
    for bad in NOT_TEXT:
        for variables, field in (
            ({"e": team.admin["email"], "p": bad}, "password"),
            ({"e": f"admin{bad}@test.example", "p": "whatever-password"}, "email"),
        ):
            error = only_error(await api.graphql(LOGIN, variables))
            assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": field}, (bad, error)
            assert error["message"].startswith(f"{field} "), error
    assert await table_rows(pool, TABLES) == before
    no_crash_logged(caplog)


async def test_rest_bodies_pass_the_same_text_check(
    api: Api, team: Team, pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    """REST login used to answer 500 for a lone surrogate in the password."""
    caplog.set_level(logging.ERROR)
    token = team.agent["token"]
    prospect = await add_prospect(api, token)
    before = await table_rows(pool, TABLES)
    headers = {"content-type": "application/json"}
    cases: list[tuple[str, dict[str, Any], dict[str, str], str]] = [
        ("/api/auth/login", {"email": team.admin["email"], "password": "\ud800"}, {}, "password"),
        (
            "/api/auth/login",
            {"email": "a\x00@test.example", "password": "long enough"},
            {},
            "email",
        ),
        (
            f"/api/prospects/{prospect['id']}/start-call",
            {"phoneNumber": "212\x00555\x000123"},
            {"authorization": f"Bearer {token}"},
            "phoneNumber",
        ),
        (
            f"/api/prospects/{prospect['id']}/start-call",
            {"fromNumber": "\udc00"},
            {"authorization": f"Bearer {token}"},
            "fromNumber",
        ),
        (
            f"/api/prospects/{prospect['id']}/start-call",
            {"nested": {"deeper": ["\ud83d"]}},
            {"authorization": f"Bearer {token}"},
            "deeper",
        ),
    ]
    for path, body, extra, field in cases:
        response = await api.client.post(path, content=json.dumps(body), headers=headers | extra)
        assert response.status_code == 422, (path, body, response.text)
        assert response.json()["code"] == "BAD_USER_INPUT"
        assert response.json()["field"] == field
    assert await table_rows(pool, TABLES) == before
    no_crash_logged(caplog)


CREATE = "mutation($i: CreateProspectInput!) { createProspect(input: $i) { id } }"
UPDATE = (
    "mutation($id: ID!, $i: UpdateProspectInput!) { updateProspect(id: $id, input: $i) { id } }"
)
RULES = "mutation($i: DialingRulesInput!) { updateDialingRules(input: $i) { defaultTimeZone } }"


async def test_time_zones_and_other_text_refuse_nul_and_surrogates(
    api: Api, team: Team, pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    agent, manager = team.agent["token"], team.manager["token"]
    prospect = await add_prospect(api, agent)
    before = await table_rows(pool, TABLES)
    for bad in ("America/New_York\x00", "\x00", "\ud800", "America/\udbff"):
        cases: list[tuple[str, dict[str, Any], str, str]] = [
            (
                CREATE,
                {"i": {"name": "Pat", "phone": "(212) 555-0155", "timeZone": bad}},
                agent,
                "timeZone",
            ),
            (UPDATE, {"id": prospect["id"], "i": {"timeZone": bad}}, agent, "timeZone"),
            (RULES, {"i": {"defaultTimeZone": bad}}, manager, "defaultTimeZone"),
            (CREATE, {"i": {"name": bad, "phone": "(212) 555-0155"}}, agent, "name"),
            (UPDATE, {"id": prospect["id"], "i": {"company": bad}}, agent, "company"),
        ]
        for query, variables, token, field in cases:
            error = only_error(await api.graphql(query, variables, token))
            assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": field}, (bad, error)
    assert await table_rows(pool, TABLES) == before
    no_crash_logged(caplog)


async def test_literals_in_the_document_pass_the_same_check(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    """An escaped \\u0000 or a raw NUL inside a string literal, a block string, an input
    object or a variable's default value."""
    agent, manager = team.agent["token"], team.manager["token"]
    prospect = await add_prospect(api, agent)
    before = await table_rows(pool, TABLES)
    cases = [
        (
            'mutation { login(email: "a@b.example", password: "\\u0000x") { token } }',
            None,
            "password",
        ),
        (
            'mutation { login(email: "a\x00@b.example", password: "long enough") { token } }',
            None,
            "email",
        ),
        (
            'mutation { login(email: "a@b.example", password: """x\x00""") { token } }',
            None,
            "password",
        ),
        (
            'mutation { createProspect(input: {name: "P\\u0000", phone: "2125550156"}) { id } }',
            agent,
            "name",
        ),
        (
            f'mutation {{ updateProspect(id: "{prospect["id"]}", input: {{timeZone: "UTC\\u0000"}})'
            " { id } }",
            agent,
            "timeZone",
        ),
        (
            'mutation { updateDialingRules(input: {defaultTimeZone: "\\u0000"})'
            " { defaultTimeZone } }",
            manager,
            "defaultTimeZone",
        ),
        (
            'query($s: String = "\\u0000") { prospects(filter: {search: $s})'
            " { edges { cursor } } }",
            agent,
            "s",
        ),
    ]
    for query, token, field in cases:
        error = only_error(await api.graphql(query, None, token))
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": field}, (query, error)
        assert "NUL" in error["message"]
    assert await table_rows(pool, TABLES) == before


async def test_an_operation_name_that_is_not_text_is_bad_input_not_a_500(
    api: Api, team: Team, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    headers = {"content-type": "application/json", "authorization": f"Bearer {team.agent['token']}"}
    for name in ("\ud800", "\x00", "Op\udfff"):
        body = json.dumps({"query": "query Op { viewer { id } }", "operationName": name})
        response = await api.client.post("/graphql", content=body, headers=headers)
        assert response.status_code == 200, response.text
        error = only_error(response.json())
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "operationName"}
    no_crash_logged(caplog)


# -- over WebSockets -------------------------------------------------------------------------


async def test_websocket_operations_are_checked_and_coded_too(
    api: Api, team: Team, pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    """graphql-transport-ws runs queries and mutations as well as subscriptions: their
    errors used to reach the client without a code (an internal message included), and a
    syntax error logged a traceback and answered only "complete"."""
    caplog.set_level(logging.ERROR)
    url = api.base_url.replace("http", "ws") + "/graphql"
    before = await table_rows(pool, TABLES)
    cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
        (
            {"query": LOGIN, "variables": {"e": "a@b.example", "p": "\ud800"}},
            {"code": "BAD_USER_INPUT", "field": "password"},
        ),
        ({"query": "{ viewer { "}, {"code": "GRAPHQL_PARSE_FAILED"}),
        # HTTP checks the shape of a request before GraphQL sees it; a WebSocket did not:
        # each of these was INTERNAL_SERVER_ERROR or a crash of the operation.
        ({"query": None}, {"code": "BAD_USER_INPUT"}),
        ({"query": 5}, {"code": "BAD_USER_INPUT", "field": "query"}),
        (
            {"query": "{ viewer { id } }", "variables": "x"},
            {"code": "BAD_USER_INPUT", "field": "variables"},
        ),
        (
            {"query": "{ viewer { id } }", "operationName": 5},
            {"code": "BAD_USER_INPUT", "field": "operationName"},
        ),
        ({"query": "query A { viewer { id } }", "operationName": "B"}, {"code": "BAD_USER_INPUT"}),
        ({"query": "{ nope }"}, {"code": "GRAPHQL_VALIDATION_FAILED"}),
        ({"query": "{" + " viewer { id }" * 200 + "}"}, {"code": "GRAPHQL_VALIDATION_FAILED"}),
        (
            {
                "query": 'query($v: DateTime) { explainEligibility(prospectId: "x", at: $v) '
                "{ callable } }",
                "variables": {"v": "9999-12-31T23:59:59Z"},
            },
            {"code": "BAD_USER_INPUT", "field": "at"},
        ),
    ]
    async with websockets.connect(url, subprotocols=["graphql-transport-ws"]) as socket:
        init = {"token": team.agent["token"]}
        await socket.send(json.dumps({"type": "connection_init", "payload": init}))
        assert json.loads(await asyncio.wait_for(socket.recv(), 5))["type"] == "connection_ack"
        for number, (payload, extensions) in enumerate(cases):
            message = {"id": str(number), "type": "subscribe", "payload": payload}
            await socket.send(json.dumps(message))
            reply = json.loads(await asyncio.wait_for(socket.recv(), 5))
            errors = reply["payload"] if reply["type"] == "error" else reply["payload"]["errors"]
            assert [error["extensions"] for error in errors] == [extensions], (payload, reply)
            if reply["type"] == "next":
                complete = json.loads(await asyncio.wait_for(socket.recv(), 5))
                assert complete == {"id": str(number), "type": "complete"}
        # The socket is still open and working.
        await socket.send(
            json.dumps(
                {"id": "last", "type": "subscribe", "payload": {"query": "{ viewer { id } }"}}
            )
        )
        reply = json.loads(await asyncio.wait_for(socket.recv(), 5))
        assert reply["payload"]["data"]["viewer"]["id"] == team.agent["id"]
    assert await table_rows(pool, TABLES) == before
    no_crash_logged(caplog)
