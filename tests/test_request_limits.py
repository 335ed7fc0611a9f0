"""No request costs much before it is refused: bodies over MAX_REQUEST_BYTES are answered
413 unread, documents over MAX_QUERY_BYTES are never parsed, and documents with more than
MAX_QUERY_FIELDS selections are never validated (validation compares them pairwise)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import asyncpg
import pytest
from helpers import (
    Api,
    Team,
    add_prospect,
    bearer,
    only_error,
    running_server,
    table_rows,
)

from graph import documents
from settings import Settings

TABLES = ("users", "sessions", "login_failures", "prospects", "call_logs", "active_calls")
TWELVE_MB = 12 * 1024 * 1024


class Calls:
    """How often a function ran."""

    def __init__(self) -> None:
        self.count = 0

    def counting(self, function: Callable[..., Any]) -> Callable[..., Any]:
        """function, counting its calls into self."""

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return function(*args, **kwargs)

        return counted


@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch) -> Iterator[Calls]:
    """Counts the server's runs of graphql-core's validation (the server runs in this
    process); the cache of validated documents is emptied first."""
    calls = Calls()
    documents.validate_document.cache_clear()
    monkeypatch.setattr(documents, "validate", calls.counting(documents.validate))
    yield calls
    documents.validate_document.cache_clear()


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> Iterator[Calls]:
    """Counts the server's parses of a document; the cache of parsed documents is emptied."""
    calls = Calls()
    documents.parse_document.cache_clear()
    parse = documents._FieldCountingParser.parse_document
    monkeypatch.setattr(documents._FieldCountingParser, "parse_document", calls.counting(parse))
    yield calls
    documents.parse_document.cache_clear()


