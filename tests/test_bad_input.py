"""Bad input gets its code and a clear message, writes nothing, and never answers 500."""

from __future__ import annotations

import base64
import logging
import uuid
from typing import Any

import asyncpg
import pytest
from helpers import Api, Team, add_prospect, only_error, start, table_rows

from settings import Settings

PROSPECT = "query($id: ID!) { prospect(id: $id) { id } }"
CAN_CALL = "query($id: ID!) { canCall(prospectId: $id) { allowed } }"
PAGE = """
query($first: Int, $after: String, $filter: ProspectFilter) {
  prospects(first: $first, after: $after, filter: $filter) {
    edges { cursor node { id } }
  }
}
"""
CREATE = """
mutation($input: CreateProspectInput!) { createProspect(input: $input) { id phone status } }
"""
UPDATE = """
mutation($id: ID!, $input: UpdateProspectInput!) {
  updateProspect(id: $id, input: $input) { id phone status }
}
"""
START = """
mutation($id: ID!, $phone: String, $from: String) {
  startCall(prospectId: $id, phoneNumber: $phone, fromNumber: $from) { activeCallId callLogId }
}
"""
END = """
mutation($id: ID!, $log: ID!, $outcome: String!, $duration: Int, $notes: String, $url: String) {
  endCall(prospectId: $id, callLogId: $log, outcome: $outcome, duration: $duration,
          notes: $notes, recordingUrl: $url) { id outcome duration ended: endedAt }
}
"""
ASSIGN = """
mutation($id: ID!, $agent: ID!) { assignLead(prospectId: $id, agentId: $agent) { id } }
"""
UNASSIGN = "mutation($id: ID!) { unassignLead(prospectId: $id) }"

MALFORMED_IDS = [
    "not-a-uuid",
    "",
    "12345",
    "6a520a20-048f-4139-a111-11111111111",  # one digit short
    "6a520a20-048f-4139-a111-11111111111g",
    "'; DROP TABLE prospects; --",
    "x" * 5000,
]

# The tables a request could write, to prove a refusal wrote nothing.
TABLES = (
    "users",
    "sessions",
    "prospects",
    "prospect_status_log",
    "call_logs",
    "active_calls",
    "lead_assignments",
)


async def snapshot(pool: asyncpg.Pool) -> dict[str, Any]:
    """Every row of the tables a request could write."""
    return await table_rows(pool, TABLES)


async def refused(
    api: Api, query: str, variables: dict[str, Any] | None, token: str
) -> dict[str, Any]:
    """The single error of a request that must fail; its data holds nothing."""
    body = await api.graphql(query, variables, token)
    error = only_error(body)
    assert not any((body.get("data") or {}).values()), body
    return error


async def assert_call_untouched(pool: asyncpg.Pool, started: dict[str, Any]) -> None:
    """The call is still active and its log is not ended: nothing half-written."""
    assert await pool.fetchval(
        "SELECT count(*) FROM active_calls WHERE id = $1", started["activeCallId"]
    )
    log = await pool.fetchrow(
        "SELECT ended_at, outcome, duration, notes, recording_url FROM call_logs WHERE id = $1",
        started["callLogId"],
    )
    assert dict(log) == {
        "ended_at": None,
        "outcome": None,
        "duration": None,
        "notes": None,
        "recording_url": None,
    }


def cursor_of(text: str) -> str:
    """A cursor carrying arbitrary text, as a client could forge one."""
    return base64.urlsafe_b64encode(text.encode()).decode()


# -- malformed IDs -------------------------------------------------------------------------


