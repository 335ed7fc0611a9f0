"""The contract: schema.graphql is current, and every named query prepares."""

from __future__ import annotations

import asyncpg
import pytest
from helpers import ROOT

from graph.schema import create_schema
from sql.queries import QUERIES, parse_queries


def test_committed_schema_is_current() -> None:
    committed = (ROOT / "schema.graphql").read_text()
    assert committed.strip() == create_schema().as_str().strip(), (
        "schema.graphql is stale: run `make schema` and commit it"
    )


@pytest.mark.parametrize("name", sorted(QUERIES))
async def test_named_query_prepares(pool: asyncpg.Pool, name: str) -> None:
    async with pool.acquire() as connection:
        await connection.prepare(QUERIES[name])


def test_a_name_defined_twice_is_an_error() -> None:
    with pytest.raises(ValueError, match="defined twice"):
        parse_queries("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n", "dup.sql")


def test_no_output_type_exposes_a_password() -> None:
    schema = create_schema()._schema
    for type_name, graphql_type in schema.type_map.items():
        fields = getattr(graphql_type, "fields", None)
        if type_name.startswith("__") or fields is None or type_name.endswith("Input"):
            continue
        for field_name in fields:
            assert "password" not in field_name.lower(), (type_name, field_name)
            assert "hash" not in field_name.lower(), (type_name, field_name)