# -- request bodies ------------------------------------------------------------------------


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of one HTTP/1.1 response (with a Content-Length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    length = int({key.lower(): value for key, value in headers.items()}["content-length"])
    return status, json.loads(await reader.readexactly(length))


async def send_partly(api: Api, path: str, head: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """Send a request head and only part of its body, and read the answer: one that comes
    proves the server refused the body without reading it whole (the rest never comes)."""
    host, port = api.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{head}\r\n".encode() + body)
        await writer.drain()
        return await asyncio.wait_for(read_response(reader), 10)
    finally:
        writer.close()


async def test_a_body_over_the_cap_is_refused_413_without_being_read(
    api: Api, team: Team, pool: asyncpg.Pool, settings: Settings
) -> None:
    """A 12 MB variable from an anonymous client used to be read and parsed whole."""
    prospect = await add_prospect(api, team.agent["token"])
    before = await table_rows(pool, TABLES)
    cap = settings.max_request_bytes
    huge = b'{"query": "{ viewer { id } }", "variables": {"x": "' + b"x" * TWELVE_MB + b'"}}'
    paths = {
        "/graphql": {},
        "/api/auth/login": {},
        f"/api/prospects/{prospect['id']}/start-call": bearer(team.agent["token"]),
    }
    for path, headers in paths.items():
        response = await api.client.post(
            path, content=huge, headers={"content-type": "application/json", **headers}
        )
        assert response.status_code == 413, (path, response.text)
        body = response.json()
        code = body["errors"][0]["extensions"]["code"] if path == "/graphql" else body["code"]
        assert code == "REQUEST_TOO_LARGE"

        # Declared too long: refused before a byte of the body is read.
        status, body = await send_partly(
            api,
            path,
            f"Content-Type: application/json\r\nContent-Length: {TWELVE_MB}\r\n",
            b'{"query": "',
        )
        assert status == 413, (path, body)
        # Chunked, so of unknown length: refused once past the cap, the rest never sent.
        chunk = b"x" * 65536
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(cap // 65536 + 2))
        status, body = await send_partly(
            api, path, "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n", chunks
        )
        assert status == 413, (path, body)
    assert await table_rows(pool, TABLES) == before
    # The server is fine afterwards.
    assert (await api.data("{ viewer { id } }", token=team.agent["token"]))["viewer"]


async def test_a_body_at_the_cap_is_served(settings: Settings, pool: asyncpg.Pool) -> None:
    async with running_server(replace(settings, max_request_bytes=4096)) as api:
        query = "{ dispositions { name } }"
        envelope = json.dumps({"query": query, "variables": {"pad": ""}})
        padding = "x" * (4096 - len(envelope))
        at_cap = json.dumps({"query": query, "variables": {"pad": padding}}).encode()
        assert len(at_cap) == 4096
        headers = {"content-type": "application/json"}
        over = await api.client.post("/graphql", content=at_cap + b" ", headers=headers)
        assert over.status_code == 413, over.text
        # Anonymous, so refused, but by GraphQL: the body got through whole.
        served = await api.client.post("/graphql", content=at_cap, headers=headers)
        assert served.status_code == 200, served.text
        assert only_error(served.json())["extensions"]["code"] == "UNAUTHENTICATED"
    assert await pool.fetchval("SELECT count(*) FROM sessions") == 0


# -- documents -----------------------------------------------------------------------------


def padded(query: str, size: int, filler: str = "x") -> str:
    """query after a comment that makes the document exactly size bytes of UTF-8."""
    room = size - len(query.encode()) - len("#\n")
    assert room % len(filler.encode()) == 0
    return "#" + filler * (room // len(filler.encode())) + "\n" + query


async def test_a_document_over_max_query_bytes_is_never_parsed(
    api: Api, team: Team, settings: Settings, parses: Calls, validations: Calls
) -> None:
    """Comments and whitespace were free under the token limit: a 1 MB comment executed."""
    token = team.agent["token"]
    limit = settings.max_query_bytes
    query = "{ viewer { id } }"
    over = [
        "#" + "x" * 1_000_000 + "\n" + query,
        padded(query, limit + 1),
        query + " " * limit,
        padded(query, limit + 1, "é"),  # bytes count, not characters
    ]
    for document in over:
        for who in (token, None):
            error = only_error(await api.graphql(document, None, who))
            assert error["extensions"] == {"code": "GRAPHQL_VALIDATION_FAILED"}
            assert error["message"] == f"The document is larger than {limit} bytes"
    assert (parses.count, validations.count) == (0, 0)
    at_limit = padded(query, limit)
    assert (await api.data(at_limit, None, token))["viewer"]["id"] == team.agent["id"]
    assert (parses.count, validations.count) == (1, 1)


def repeated(selection: str, times: int) -> str:
    """A query selecting the same thing `times` times."""
    return "{ " + " ".join([selection] * times) + " }"


async def test_a_document_with_too_many_fields_is_never_validated(
    api: Api, team: Team, pool: asyncpg.Pool, settings: Settings, validations: Calls
) -> None:
    """1,000 repeated `dispositions { name }` took 1.3-1.6 s of CPU in validation."""
    token = team.agent["token"]
    limit = settings.max_query_fields
    before = await table_rows(pool, TABLES)
    fragments = "fragment f on Query { dispositions { name } } "
    over = [
        repeated("dispositions { name }", 1000),
        repeated("dispositions { name }", limit // 2 + 1),
        "{ " + " ".join(f"a{i}: viewer {{ id }}" for i in range(limit)) + " }",
        fragments + repeated("...f", limit),
        "query { " + " ".join(["... on Query { viewer { id } }"] * (limit // 2)) + " }",
        'mutation { login(email: "a@b.example", password: "not it") { token '
        + " ".join(["user { id }"] * limit)
        + " } }",
    ]
    for document in over:
        for who in (token, None):  # anonymous or not
            error = only_error(await api.graphql(document, None, who))
            assert error["extensions"] == {"code": "GRAPHQL_VALIDATION_FAILED"}, error
            assert error["message"] == f"The document has more than {limit} fields"
    assert validations.count == 0
    assert await table_rows(pool, TABLES) == before
    at_limit = repeated("dispositions { name }", limit // 2)
    data = await api.data(at_limit, None, token)
    assert data["dispositions"]
    assert validations.count == 1
