"""Compiled startCall and endCall answer exactly what graphql-core answers, and run once.

Two servers on one database, as in test_compiled_reads.py: the compiled one (the default)
and the reference (COMPILED_READS=0, plain Strawberry and graphql-core). A mutation
changes the data, so the same document cannot simply go to both; instead:

- a call started or ended through the compiled path is read back through the reference
  server, with the same selection, and must be the same object, value for value;
- the same document sent to the reference server on a twin prospect must answer the same
  shape (ids and times differ, nothing else);
- a refusal changes nothing, so it goes to both servers on the same data and must answer
  the same bytes; it falls back to graphql-core after its statement ran, and the data
  show it ran once;
- a connection lost mid-statement is answered as the view answers it and never re-run.

The compiled server's counters say which path answered, so a case meant for the compiled
path cannot pass by falling back.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
import httpx
import pytest
from helpers import (
    Api,
    Proxy,
    Team,
    add_prospect,
    add_user,
    assert_in_call,
    bearer,
    next_phone,
    running_server,
    wait_until,
    wait_until_locked_out,
)
from test_compiled_reads import ordered

from settings import Settings

ACTIVE_CALL_FIELDS = (
    "__typename id prospectId callerId callLogId phoneNumber startedAt leaseExpiresAt "
    "prospectName callerName"
)
CALL_LOG_FIELDS = (
    "__typename id prospectId callerId phoneNumber fromNumber startedAt endedAt outcome "
    "duration notes recordingUrl"
)

START_EVERYTHING = f"""
fragment Call on ActiveCall {{ {ACTIVE_CALL_FIELDS} }}
mutation Start($p: ID!, $withIds: Boolean = true) {{
  __typename
  started: startCall(prospectId: $p) {{
    __typename
    activeCallId @include(if: $withIds)
    callLogId
    again: callLogId
    activeCall {{ ...Call ... on ActiveCall {{ id }} }}
  }}
}}
"""
END_EVERYTHING = f"""
mutation End($p: ID!, $c: ID!, $o: String!, $d: Int, $n: String, $r: String,
             $at: DateTime, $skip: Boolean!) {{
  ended: endCall(prospectId: $p, callLogId: $c, outcome: $o, duration: $d, notes: $n,
                 recordingUrl: $r, callbackAt: $at) {{
    {CALL_LOG_FIELDS}
    outcomeAgain: outcome @skip(if: $skip)
  }}
}}
"""
START_LITERAL = 'mutation { startCall(prospectId: "%s") { callLogId activeCall { callerName } } }'
START_SMALL = "mutation($p: ID!) { startCall(prospectId: $p) { activeCallId callLogId } }"
END_SMALL = """
mutation($p: ID!, $c: ID!, $o: String!) {
  endCall(prospectId: $p, callLogId: $c, outcome: $o) { id outcome }
}
"""
ACTIVE_CALLS_READ = f"query {{ activeCalls {{ {ACTIVE_CALL_FIELDS} }} }}"
LAST_CALL_READ = (
    f"query($id: ID!) {{ prospect(id: $id) {{ callHistory(first: 1) {{ {CALL_LOG_FIELDS} }} }} }}"
)
CALLS_OF = "SELECT count(*) FROM call_logs WHERE prospect_id = $1"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
PHONE = re.compile(r"^\+\d{8,15}$")
DATETIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?\+00:00$")


@dataclass
class Servers:
    compiled: Api
    reference: Api
    team: Team

    @property
    def counters(self) -> Any:
        return self.compiled.app.state.compiled_reads

    @property
    def token(self) -> str:
        return str(self.team.agent["token"])


@pytest.fixture
async def servers(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[Servers]:
    async with (
        running_server(settings) as compiled,
        running_server(replace(settings, compiled_reads=False)) as reference,
    ):
        team = Team(
            admin=await add_user(pool, compiled, "admin@test.example", "admin"),
            manager=await add_user(pool, compiled, "manager@test.example", "manager"),
            agents=[
                await add_user(pool, compiled, "agent1@test.example", "agent"),
                await add_user(pool, compiled, "agent2@test.example", "agent"),
            ],
        )
        # A caller without a name: callerName falls back to the email.
        await pool.execute("UPDATE users SET name = '' WHERE email = 'agent1@test.example'")
        yield Servers(compiled, reference, team)


def shape(value: Any, seen: dict[str, str] | None = None) -> Any:
    """The answer with each id replaced by the order it first appears in, and each time
    by a mark, once it is known to be written as the server writes a DateTime."""
    seen = {} if seen is None else seen
    if isinstance(value, tuple):  # a key and its value (ordered() keeps objects so)
        return (value[0], shape(value[1], seen))
    if isinstance(value, list):
        return [shape(item, seen) for item in value]
    if isinstance(value, str) and UUID.match(value):
        return seen.setdefault(value, f"id{len(seen)}")
    if isinstance(value, str) and DATETIME.match(value):
        return "a time"
    if isinstance(value, str) and PHONE.match(value):
        return "a phone"  # each twin has its own
    return value


async def post(api: Api, query: str, variables: dict[str, Any], token: str) -> httpx.Response:
    return await api.client.post(
        "/graphql", json={"query": query, "variables": variables}, headers=bearer(token)
    )


async def both(
    servers: Servers, query: str, variables: dict[str, Any], token: str | None = None
) -> tuple[httpx.Response, httpx.Response]:
    """The same request to the compiled server, then to the reference one."""
    token = token or servers.token
    return (
        await post(servers.compiled, query, variables, token),
        await post(servers.reference, query, variables, token),
    )


async def test_a_call_started_and_ended_reads_back_the_same(
    servers: Servers, pool: asyncpg.Pool
) -> None:
    agent = servers.team.agent
    twins = [await add_prospect(servers.compiled, servers.token, next_phone()) for _ in range(2)]
    answered = servers.counters.answered

    # Started through the compiled path; the reference path starts the twin.
    variables = {"p": twins[0]["id"]}
    compiled = await post(servers.compiled, START_EVERYTHING, variables, servers.token)
    reference = await post(
        servers.reference, START_EVERYTHING, {"p": twins[1]["id"]}, agent["token"]
    )
    assert servers.counters.answered == answered + 1
    assert (compiled.status_code, compiled.headers["content-type"]) == (
        reference.status_code,
        reference.headers["content-type"],
    )
    assert shape(ordered(compiled.text)) == shape(ordered(reference.text))
    started = compiled.json()["data"]["started"]
    await assert_in_call(pool, started, twins[0]["id"], agent["id"])
    assert started["activeCall"]["phoneNumber"] == twins[0]["phone"]
    # The active call as graphql-core reads it from the table, value for value.
    board = (await servers.reference.data(ACTIVE_CALLS_READ, token=servers.token))["activeCalls"]
    mine = [call for call in board if call["callLogId"] == started["callLogId"]]
    assert mine == [{key: started["activeCall"][key] for key in mine[0]}]

    # Ended through the compiled path with every argument; the twin through the reference.
    ends = []
    for api, prospect, start in (
        (servers.compiled, twins[0], started),
        (servers.reference, twins[1], reference.json()["data"]["started"]),
    ):
        response = await post(
            api,
            END_EVERYTHING,
            {
                "p": prospect["id"],
                "c": start["callLogId"],
                "o": "Callback Requested",
                "d": 42,
                "n": 'said "call me later" \u2013 ok',
                "r": "https://rec.test/1",
                "at": "2099-01-02T03:04:05.5+00:00",
                "skip": False,
            },
            servers.token,
        )
        ends.append(response)
    assert servers.counters.answered == answered + 2
    assert shape(ordered(ends[0].text)) == shape(ordered(ends[1].text))
    ended = ends[0].json()["data"]["ended"]
    assert ended["outcome"] == ended["outcomeAgain"] == "Callback Requested"
    last = await servers.reference.data(LAST_CALL_READ, {"id": twins[0]["id"]}, servers.token)
    assert last["prospect"]["callHistory"] == [
        {key: ended[key] for key in last["prospect"]["callHistory"][0]}
    ]
    assert await pool.fetchval("SELECT count(*) FROM active_calls") == 0
    assert await pool.fetchval("SELECT count(*) FROM call_logs") == 2


async def test_literal_arguments_and_small_selections(servers: Servers, pool: asyncpg.Pool) -> None:
    """Arguments written into the document are checked once, when it is planned."""
    prospect = await add_prospect(servers.compiled, servers.token, next_phone())
    answered = servers.counters.answered
    data = await servers.compiled.data(START_LITERAL % prospect["id"], token=servers.token)
    assert data["startCall"]["activeCall"] == {"callerName": "agent1@test.example"}
    ended = await servers.compiled.data(
        END_SMALL,
        {"p": prospect["id"], "c": data["startCall"]["callLogId"], "o": "No Answer"},
        servers.token,
    )
    assert ended == {"endCall": {"id": data["startCall"]["callLogId"], "outcome": "No Answer"}}
    assert servers.counters.answered == answered + 2
    assert await pool.fetchval("SELECT status FROM prospects WHERE id = $1", prospect["id"]) == (
        "Attempted"
    )


async def test_refusals_answer_as_graphql_core_and_change_nothing(
    servers: Servers, pool: asyncpg.Pool
) -> None:
    """Every refusal of the rules and of the arguments: the same status, headers and
    JSON from both servers, on the same data; the data as they were."""
    team = servers.team
    busy = await add_prospect(servers.compiled, servers.token, next_phone())
    call = (await servers.compiled.data(START_SMALL, {"p": busy["id"]}, servers.token))["startCall"]
    idle = await add_prospect(servers.compiled, servers.token, next_phone())
    unknown = "00000000-0000-4000-8000-000000000000"
    end = {"p": busy["id"], "c": call["callLogId"], "o": "No Answer"}
    cases: list[tuple[str, str, dict[str, Any], str]] = [
        ("already in a call", START_SMALL, {"p": busy["id"]}, team.agents[1]["token"]),
        ("unknown prospect", START_SMALL, {"p": unknown}, servers.token),
        ("not an id", START_SMALL, {"p": "nope"}, servers.token),
        ("not an id, literal", START_LITERAL % "nope", {}, servers.token),
        ("another agent's call", END_SMALL, end, team.agents[1]["token"]),
        ("unknown outcome", END_SMALL, {**end, "o": "Maybe"}, servers.token),
        ("call not active", END_SMALL, {**end, "p": idle["id"]}, servers.token),
        ("unknown call", END_SMALL, {**end, "c": unknown}, servers.token),
        (
            "duration out of range",
            END_EVERYTHING,
            {**end, "d": -1, "skip": True},
            servers.token,
        ),
        (
            "callback in the past",
            END_EVERYTHING,
            {**end, "at": "2001-01-01T00:00:00Z", "skip": True},
            servers.token,
        ),
        ("no session", START_SMALL, {"p": idle["id"]}, "not-a-token"),
    ]
    before = await pool.fetch("SELECT * FROM call_logs ORDER BY id")
    answered = servers.counters.answered
    for name, query, variables, token in cases:
        compiled, reference = await both(servers, query, variables, token)
        assert compiled.status_code == reference.status_code, name
        assert compiled.headers["content-type"] == reference.headers["content-type"], name
        assert ordered(compiled.text) == ordered(reference.text), name
        assert compiled.json()["errors"][0]["extensions"]["code"], name
    assert servers.counters.answered == answered
    assert await pool.fetch("SELECT * FROM call_logs ORDER BY id") == before
    assert await pool.fetchval("SELECT count(*) FROM active_calls") == 1


async def test_what_the_compiler_does_not_know_goes_to_graphql_core(
    servers: Servers, pool: asyncpg.Pool
) -> None:
    """Nested objects read from the tables, a phone to normalise, two mutations in one
    document: graphql-core runs them, as before."""
    prospects = [
        await add_prospect(servers.compiled, servers.token, next_phone()) for _ in range(4)
    ]
    documents = [
        (
            "mutation($p: ID!) { startCall(prospectId: $p) { activeCall { prospect { name } } } }",
            {},
        ),
        (
            "mutation($p: ID!, $n: String) { startCall(prospectId: $p, phoneNumber: $n) "
            "{ callLogId } }",
            {"n": "+1 (212) 555-9999"},
        ),
        (
            "mutation($p: ID!) { a: startCall(prospectId: $p) { callLogId } "
            "b: startCall(prospectId: $p) { callLogId } }",
            {},
        ),
        ("mutation($p: ID!) { startCall(prospectId: $p) { callLogId } logout }", {}),
    ]
    passed_on = servers.counters.passed_on
    codes = []
    for (query, variables), prospect in zip(documents, prospects, strict=True):
        body = (
            await post(servers.compiled, query, {"p": prospect["id"], **variables}, servers.token)
        ).json()
        codes.append(body["errors"][0]["extensions"]["code"] if "errors" in body else "OK")
    assert codes == ["OK", "OK", "ALREADY_IN_CALL", "OK"]
    assert servers.counters.passed_on == passed_on + len(documents)
    # One call per document: the second startCall of the third was refused.
    assert await pool.fetchval("SELECT count(*) FROM call_logs") == len(documents)


async def test_a_lost_connection_is_answered_once_and_never_rerun(
    settings: Settings, pool: asyncpg.Pool, database_url: str
) -> None:
    """startCall waits on the prospect's row lock while the connection to PostgreSQL is
    cut: the client hears SERVICE_UNAVAILABLE, as from graphql-core; PostgreSQL, which
    never heard of the cut, starts the call once the lock is let go; and the server did not
    run the mutation a second time (that would have been refused ALREADY_IN_CALL, or with
    a different agent, started twice)."""
    answers = []
    for compiled in (True, False):
        proxy = Proxy(database_url)
        await proxy.start()
        try:
            config = replace(settings, database_url=proxy.url, compiled_reads=compiled)
            async with running_server(config) as api:
                agent = await add_user(pool, api, f"cut{compiled}@test.example", "agent")
                prospect = await add_prospect(api, agent["token"], next_phone())
                async with pool.acquire() as holder, holder.transaction():
                    await holder.execute(
                        "SELECT 1 FROM prospects WHERE id = $1 FOR UPDATE", prospect["id"]
                    )
                    request = asyncio.ensure_future(
                        post(api, START_SMALL, {"p": prospect["id"]}, agent["token"])
                    )
                    await wait_until_locked_out(pool, "start_call")
                    await proxy.cut()
                    response = await request
                answers.append(response)
                if compiled:
                    assert api.app.state.compiled_reads.answered >= 1
        finally:
            with contextlib.suppress(Exception):
                await proxy.cut()

        await wait_until(
            lambda id=prospect["id"]: pool.fetchval(CALLS_OF, id),
            10,
            "the orphaned statement did not finish",
        )
        await asyncio.sleep(0.5)
        assert (
            await pool.fetchval(
                "SELECT count(*) FROM call_logs WHERE prospect_id = $1", prospect["id"]
            )
            == 1
        )
    compiled_answer, reference_answer = answers
    assert compiled_answer.status_code == reference_answer.status_code
    assert ordered(compiled_answer.text) == ordered(reference_answer.text)
    assert compiled_answer.json()["errors"][0]["extensions"] == {"code": "SERVICE_UNAVAILABLE"}


async def test_racing_agents_start_each_prospect_once(servers: Servers, pool: asyncpg.Pool) -> None:
    """Both agents ask for each of 10 prospects at once, 10 rounds, through the compiled
    path: one call each, the other refused ALREADY_IN_CALL (answered by graphql-core)."""
    tokens = [agent["token"] for agent in servers.team.agents]
    for _ in range(10):
        prospects = [
            await add_prospect(servers.compiled, servers.token, next_phone()) for _ in range(10)
        ]
        responses = await asyncio.gather(
            *(
                post(servers.compiled, START_SMALL, {"p": prospect["id"]}, token)
                for prospect in prospects
                for token in tokens
            )
        )
        bodies = [response.json() for response in responses]
        for pair in zip(bodies[::2], bodies[1::2], strict=True):
            codes = sorted(
                body["errors"][0]["extensions"]["code"] if "errors" in body else "OK"
                for body in pair
            )
            assert codes == ["ALREADY_IN_CALL", "OK"], pair
        ids = [prospect["id"] for prospect in prospects]
        assert (
            await pool.fetchval(
                "SELECT count(*) FROM active_calls WHERE prospect_id = ANY($1::uuid[])", ids
            )
            == 10
        )
        await pool.execute("DELETE FROM active_calls")


PROSPECT_FIELDS = (
    "__typename id name phone email company status lastCall createdAt updatedAt timeZone "
    "timeZones priority"
)
NEXT_LEAD_EVERYTHING = f"""
mutation Next {{
  lead: nextLead {{
    __typename nothingCallable callLogId
    prospect {{ {PROSPECT_FIELDS} }}
    activeCall {{ {ACTIVE_CALL_FIELDS} }}
    heldBack {{ code prospects }}
  }}
}}
"""
PROSPECT_READ = f"query($id: ID!) {{ prospect(id: $id) {{ {PROSPECT_FIELDS} }} }}"


async def test_next_lead_hands_out_what_graphql_core_reads_back(
    servers: Servers, pool: asyncpg.Pool
) -> None:
    """A lead through the compiled path: the prospect and the active call as graphql-core
    reads them afterwards; a lead through the reference server answers the same shape;
    nothing callable falls back, and both servers say the same about what holds leads back."""
    for _ in range(2):
        await add_prospect(servers.compiled, servers.team.manager["token"], next_phone())
    await pool.execute("UPDATE prospects SET email = 'lead@mail.test', company = 'Initech'")
    answered = servers.counters.answered
    compiled = await post(servers.compiled, NEXT_LEAD_EVERYTHING, {}, servers.token)
    reference = await post(servers.reference, NEXT_LEAD_EVERYTHING, {}, servers.token)
    assert servers.counters.answered == answered + 1
    assert shape(ordered(compiled.text)) == shape(ordered(reference.text))
    lead = compiled.json()["data"]["lead"]
    assert (lead["nothingCallable"], lead["heldBack"]) == (False, [])
    read = await servers.reference.data(
        PROSPECT_READ, {"id": lead["prospect"]["id"]}, servers.token
    )
    assert lead["prospect"] == read["prospect"]
    board = (await servers.reference.data(ACTIVE_CALLS_READ, token=servers.token))["activeCalls"]
    assert lead["activeCall"] in board
    assert lead["activeCall"]["callLogId"] == lead["callLogId"]

    # Nothing left: the same answer from both, through graphql-core.
    compiled, reference = await both(servers, NEXT_LEAD_EVERYTHING, {})
    assert ordered(compiled.text) == ordered(reference.text)
    assert compiled.json()["data"]["lead"]["nothingCallable"] is True
    assert servers.counters.answered == answered + 1
    assert await pool.fetchval("SELECT count(*) FROM active_calls") == 2


async def test_racing_agents_never_share_a_lead(servers: Servers, pool: asyncpg.Pool) -> None:
    """Four agents ask for leads at once through the compiled path until none is left:
    every prospect handed out once."""
    agents = [
        *servers.team.agents,
        *[
            await add_user(pool, servers.compiled, f"more{n}@test.example", "agent")
            for n in range(2)
        ],
    ]
    prospects = [
        await add_prospect(servers.compiled, servers.team.manager["token"], next_phone())
        for _ in range(24)
    ]
    handed: list[str] = []
    query = "mutation { nextLead { nothingCallable callLogId prospect { id } } }"
    while True:
        bodies = await asyncio.gather(
            *(servers.compiled.data(query, token=agent["token"]) for agent in agents)
        )
        leads = [body["nextLead"] for body in bodies if not body["nextLead"]["nothingCallable"]]
        handed += [lead["prospect"]["id"] for lead in leads]
        if not leads:
            break
        await pool.execute("DELETE FROM active_calls")
    assert sorted(handed) == sorted(prospect["id"] for prospect in prospects)


HEARTBEAT = f"""
mutation($c: ID!) {{ heartbeatCall(callLogId: $c) {{ {ACTIVE_CALL_FIELDS} }} }}
"""


async def test_heartbeats_answer_as_graphql_core(servers: Servers, pool: asyncpg.Pool) -> None:
    """A heartbeat through each path: the same call, the lease pushed on, as graphql-core
    reads it back; another agent's call and a call not active refused alike by both."""
    prospect = await add_prospect(servers.compiled, servers.token, next_phone())
    call = (await servers.compiled.data(START_SMALL, {"p": prospect["id"]}, servers.token))[
        "startCall"
    ]
    await pool.execute("UPDATE active_calls SET lease_expires_at = now() + interval '1 second'")
    answered = servers.counters.answered
    compiled = await post(servers.compiled, HEARTBEAT, {"c": call["callLogId"]}, servers.token)
    assert servers.counters.answered == answered + 1
    beat = compiled.json()["data"]["heartbeatCall"]
    board = (await servers.reference.data(ACTIVE_CALLS_READ, token=servers.token))["activeCalls"]
    assert board == [beat]
    assert beat["leaseExpiresAt"] > beat["startedAt"]
    reference = await post(servers.reference, HEARTBEAT, {"c": call["callLogId"]}, servers.token)
    assert shape(ordered(compiled.text)) == shape(ordered(reference.text))
    for name, token, call_log in (
        ("another agent's call", servers.team.agents[1]["token"], call["callLogId"]),
        ("not active", servers.token, "00000000-0000-4000-8000-000000000000"),
        ("not an id", servers.token, "nope"),
    ):
        one, other = await both(servers, HEARTBEAT, {"c": call_log}, token)
        assert (one.status_code, ordered(one.text)) == (other.status_code, ordered(other.text)), (
            name
        )
        assert one.json()["errors"][0]["extensions"]["code"], name
    assert servers.counters.answered == answered + 1
