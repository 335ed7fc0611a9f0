"""No request costs much before it is refused: documents over MAX_QUERY_BYTES are never
parsed, and documents with more than MAX_QUERY_FIELDS selections are never validated
(validation compares them pairwise)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import pytest
from helpers import Api, Team, table_rows

from graph import documents
from settings import Settings

TABLES = ("users", "sessions", "login_failures", "prospects", "call_logs", "active_calls")


def only_error(body: dict[str, Any]) -> dict[str, Any]:
    """The single error of a response whose data holds nothing."""
    errors = body.get("errors")
    assert errors, body
    assert len(errors) == 1, body
    assert not any((body.get("data") or {}).values()), body
    error: dict[str, Any] = errors[0]
    return error


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
