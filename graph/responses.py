"""GraphQL over HTTP: the media type of a response and its status.

A client that accepts `application/graphql-response+json` gets it, and a request that
never ran (a document that does not parse or validate, variables that do not coerce)
answers 400 without a `data` entry, as the GraphQL-over-HTTP specification asks. A client
that asks for `application/json`, or says nothing, gets what it always got: 200 with the
errors in the body.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
JSON = "application/json"


def _quality(parameters: list[str]) -> float:
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "q":
            try:
                return min(max(float(value.strip()), 0.0), 1.0)
            except ValueError:
                return 0.0
    return 1.0


def prefers_graphql_response(accept: str | None) -> bool:
    """Whether an Accept header asks for application/graphql-response+json at least as
    much as for application/json (wildcards alone keep application/json, for old clients)."""
    if not accept:
        return False
    wanted = {GRAPHQL_RESPONSE_JSON: 0.0, JSON: 0.0}
    for media_range in accept.split(","):
        media_type, *parameters = media_range.split(";")
        media_type = media_type.strip().lower()
        if media_type in wanted:
            wanted[media_type] = max(wanted[media_type], _quality(parameters))
    return wanted[GRAPHQL_RESPONSE_JSON] > 0 and wanted[GRAPHQL_RESPONSE_JSON] >= wanted[JSON]


def is_request_error(response: Mapping[str, Any]) -> bool:
    """Whether a response reports a request that never executed: no data, and errors
    that belong to no field (a field's error always has a path)."""
    errors = response.get("errors") or []
    return (
        response.get("data") is None
        and bool(errors)
        and all(isinstance(error, Mapping) and error.get("path") is None for error in errors)
    )
