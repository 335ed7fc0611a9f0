"""Schema extensions: error codes and masking, and the logging of unexpected errors."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import asyncpg
from graphql import DocumentNode, GraphQLError
from strawberry.exceptions import MissingQueryError
from strawberry.extensions import SchemaExtension
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types.execution import StreamExecutionResult

from graph.documents import input_field_of
from resolvers.errors import DomainError

log = logging.getLogger("callfloor.graphql")

INTERNAL_MESSAGE = "Internal server error"
UNAVAILABLE_MESSAGE = "The database is unavailable; try again shortly"

# Losing the database is expected from time to time: the client hears so, with a code.
# InternalClientError is how asyncpg reports a connection whose server went away mid-use
# ("cannot switch to state 12; another operation is in progress" on a restart): the pool
# drops that connection, and the same request succeeds once retried.
_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    TimeoutError,
)


# SQLSTATE classes of a server that is going away or refusing work: connection
# exceptions, operator intervention (shutdown, restart), insufficient resources.
_UNAVAILABLE_SQLSTATE_CLASSES = ("08", "57", "53")


# Strawberry's refusals of a request it cannot run: no query, no operation of that name, an
# operation type the transport does not take. HTTP answers them 400 itself; over a
# WebSocket they arrive here as errors of the operation.
_UNRUNNABLE_REQUESTS = (MissingQueryError, CannotGetOperationTypeError, InvalidOperationTypeError)


def is_database_unavailable(error: BaseException) -> bool:
    """Whether an error means the database cannot be reached right now."""
    if isinstance(error, asyncpg.PostgresError):
        return (error.sqlstate or "")[:2] in _UNAVAILABLE_SQLSTATE_CLASSES
    return isinstance(error, _UNAVAILABLE_ERRORS)


def domain_error_in(error: BaseException | None) -> DomainError | None:
    """The DomainError an error wraps, however deep (a scalar's check, under graphql-core's
    errors about the variable or literal it refused), or None."""
    while error is not None and not isinstance(error, DomainError):
        error = error.original_error if isinstance(error, GraphQLError) else None
    return error


def classify(error: GraphQLError) -> tuple[str, str | None, dict[str, Any]]:
    """(code, replacement message or None to keep it, extra extensions) for an error."""
    original = error.original_error
    # Checked before original_error: a bad variable value wraps the scalar's own GraphQLError.
    if error.path is None and error.message.startswith("Variable"):
        domain = domain_error_in(error)
        return "BAD_USER_INPUT", None, dict(domain.extensions) if domain else {}
    if original is None:
        if error.message.startswith("Syntax Error"):
            return "GRAPHQL_PARSE_FAILED", None, {}
        return "GRAPHQL_VALIDATION_FAILED", None, {}
    if isinstance(original, DomainError):
        return original.code, None, original.extensions
    if isinstance(original, _UNRUNNABLE_REQUESTS):
        return "BAD_USER_INPUT", None, {}
    if isinstance(original, GraphQLError):
        return classify(original)
    if is_database_unavailable(original):
        return "SERVICE_UNAVAILABLE", UNAVAILABLE_MESSAGE, {}
    return "INTERNAL_SERVER_ERROR", INTERNAL_MESSAGE, {}


def is_expected(error: GraphQLError) -> bool:
    """Whether an error is the client's business rather than a bug to log."""
    code = (error.extensions or {}).get("code") or classify(error)[0]
    return bool(code != "INTERNAL_SERVER_ERROR")


def present_error(error: GraphQLError, document: DocumentNode | None = None) -> GraphQLError:
    """The error as the client sees it: a code always, internals never (idempotent).

    With the document, a value a scalar refused (a date-time out of range) is named in
    extensions.field by the argument or input field it was given to.
    """
    if error.extensions and "code" in error.extensions:
        return error
    code, message, extensions = classify(error)
    if document is not None and error.nodes and "field" not in extensions:
        field = input_field_of(document, error.nodes[0]) if domain_error_in(error) else None
        extensions = {**extensions, "field": field} if field else extensions
    return GraphQLError(
        message=message or error.message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=None,
        extensions={**extensions, "code": code},
    )


class ErrorCodes(SchemaExtension):
    """Give every error an extensions.code and mask whatever was not expected."""

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        document = self.execution_context.graphql_document
        if result is not None and result.errors:
            result.errors = [present_error(error, document) for error in result.errors]

    def on_stream_result(self, result: StreamExecutionResult) -> Iterator[None]:
        """The same for what a WebSocket streams: queries and mutations sent over it, and
        subscription events, whose results never reach on_operation."""
        errors = getattr(result, "errors", None)
        document = self.execution_context.graphql_document
        if errors:
            result.errors = [present_error(e, document) for e in errors]  # type: ignore[union-attr]
        yield


def log_errors(errors: list[GraphQLError]) -> None:
    """Log unexpected errors whole (with traceback); expected ones only at debug."""
    for error in errors:
        if is_expected(error):
            log.debug("graphql error: %s", error.message)
        else:
            original = error.original_error
            log.error(
                "unexpected error at %s: %r",
                error.path,
                original,
                exc_info=(type(original), original, original.__traceback__) if original else None,
            )
