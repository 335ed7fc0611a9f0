"""Generated requests over every query and mutation, as an agent and as an admin, against a
real server, over HTTP (and every fourth over a WebSocket too): none may answer
INTERNAL_SERVER_ERROR, an error without a code or HTTP 500, or log an error.

Two generators, both hypothesis strategies:

- hypothesis-graphql's documents over the schema, valid ones and ones with one schema
  violation, their arguments written as literals (IDs drawn from real rows and junk,
  date-times from the edges of the range);
- edge values sent as variables to every argument of every field: huge and wrong-typed
  numbers, date-times out of range with offsets, unpaired surrogates, NULs, very long
  strings, malformed IDs, unknown enum values, nulls where values are required.

The examples are drawn first and sent after, in the test's event loop, where the server
runs. A fixed seed keeps CI's run the same; FUZZ_SEED=<n> draws other examples.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
import websockets
from graphql import (
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    StringValueNode,
    get_named_type,
    is_composite_type,
)
from helpers import Api, Team, add_prospect, bearer, start
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis_graphql import strategies as graphql_strategies

from graph.schema import create_schema

FUZZ_SEED = int(os.environ.get("FUZZ_SEED", "11"))
# Per role: documents hypothesis-graphql writes, and rounds of edge values over every field.
DOCUMENTS_PER_KIND = int(os.environ.get("FUZZ_DOCUMENTS", "30"))
EDGE_ROUNDS = int(os.environ.get("FUZZ_EDGE_ROUNDS", "3"))
# Fields left out: logout would end the session the rest of the run uses.
LEFT_OUT = {"logout"}

OUT_OF_RANGE_DATE_TIMES = [
    "9999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
    "9998-12-31T23:59:59-00:01",
]
DATE_TIMES = [
    *OUT_OF_RANGE_DATE_TIMES,
    "0002-01-01T00:00:00Z",
    "9998-12-31T23:59:59Z",
    "2026-01-01T00:00:00Z",
    "2031-06-15T12:30:00+05:30",
    "2026-02-30T00:00:00Z",
    "2026-01-01T00:00:00+25:00",
    "2026-01-01T24:00:00Z",
    "2026-01-01T00:00:00",
    "2026-01-01",
    "99999-01-01T00:00:00Z",
    "-2026-01-01T00:00:00Z",
    "2026-01-01T00:00:00.123456789Z",
    "not a date",
    "",
    "\x00",
    "\ud800",
]
TEXTS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",
    "a\udfffb",
    "\ud83d",
    "\U0001f4a5",
    "\u202e",
    "x" * 100_000,
    "é" * 30_000,
    "'; DROP TABLE prospects; --",
    "null",
    "-1",
    "1e999",
    "NaN",
    "agent1@test.example",
    "+12125550123",
    "(212) 555-0123",
    "America/New_York",
    "UTC",
    "Mars/Olympus_Mons",
    "Connected",
    "New",
    "Qualified",
    "https://example.com/call.mp3",
    "javascript:alert(1)",
]
JUNK_IDS = ["", "not-a-uuid", "\x00", "\ud800", "0" * 36, "x" * 5000, str(uuid.UUID(int=0))]
INTS = [0, 1, -1, 2**31 - 1, -(2**31), 2**31, -(2**31) - 1, 10**30, -(10**30), 2**63]
WRONG_TYPES = [True, 1.5, "1", [], {}, ["a"], {"a": 1}]


def string_node(value: str) -> StringValueNode:
    """A GraphQL string literal."""
    return StringValueNode(value=value)


def draw(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """count examples of a strategy (fewer if it has fewer to give), from FUZZ_SEED."""
    drawn: list[Any] = []

    @seed(FUZZ_SEED)
    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(example: Any) -> None:
        drawn.append(example)

    collect()
    return drawn


# -- edge values, as variables -------------------------------------------------------------


def edge_values(type_: GraphQLInputType, ids: list[str]) -> st.SearchStrategy[Any]:
    """Values at and past the edges of a GraphQL input type, nulls and wrong types too."""
    if isinstance(type_, GraphQLNonNull):
        return edge_values(type_.of_type, ids)  # a null is among them: refused, not required
    if isinstance(type_, GraphQLList):
        base: st.SearchStrategy[Any] = st.one_of(
            st.lists(edge_values(type_.of_type, ids), max_size=3), edge_values(type_.of_type, ids)
        )
    elif isinstance(type_, GraphQLInputObjectType):
        fields = type_.fields
        base = st.fixed_dictionaries(
            {name: edge_values(f.type, ids) for name, f in fields.items() if is_required(f.type)},
            optional={
                **{
                    name: edge_values(f.type, ids)
                    for name, f in fields.items()
                    if not is_required(f.type)
                },
                "notAField": st.sampled_from(TEXTS),
            },
        )
    elif isinstance(type_, GraphQLEnumType):
        base = st.sampled_from([*type_.values, "NOT_A_VALUE", "\x00", "\ud800", 7])
    elif isinstance(type_, GraphQLScalarType):
        base = scalar_values(type_.name, ids)
    else:  # pragma: no cover - every input type is one of the above
        raise TypeError(type_)
    # Mostly values of the right type, so that requests reach the resolvers and the
    # database; now and then a null or a value of the wrong type.
    return st.integers(0, 9).flatmap(
        lambda n: base if n < 8 else st.none() if n == 8 else st.sampled_from(WRONG_TYPES)
    )


def is_required(type_: GraphQLInputType) -> bool:
    """Whether a field or argument must be given."""
    return isinstance(type_, GraphQLNonNull)


def scalar_values(name: str, ids: list[str]) -> st.SearchStrategy[Any]:
    """Edge values of one scalar."""
    texts = st.one_of(
        st.sampled_from(TEXTS),
        st.text(max_size=20),
        st.builds(
            lambda head, bad, tail: head + bad + tail,
            st.text(max_size=8),
            st.sampled_from(["\x00", "\ud800", "\udfff", "\udbff"]),
            st.text(max_size=8),
        ),
    )
    strategies: dict[str, st.SearchStrategy[Any]] = {
        "String": texts,
        "ID": st.one_of(st.sampled_from(ids + JUNK_IDS), texts),
        "Int": st.one_of(st.sampled_from(INTS), st.integers()),
        "Float": st.one_of(
            st.floats(allow_nan=False, allow_infinity=False),
            st.sampled_from([1e308, -1e308, 5e-324]),
        ),
        "Boolean": st.booleans(),
        "DateTime": st.sampled_from(DATE_TIMES),
    }
    return strategies.get(name, st.one_of(texts, st.sampled_from(INTS)))


def variable_document(operation: str, name: str, field: GraphQLField) -> str:
    """A document passing each argument of a root field as a variable."""
    arguments = list(field.args.items())
    header = ", ".join(f"$a{i}: {argument.type}" for i, (_, argument) in enumerate(arguments))
    passed = ", ".join(f"{arg}: $a{i}" for i, (arg, _) in enumerate(arguments))
    selection = " { __typename }" if is_composite_type(get_named_type(field.type)) else ""
    return (
        f"{operation}{f'({header})' if header else ''}"
        f" {{ {name}{f'({passed})' if passed else ''}{selection} }}"
    )


@dataclass
class Request:
    """A generated request."""

    query: str
    variables: dict[str, Any]


def edge_requests(schema: GraphQLSchema, ids: list[str]) -> list[Request]:
    """Rounds of edge values as variables, to every argument of every query and mutation."""
    requests = []
    roots: list[tuple[str, GraphQLObjectType | None]] = [
        ("query", schema.query_type),
        ("mutation", schema.mutation_type),
    ]
    for operation, root in roots:
        assert root is not None
        for name, field in root.fields.items():
            if name in LEFT_OUT or not field.args:
                continue
            document = variable_document(operation, name, field)
            variables = st.fixed_dictionaries(
                {f"a{i}": edge_values(a.type, ids) for i, a in enumerate(field.args.values())}
            )
            requests += [Request(document, values) for values in draw(variables, EDGE_ROUNDS)]
    return requests


# -- hypothesis-graphql's documents, with literals ----------------------------------------


def schema_documents(schema: GraphQLSchema, ids: list[str]) -> list[Request]:
    """Queries and mutations over the whole schema, valid and with one violation each."""
    custom_scalars = {
        "ID": st.sampled_from(ids + JUNK_IDS[:-2]).map(string_node),
        "DateTime": st.sampled_from(DATE_TIMES[:-1]).map(string_node),
        "BigInt": st.sampled_from(INTS).map(lambda value: string_node(str(value))),
    }
    mutations = [name for name in (schema.mutation_type or GraphQLObjectType("M", {})).fields]
    requests = []
    for mode in (graphql_strategies.Mode.POSITIVE, graphql_strategies.Mode.NEGATIVE):
        for strategy in (
            graphql_strategies.queries(schema, custom_scalars=custom_scalars, mode=mode),
            graphql_strategies.mutations(
                schema,
                fields=[name for name in mutations if name not in LEFT_OUT],
                custom_scalars=custom_scalars,
                mode=mode,
            ),
        ):
            requests += [Request(query, {}) for query in draw(strategy, DOCUMENTS_PER_KIND)]
    return requests


# -- the run -------------------------------------------------------------------------------

# Every how many requests one is also sent over graphql-transport-ws, which runs queries
# and mutations as well as subscriptions.
OVER_WEBSOCKET_EVERY = 4


async def send(api: Api, request: Request, token: str) -> tuple[int, dict[str, Any] | None]:
    """POST one generated request; the status and the JSON body (None if not JSON)."""
    body = json.dumps({"query": request.query, "variables": request.variables})
    response = await api.client.post(
        "/graphql", content=body, headers={"content-type": "application/json", **bearer(token)}
    )
    try:
        answer: dict[str, Any] = response.json()
    except ValueError:
        return response.status_code, None
    return response.status_code, answer


class Socket:
    """One graphql-transport-ws connection, signed in, sending one operation at a time."""

    def __init__(self, api: Api, token: str) -> None:
        self.url = api.base_url.replace("http", "ws") + "/graphql"
        self.token = token
        self.socket: Any = None
        self.operations = 0

    async def __aenter__(self) -> Socket:
        self.socket = await websockets.connect(self.url, subprotocols=["graphql-transport-ws"])
        await self.socket.send(
            json.dumps({"type": "connection_init", "payload": {"token": self.token}})
        )
        assert (
            json.loads(await asyncio.wait_for(self.socket.recv(), 10))["type"] == "connection_ack"
        )
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.socket.close()

    async def send(self, request: Request) -> list[dict[str, Any]]:
        """The errors the operation ended with (none when it completed cleanly)."""
        self.operations += 1
        key = str(self.operations)
        payload = {"query": request.query, "variables": request.variables}
        await self.socket.send(json.dumps({"id": key, "type": "subscribe", "payload": payload}))
        errors: list[dict[str, Any]] = []
        while True:
            message = json.loads(await asyncio.wait_for(self.socket.recv(), 30))
            assert message.get("id") == key, message
            if message["type"] == "error":
                return [*errors, *message["payload"]]
            if message["type"] == "complete":
                return errors
            errors += message["payload"].get("errors") or []


def problem_with(status: int, answer: dict[str, Any] | None) -> str | None:
    """What is wrong with an answer, or None: a 5xx, an error without a code, a crash."""
    if status >= 500:
        return f"HTTP {status}"
    errors = (answer or {}).get("errors") or []
    codes = [(error.get("extensions") or {}).get("code") for error in errors]
    if None in codes:
        return f"an error without a code: {errors}"
    if "INTERNAL_SERVER_ERROR" in codes:
        return "INTERNAL_SERVER_ERROR"
    return None


async def test_generated_requests_never_crash_the_server(
    api: Api, team: Team, pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    agent, admin = team.agent, team.admin
    prospects = [await add_prospect(api, agent["token"], f"(212) 555-01{n:02d}") for n in range(3)]
    call = await start(api, agent["token"], prospects[0]["id"])
    ids = [p["id"] for p in prospects] + [call["callLogId"], call["activeCallId"]]
    ids += [user["id"] for user in (admin, team.manager, *team.agents)]

    schema = create_schema()._schema
    began = time.monotonic()
    requests = edge_requests(schema, ids) + schema_documents(schema, ids)
    drawn = time.monotonic()
    problems = []
    for who in (agent, admin):
        async with Socket(api, who["token"]) as socket:
            for number, request in enumerate(requests):
                status, answer = await send(api, request, who["token"])
                problem = problem_with(status, answer)
                if problem is None and number % OVER_WEBSOCKET_EVERY == 0:
                    problem = problem_with(200, {"errors": await socket.send(request)})
                    problem = problem and f"over a WebSocket: {problem}"
                if problem is not None:
                    problems.append((problem, who["role"], request.query[:300], request.variables))
    sent = time.monotonic()
    print(  # shown with -s or on failure: how long the fuzzing takes
        f"fuzz: {2 * len(requests)} requests over HTTP, {2 * socket.operations} over"
        f" WebSockets, drawn in {drawn - began:.1f} s, sent in {sent - drawn:.1f} s"
        f" (seed {FUZZ_SEED})"
    )
    assert not problems, f"{len(problems)} bad answers, e.g. {problems[:3]}"
    crashes = [
        record.getMessage()
        for record in caplog.records
        if record.name.startswith(("callfloor", "strawberry")) or record.name == "uvicorn.error"
    ]
    assert not crashes, crashes[:3]

    # The database still holds its rules: each active call has its open call log.
    orphans = await pool.fetchval(
        "SELECT count(*) FROM active_calls a LEFT JOIN call_logs c ON c.id = a.call_log_id"
        " WHERE c.id IS NULL OR c.ended_at IS NOT NULL OR c.caller_id <> a.caller_id"
        " OR c.prospect_id <> a.prospect_id"
    )
    assert orphans == 0
    # And both roles are still signed in and served.
    for who in (agent, admin):
        assert (await api.data("{ viewer { id } }", token=who["token"]))["viewer"]["id"] == who[
            "id"
        ]