def malformed_id_cases(
    bad_id: str, good: str, call_log_id: str, team: Team
) -> list[tuple[str, dict[str, Any], str, str]]:
    """(query, variables, token, argument named in the error) for one malformed ID."""
    token, manager = team.agent["token"], team.manager["token"]
    cases: list[tuple[str, dict[str, Any], str, str]] = [
        (PROSPECT, {"id": bad_id}, token, "id"),
        (UPDATE, {"id": bad_id, "input": {"name": "Renamed"}}, token, "id"),
        (CAN_CALL, {"id": bad_id}, token, "prospectId"),
        (START, {"id": bad_id}, token, "prospectId"),
        (END, {"id": bad_id, "log": call_log_id, "outcome": "Connected"}, token, "prospectId"),
        (END, {"id": good, "log": bad_id, "outcome": "Connected"}, token, "callLogId"),
        (ASSIGN, {"id": bad_id, "agent": team.agent["id"]}, manager, "prospectId"),
        (ASSIGN, {"id": good, "agent": bad_id}, manager, "agentId"),
        (UNASSIGN, {"id": bad_id}, manager, "prospectId"),
    ]
    if bad_id:  # an empty assignedTo means no filter
        cases.append((PAGE, {"filter": {"assignedTo": bad_id}}, token, "assignedTo"))
    return cases


async def test_malformed_ids_are_bad_user_input_naming_the_argument(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    prospect = await add_prospect(api, team.agent["token"])
    started = await start(api, team.agent["token"], prospect["id"])
    before = await snapshot(pool)
    for bad_id in MALFORMED_IDS:
        for query, variables, who, field in malformed_id_cases(
            bad_id, prospect["id"], started["callLogId"], team
        ):
            error = await refused(api, query, variables, who)
            assert error["extensions"]["code"] == "BAD_USER_INPUT", (bad_id[:40], field, error)
            assert error["extensions"]["field"] == field, (bad_id[:40], error)
            assert "not a valid ID" in error["message"]
    assert await snapshot(pool) == before
    await assert_call_untouched(pool, started)


MALFORMED_CURSORS = [
    "garbage!",
    "abc",
    cursor_of("no separator"),
    cursor_of("a|b|c"),
    cursor_of("2020-01-01T00:00:00+00:00|not-a-uuid"),
    cursor_of("not a date|6a520a20-048f-4139-a111-111111111111"),
    # Valid ISO times that overflow once turned into UTC.
    cursor_of("0001-01-01T00:00:00+01:00|6a520a20-048f-4139-a111-111111111111"),
    cursor_of("9999-12-31T23:59:59-10:00|6a520a20-048f-4139-a111-111111111111"),
    base64.urlsafe_b64encode(b"\xff\xfe|\x00").decode(),
]


async def test_malformed_cursor_is_bad_user_input(api: Api, team: Team) -> None:
    await add_prospect(api, team.agent["token"])
    for after in MALFORMED_CURSORS:
        error = await refused(api, PAGE, {"after": after}, team.agent["token"])
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "after"}, after
        assert error["message"] == "after is not a valid cursor"


async def test_a_real_cursor_still_pages(api: Api, team: Team) -> None:
    token = team.agent["token"]
    for number in ("(212) 555-0101", "(212) 555-0102", "(212) 555-0103"):
        await add_prospect(api, token, number)
    first = (await api.data(PAGE, {"first": 2}, token))["prospects"]["edges"]
    rest = (await api.data(PAGE, {"first": 2, "after": first[-1]["cursor"]}, token))["prospects"]
    assert len(first) == 2
    assert len(rest["edges"]) == 1
    assert rest["edges"][0]["node"]["id"] not in {edge["node"]["id"] for edge in first}


# -- unknown records -----------------------------------------------------------------------


