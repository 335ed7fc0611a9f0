"""The schema: Query, Mutation and Subscription composed from the noun modules' fields,
and its limits (size, tokens, fields, depth, aliases), caches and error handling."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import strawberry
from graphql import ASTValidationRule, GraphQLError, specified_rules
from strawberry.extensions import AddValidationRules, query_depth_limiter
from strawberry.extensions import max_aliases as max_aliases_limiter
from strawberry.schema.config import StrawberryConfig
from strawberry.types.execution import ExecutionContext, ExecutionResult
from strawberry.types.graphql import OperationType

from graph.calls import CallMutations, CallQueries, CallSubscriptions, DispositionQueries
from graph.dialing import DialingMutations, DialingQueries
from graph.documents import DocumentChecks, DocumentLimits
from graph.execution import SubscriptionExecutionContext
from graph.extensions import ErrorCodes, log_errors
from graph.imports import ImportMutations
from graph.privacy import PrivacyMutations
from graph.prospects import AssignmentMutations, ProspectMutations, ProspectQueries
from graph.reports import ReportQueries
from graph.types import BIG_INT_SCALAR, DATE_TIME_SCALAR, BigInt
from graph.users import SessionMutations, SessionQueries, UserMutations, UserQueries
from metrics import OperationMetrics
from settings import (
    DEFAULT_MAX_ALIASES,
    DEFAULT_MAX_QUERY_BYTES,
    DEFAULT_MAX_QUERY_DEPTH,
    DEFAULT_MAX_QUERY_FIELDS,
)

MAX_TOKENS = 5000


# Each root type is its mixins' fields, base by base from left to right: the order of the
# bases is the order of the fields in schema.graphql, which clients hold us to.
@strawberry.type
class Query(
    ReportQueries,
    DialingQueries,
    SessionQueries,
    ProspectQueries,
    CallQueries,
    UserQueries,
    DispositionQueries,
):
    pass


@strawberry.type
class Mutation(
    PrivacyMutations,
    ImportMutations,
    DialingMutations,
    SessionMutations,
    ProspectMutations,
    CallMutations,
    AssignmentMutations,
    UserMutations,
):
    pass


@strawberry.type
class Subscription(CallSubscriptions):
    pass


class CallfloorSchema(strawberry.Schema):
    """Logs unexpected errors whole; expected ones are the client's business."""

    # How the view lets documents in (graph/documents.py), for the compiled reads to hold
    # to the same (graph/reads.py): set by create_schema().
    document_limits: DocumentLimits
    validation_rules: tuple[type[ASTValidationRule], ...] = tuple(specified_rules)

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        log_errors(errors)

    async def execute(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        """Run one operation; a subscription streams (WebSocket), so here it is refused."""
        # Strawberry lets a plain POST run a subscription as if it were a query, which
        # crashes into INTERNAL_SERVER_ERROR; without it the view answers a 400 instead.
        allowed = set(allowed_operation_types or OperationType) - {OperationType.SUBSCRIPTION}
        return await super().execute(
            query,
            variable_values,
            context_value,
            root_value,
            operation_name,
            allowed,
            operation_extensions,
        )


def create_schema(
    max_depth: int = DEFAULT_MAX_QUERY_DEPTH,
    max_aliases: int = DEFAULT_MAX_ALIASES,
    max_bytes: int = DEFAULT_MAX_QUERY_BYTES,
    max_fields: int = DEFAULT_MAX_QUERY_FIELDS,
) -> CallfloorSchema:
    """The schema with its limits (size, tokens, fields, depth, aliases), caches and error
    handling on."""
    # The rule classes are made once: validation is cached per document and rules, so a
    # document seen before skips parsing and validation entirely.
    limits: list[type[ASTValidationRule]] = [
        query_depth_limiter.create_validator(max_depth, should_ignore=None),
        max_aliases_limiter.create_validator(max_aliases),
    ]
    document_limits = DocumentLimits(
        max_bytes=max_bytes, max_tokens=MAX_TOKENS, max_fields=max_fields
    )
    extensions: list[Any] = [
        OperationMetrics,
        # Refuses what is too big or not text before parsing or validating it.
        lambda: DocumentChecks(document_limits),
        lambda: AddValidationRules(limits),
        ErrorCodes,
    ]
    schema = CallfloorSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=extensions,
        config=StrawberryConfig(scalar_map={BigInt: BIG_INT_SCALAR, datetime: DATE_TIME_SCALAR}),
        execution_context_class=SubscriptionExecutionContext,
    )
    schema.document_limits = document_limits
    # As Strawberry's execution context holds them once AddValidationRules has run.
    schema.validation_rules = (*specified_rules, *limits)
    return schema