async def test_unknown_records_are_not_found_and_write_nothing(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    token, manager = team.agent["token"], team.manager["token"]
    prospect = await add_prospect(api, token)
    started = await start(api, token, prospect["id"])
    before = await snapshot(pool)
    unknown = str(uuid.uuid4())
    cases: list[tuple[str, dict[str, Any], str]] = [
        (PROSPECT, {"id": unknown}, token),
        (UPDATE, {"id": unknown, "input": {"status": "Qualified"}}, token),
        (CAN_CALL, {"id": unknown}, token),
        (START, {"id": unknown}, token),
        (END, {"id": unknown, "log": started["callLogId"], "outcome": "Connected"}, token),
        (END, {"id": prospect["id"], "log": unknown, "outcome": "Connected"}, token),
        (ASSIGN, {"id": unknown, "agent": team.agent["id"]}, manager),
        (ASSIGN, {"id": prospect["id"], "agent": unknown}, manager),
        (UNASSIGN, {"id": unknown}, manager),
    ]
    for query, variables, who in cases:
        error = await refused(api, query, variables, who)
        assert error["extensions"]["code"] == "NOT_FOUND", (query, error)
        assert "not found" in error["message"].lower()
    assert await snapshot(pool) == before
    await assert_call_untouched(pool, started)


async def test_a_call_log_of_another_prospect_is_not_found(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    token = team.agent["token"]
    first = await add_prospect(api, token, "(212) 555-0101")
    second = await add_prospect(api, token, "(212) 555-0102")
    started = await start(api, token, first["id"])
    variables = {"id": second["id"], "log": started["callLogId"], "outcome": "Connected"}
    error = await refused(api, END, variables, token)
    assert error["extensions"]["code"] == "NOT_FOUND"
    await assert_call_untouched(pool, started)


# -- phones --------------------------------------------------------------------------------

INVALID_PHONES = [
    "",
    "   ",
    "abc",
    "123",
    "555-0123",  # no area code
    "+1 (000) 000-0000",
    "+999 123 456 789",
    "2" * 65,
    "212\x00555\x000123",
]


async def test_invalid_phone_on_create_is_refused(api: Api, team: Team, pool: asyncpg.Pool) -> None:
    for phone in INVALID_PHONES:
        variables = {"input": {"name": "Pat", "phone": phone}}
        error = await refused(api, CREATE, variables, team.agent["token"])
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "phone"}, phone
        if "\x00" in phone:  # refused where input enters, before any phone parsing
            assert error["message"] == "phone must not contain NUL characters"
        else:
            assert error["message"] == "phone is not a valid phone number"
    assert await pool.fetchval("SELECT count(*) FROM prospects") == 0


async def test_invalid_phone_on_update_leaves_the_prospect_alone(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    prospect = await add_prospect(api, team.agent["token"])
    before = await snapshot(pool)
    for phone in INVALID_PHONES:
        variables = {"id": prospect["id"], "input": {"phone": phone, "name": "Renamed"}}
        error = await refused(api, UPDATE, variables, team.agent["token"])
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "phone"}, phone
    assert await snapshot(pool) == before


async def test_invalid_phone_on_start_call_starts_nothing(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    prospect = await add_prospect(api, team.agent["token"])
    for argument, field in (("phone", "phoneNumber"), ("from", "fromNumber")):
        for phone in ("abc", "123", "+1 (000) 000-0000", "9" * 70, " "):
            variables = {"id": prospect["id"], argument: phone}
            error = await refused(api, START, variables, team.agent["token"])
            assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": field}, phone
    assert await pool.fetchval("SELECT count(*) FROM call_logs") == 0
    assert await pool.fetchval("SELECT count(*) FROM active_calls") == 0


async def test_start_call_numbers_are_stored_in_e164(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    prospect = await add_prospect(api, team.agent["token"])
    variables = {"id": prospect["id"], "phone": "212.555.0199", "from": "+1 (646) 555-0100"}
    started = (await api.data(START, variables, team.agent["token"]))["startCall"]
    row = await pool.fetchrow(
        "SELECT phone_number, from_number FROM call_logs WHERE id = $1", started["callLogId"]
    )
    assert tuple(row) == ("+12125550199", "+16465550100")


async def test_same_phone_written_differently_is_a_conflict(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    token = team.agent["token"]
    first = await add_prospect(api, token, "(212) 555-0123")
    error = await refused(
        api, CREATE, {"input": {"name": "Twin", "phone": "+1 212-555-0123"}}, token
    )
    assert error["extensions"] == {"code": "CONFLICT", "field": "phone"}
    assert await pool.fetchval("SELECT array_agg(phone) FROM prospects") == ["+12125550123"]

    second = await add_prospect(api, token, "(212) 555-0124", name="Other")
    before = await snapshot(pool)
    variables = {"id": second["id"], "input": {"phone": "212.555.0123", "status": "Qualified"}}
    error = await refused(api, UPDATE, variables, token)
    assert error["extensions"] == {"code": "CONFLICT", "field": "phone"}
    assert await snapshot(pool) == before
    assert first["phone"] == "+12125550123"


# -- ending calls with bad values ----------------------------------------------------------


BAD_END_CALL_VALUES: list[tuple[dict[str, Any], str]] = [
    ({"duration": -1}, "duration"),
    ({"duration": 86401}, "duration"),
    ({"duration": -(2**31)}, "duration"),
    ({"notes": "n" * 10001}, "notes"),
    ({"url": "ftp://example.com/call.mp3"}, "recordingUrl"),
    ({"url": "javascript:alert(1)"}, "recordingUrl"),
    ({"url": "not a url"}, "recordingUrl"),
    ({"url": "https://example.com/" + "a" * 2048}, "recordingUrl"),
    ({"outcome": "Sold"}, "outcome"),
    ({"outcome": "connected"}, "outcome"),
    ({"outcome": ""}, "outcome"),
]


async def test_bad_end_call_values_leave_the_call_active(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    token = team.agent["token"]
    prospect = await add_prospect(api, token)
    started = await start(api, token, prospect["id"])
    before = await snapshot(pool)
    variables = {"id": prospect["id"], "log": started["callLogId"], "outcome": "Connected"}
    for changes, field in BAD_END_CALL_VALUES:
        error = await refused(api, END, {**variables, **changes}, token)
        assert error["extensions"]["code"] == "BAD_USER_INPUT", (changes, error)
        assert error["extensions"]["field"] == field, (changes, error)
    assert await snapshot(pool) == before
    await assert_call_untouched(pool, started)
    status = await pool.fetchval("SELECT status FROM prospects WHERE id = $1", prospect["id"])
    assert status == "New"


async def test_absurd_durations_are_bad_input_not_a_crash(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    token = team.agent["token"]
    prospect = await add_prospect(api, token)
    started = await start(api, token, prospect["id"])
    variables = {"id": prospect["id"], "log": started["callLogId"], "outcome": "Connected"}
    inline_end = END.replace(", $duration: Int", "")
    for duration in (10**9, 2**31 - 1, -(2**31)):
        # Fits GraphQL's 32-bit Int: the server's own range check answers.
        for query, values in (
            (END, {**variables, "duration": duration}),
            (inline_end.replace("duration: $duration", f"duration: {duration}"), variables),
        ):
            error = await refused(api, query, values, token)
            assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "duration"}
    for duration in (2**31, 10**30, -(2**31) - 1):
        # Beyond a 32-bit Int: refused before any resolver runs, still with a code.
        error = await refused(api, END, {**variables, "duration": duration}, token)
        assert error["extensions"] == {"code": "BAD_USER_INPUT"}, duration
        assert "non 32-bit signed integer" in error["message"]
        inline = inline_end.replace("duration: $duration", f"duration: {duration}")
        error = await refused(api, inline, variables, token)
        assert error["extensions"] == {"code": "GRAPHQL_VALIDATION_FAILED"}, duration
    await assert_call_untouched(pool, started)


async def test_boundary_values_are_accepted(api: Api, team: Team, pool: asyncpg.Pool) -> None:
    token = team.agent["token"]
    prospect = await add_prospect(api, token)
    started = await start(api, token, prospect["id"])
    variables = {
        "id": prospect["id"],
        "log": started["callLogId"],
        "outcome": "Voicemail",
        "duration": 86400,
        "notes": "n" * 10000,
        "url": "https://example.com/" + "a" * (2048 - len("https://example.com/")),
    }
    ended = (await api.data(END, variables, token))["endCall"]
    assert (ended["outcome"], ended["duration"]) == ("Voicemail", 86400)
    row = await pool.fetchrow(
        "SELECT length(notes) AS notes, length(recording_url) AS url FROM call_logs WHERE id = $1",
        started["callLogId"],
    )
    assert tuple(row) == (10000, 2048)
    assert await pool.fetchval("SELECT count(*) FROM active_calls") == 0


# -- statuses ------------------------------------------------------------------------------


async def test_unknown_status_is_refused_on_create(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    variables = {"input": {"name": "Pat", "phone": "(212) 555-0123", "status": "Hot"}}
    error = await refused(api, CREATE, variables, team.agent["token"])
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "status"}
    assert await pool.fetchval("SELECT count(*) FROM prospects") == 0


async def test_unknown_status_is_refused_on_update_and_logs_nothing(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    prospect = await add_prospect(api, team.agent["token"])
    before = await snapshot(pool)
    for status in ("Hot", "qualified", "", None):
        variables = {"id": prospect["id"], "input": {"status": status, "name": "Renamed"}}
        error = await refused(api, UPDATE, variables, team.agent["token"])
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "status"}, status
    assert await snapshot(pool) == before
    assert await pool.fetchval("SELECT count(*) FROM prospect_status_log") == 0


# -- page sizes ----------------------------------------------------------------------------


async def test_page_and_history_sizes_out_of_range(api: Api, team: Team) -> None:
    token = team.agent["token"]
    prospect = await add_prospect(api, token)
    for first in (-1, 101, 2**31 - 1):
        error = await refused(api, PAGE, {"first": first}, token)
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "first"}, first
    for history in ("callHistory", "statusHistory"):
        for first in (-1, 101, 100000):
            query = (
                f"query($id: ID!) {{ prospect(id: $id) {{ {history}(first: {first}) {{ id }} }} }}"
            )
            error = await refused(api, query, {"id": prospect["id"]}, token)
            assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "first"}
    # The edges of the range are fine.
    assert (await api.data(PAGE, {"first": 0}, token))["prospects"]["edges"] == []
    assert len((await api.data(PAGE, {"first": 100}, token))["prospects"]["edges"]) == 1


# -- GraphQL-level errors ------------------------------------------------------------------


BAD_VARIABLES: list[tuple[str, dict[str, Any]]] = [
    ("query($f: Int) { prospects(first: $f) { edges { cursor } } }", {"f": "ten"}),
    ("query($f: Int) { prospects(first: $f) { edges { cursor } } }", {"f": 1.5}),
    ("query($f: Int) { prospects(first: $f) { edges { cursor } } }", {"f": 2**31}),
    ("query($f: Int) { prospects(first: $f) { edges { cursor } } }", {"f": {"a": 1}}),
    ("query($f: Int!) { prospects(first: $f) { edges { cursor } } }", {}),
    ("query($f: Int!) { prospects(first: $f) { edges { cursor } } }", {"f": None}),
    (PROSPECT, {"id": {"nested": "object"}}),
    (PROSPECT, {"id": ["a", "list"]}),
    (PROSPECT, {"id": True}),
    (CREATE, {"input": {"name": "Pat", "phone": "2125550123", "bogus": 1}}),
    (CREATE, {"input": {"name": "Pat"}}),
    (CREATE, {"input": "a string"}),
    (START, {"id": str(uuid.uuid4()), "phone": 2125550123}),
    (PAGE, {"filter": {"status": ["New"]}}),
    (
        'mutation($d: DateTime) { assignLead(prospectId: "x", agentId: "y", '
        "expiresAt: $d) { id } }",
        {"d": "not a date"},
    ),
]


async def test_bad_variable_values_are_bad_user_input(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    before = await snapshot(pool)
    for query, variables in BAD_VARIABLES:
        error = await refused(api, query, variables, team.manager["token"])
        assert error["extensions"] == {"code": "BAD_USER_INPUT"}, (variables, error)
        assert error["message"].startswith("Variable '$"), error
    assert await snapshot(pool) == before


async def test_syntax_error_is_parse_failed(api: Api, team: Team) -> None:
    # Deeper than the parser's recursion allows (nested fields would meet the field limit
    # first: test_request_limits.py).
    nested = "{ viewer(x: " + "[" * 2000 + "]" * 2000 + ") { id } }"
    syntax_errors = [
        "{ viewer { email ",
        "{ viewer { email } } }",
        "query {",
        "mutation { login(",
        "}{",
        "{",
        nested,
    ]
    for query in syntax_errors:
        error = await refused(api, query, None, team.agent["token"])
        assert error["extensions"] == {"code": "GRAPHQL_PARSE_FAILED"}, query[:40]
        assert error["message"].startswith("Syntax Error")


INVALID_DOCUMENTS = [
    "{ viewer { passwordHash } }",
    "{ nope }",
    "{ prospects(bogus: 1) { edges { cursor } } }",
    '{ prospects(first: "ten") { edges { cursor } } }',
    "{ prospects }",
    "mutation { startCall { callLogId } }",
    "{ viewer { id(arg: 1) } }",
    "fragment a on Query { ...b } fragment b on Query { ...a } { ...a }",
]


async def test_invalid_document_is_validation_failed(api: Api, team: Team) -> None:
    for query in INVALID_DOCUMENTS:
        error = await refused(api, query, None, team.agent["token"])
        assert error["extensions"] == {"code": "GRAPHQL_VALIDATION_FAILED"}, (query, error)


def nested_history(levels: int, leaf: str = "id") -> str:
    """callHistory { prospect { callHistory { ... } } }, `levels` selections deep."""
    fields = ["callHistory" if level % 2 == 0 else "prospect" for level in range(levels)]
    text = leaf
    for name in reversed(fields):
        text = f"{name} {{ {text} }}"
    return text


def under_prospect(selection: str) -> str:
    """A query selecting `selection` on prospect($id)."""
    return "query($id: ID!) { prospect(id: $id) { " + selection + " } }"


async def test_depth_limit_refuses_without_executing(
    api: Api, team: Team, pool: asyncpg.Pool, settings: Settings
) -> None:
    token = team.agent["token"]
    prospect = await add_prospect(api, token)
    # prospect(id) is one level: max_depth - 1 levels below it run, one more is refused.
    allowed = under_prospect(nested_history(settings.max_query_depth - 1))
    assert (await api.data(allowed, {"id": prospect["id"]}, token))["prospect"] is not None
    too_deep = under_prospect(nested_history(settings.max_query_depth))
    error = await refused(api, too_deep, {"id": prospect["id"]}, token)
    assert error["extensions"] == {"code": "GRAPHQL_VALIDATION_FAILED"}
    assert f"exceeds maximum operation depth of {settings.max_query_depth}" in error["message"]

    # A mutation that is too deep is not run at all: no prospect is created.
    before = await snapshot(pool)
    mutation = (
        'mutation { createProspect(input: {name: "Deep", phone: "(212) 555-0199"}) { '
        + nested_history(settings.max_query_depth + 2)
        + " } }"
    )
    error = await refused(api, mutation, None, token)
    assert error["extensions"] == {"code": "GRAPHQL_VALIDATION_FAILED"}
    assert await snapshot(pool) == before

    # Fragments do not hide depth.
    fragment_query = (
        "query($id: ID!) { prospect(id: $id) { ...deep } } "
        f"fragment deep on Prospect {{ {nested_history(settings.max_query_depth + 2)} }}"
    )
    error = await refused(api, fragment_query, {"id": prospect["id"]}, token)
    assert error["extensions"] == {"code": "GRAPHQL_VALIDATION_FAILED"}


async def test_alias_limit_refuses_without_executing(
    api: Api, team: Team, pool: asyncpg.Pool, settings: Settings
) -> None:
    token = team.agent["token"]
    limit = settings.max_aliases
    at_limit = "{ " + " ".join(f"a{i}: viewer {{ id }}" for i in range(limit)) + " }"
    assert len(await api.data(at_limit, None, token)) == limit
    over = "{ " + " ".join(f"a{i}: viewer {{ id }}" for i in range(limit + 1)) + " }"
    error = await refused(api, over, None, token)
    assert error["extensions"] == {"code": "GRAPHQL_VALIDATION_FAILED"}
    assert f"Allowed: {limit}" in error["message"]

    before = await snapshot(pool)
    creates = " ".join(
        f'p{i}: createProspect(input: {{name: "P{i}", phone: "+1212555{i:04d}"}}) {{ id }}'
        for i in range(limit + 1)
    )
    error = await refused(api, "mutation { " + creates + " }", None, token)
    assert error["extensions"] == {"code": "GRAPHQL_VALIDATION_FAILED"}
    assert await snapshot(pool) == before


# -- the sweep -----------------------------------------------------------------------------


async def test_no_bad_input_ever_answers_500_or_internal_error(
    api: Api, team: Team, pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    """Every bad request above and a few nastier ones: a code each, never a masked crash."""
    token, manager = team.agent["token"], team.manager["token"]
    prospect = await add_prospect(api, token)
    started = await start(api, token, prospect["id"])
    pid, log = prospect["id"], started["callLogId"]
    end = {"id": pid, "log": log, "outcome": "Connected"}
    nul = "a\x00b"
    graphql_cases: list[tuple[str, dict[str, Any] | None, str | None]] = [
        *((PROSPECT, {"id": bad}, token) for bad in MALFORMED_IDS),
        (PROSPECT, {"id": str(uuid.uuid4())}, token),
        (CAN_CALL, {"id": str(uuid.uuid4())}, token),
        (CAN_CALL, {"id": nul}, token),
        *((CREATE, {"input": {"name": "Pat", "phone": phone}}, token) for phone in INVALID_PHONES),
        (CREATE, {"input": {"name": "Twin", "phone": "+1 212-555-0123"}}, token),
        (CREATE, {"input": {"name": nul, "phone": "(212) 555-0111"}}, token),
        (CREATE, {"input": {"name": "Pat", "phone": "(212) 555-0111", "email": nul}}, token),
        (CREATE, {"input": {"name": "Pat", "phone": "(212) 555-0111", "company": nul}}, token),
        (CREATE, {"input": {"name": "Pat", "phone": "(212) 555-0111", "status": nul}}, token),
        (CREATE, {"input": {"name": "x" * 201, "phone": "(212) 555-0111"}}, token),
        (CREATE, {"input": {"name": "Pat", "phone": "(212) 555-0111", "email": "no-at"}}, token),
        (UPDATE, {"id": pid, "input": {"email": "x" * 300 + "@example.com"}}, token),
        (UPDATE, {"id": pid, "input": {"name": None}}, token),
        (UPDATE, {"id": pid, "input": {"name": "   "}}, token),
        (START, {"id": pid, "phone": nul}, token),
        (START, {"id": pid}, token),  # already in a call
        (END, {**end, "duration": -1}, token),
        (END, {**end, "duration": 86401}, token),
        (END, {**end, "duration": 10**9}, token),
        (END, {**end, "notes": "n" * 10001}, token),
        (END, {**end, "notes": nul}, token),
        (END, {**end, "url": "ftp://x"}, token),
        (END, {**end, "url": "https://x/" + nul}, token),
        (END, {**end, "outcome": "Sold"}, token),
        (END, {**end, "outcome": nul}, token),
        (PAGE, {"first": -1}, token),
        (PAGE, {"first": 10**12}, token),
        (PAGE, {"after": "garbage"}, token),
        (PAGE, {"after": cursor_of(f"0001-01-01T00:00:00+01:00|{pid}")}, token),
        (PAGE, {"filter": {"search": nul}}, token),
        (PAGE, {"filter": {"search": "x" * 10000}}, token),
        (PAGE, {"filter": {"status": nul}}, token),
        (PAGE, {"filter": {"assignedTo": "nope"}}, token),
        (ASSIGN, {"id": pid, "agent": nul}, manager),
        (
            "mutation($id: ID!, $a: ID!, $e: DateTime) "
            "{ assignLead(prospectId: $id, agentId: $a, expiresAt: $e) { id } }",
            {"id": pid, "a": team.agent["id"], "e": "0001-01-01T00:00:00+01:00"},
            manager,
        ),
        (
            "mutation($id: ID!, $a: ID!, $e: DateTime) "
            "{ assignLead(prospectId: $id, agentId: $a, expiresAt: $e) { id } }",
            {"id": pid, "a": team.agent["id"], "e": "2000-01-01T00:00:00+00:00"},
            manager,
        ),
        (
            "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }",
            {"e": nul, "p": "whatever-password"},
            None,
        ),
        (
            "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }",
            {"e": "someone@example.com", "p": "p" * 10000},
            None,
        ),
        (
            "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }",
            {"i": {"email": "new@example.com", "password": "short", "role": "agent"}},
            team.admin["token"],
        ),
        (
            "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }",
            {"i": {"email": "new@example.com", "password": "é" * 40, "role": "agent"}},
            team.admin["token"],
        ),
        (
            "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }",
            {"i": {"email": nul, "password": "long enough", "role": "agent"}},
            team.admin["token"],
        ),
        (
            "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }",
            {"i": {"email": "new@example.com", "password": "long enough", "role": "root"}},
            team.admin["token"],
        ),
        ("{ viewer { email ", None, token),
        ("{ nope }", None, token),
        ("{ viewer" + " { viewer" * 3000 + " }" * 3001, None, token),
    ]
    before = await snapshot(pool)
    caplog.set_level(logging.ERROR)
    for query, variables, who in graphql_cases:
        body = await api.graphql(query, variables, who)
        assert body.get("errors"), (query, variables, body)
        codes = {error["extensions"]["code"] for error in body["errors"]}
        assert "INTERNAL_SERVER_ERROR" not in codes, (query[:80], variables, body)
        assert codes <= {
            "BAD_USER_INPUT",
            "NOT_FOUND",
            "CONFLICT",
            "ALREADY_IN_CALL",
            "UNAUTHENTICATED",
            "GRAPHQL_PARSE_FAILED",
            "GRAPHQL_VALIDATION_FAILED",
        }, (query[:80], variables, body)

    raw_bodies: list[bytes] = [
        b"not json",
        b"",
        b"[]",
        b"[1, 2]",
        b'{"query": 5}',
        b'{"query": "{ viewer { id } }", "variables": "x"}',
        b'{"query": "{ viewer { id } }", "operationName": 5}',
        b"\xff\xfe\x00",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"query": "subscription { activeCallEvents { type } }"}',
    ]
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    for raw in raw_bodies:
        response = await api.client.post("/graphql", content=raw, headers=headers)
        assert response.status_code < 500, (raw, response.status_code, response.text)
    response = await api.client.get("/graphql", params={"query": "{ nope"}, headers=headers)
    assert response.status_code < 500, response.text

    assert await snapshot(pool) == before
    await assert_call_untouched(pool, started)
    crashes = [
        record
        for record in caplog.records
        if record.levelno >= logging.ERROR
        and record.name in {"callfloor.graphql", "callfloor.rest", "uvicorn.error"}
    ]
    assert not crashes, [record.getMessage() for record in crashes]


@pytest.mark.parametrize(
    "raw", [b"\xff\xfe\x00", b"[" * 100_000 + b"]" * 100_000], ids=["not-utf8", "nested"]
)
async def test_undecodable_graphql_body_is_a_400_not_a_500(
    api: Api, team: Team, raw: bytes
) -> None:
    headers = {"authorization": f"Bearer {team.agent['token']}", "content-type": "application/json"}
    response = await api.client.post("/graphql", content=raw, headers=headers)
    assert response.status_code == 400, response.text
