"""The compiled path: POST /graphql for an operation the compiler knows, in one round trip.

One seam in front of Strawberry's view. A request whose document compiles
(graph/read_plans.py: the reads, and the startCall, endCall and nextLead mutations) runs one
statement that looks the session up and builds the whole response in PostgreSQL; its
text goes to the client as it comes, with the headers, status and media type the view
would give it (graph/responses.py) and the request counted in the metrics. Everything
else goes to the view unchanged: GET, another content type, a document that does not
parse, validate or compile, a subscription, no token, an argument the resolvers would
refuse, a statement that finds no session or no prospect, an error PostgreSQL reports.
graphql-core then answers, with its errors; a request that falls back after its
statement ran (an error case) costs a second round trip. That is safe for a mutation
too: a statement PostgreSQL refused changed nothing. One whose connection failed (lost,
or the server going away) may have committed, so it is answered here, as the view
answers it, and never run again.

COMPILED_READS=0 turns the seam off, for diagnosis; tests/test_compiled_reads.py and
tests/test_compiled_calls.py run documents through both paths and require the same
answers.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from graphql import ASTValidationRule, GraphQLError, GraphQLSchema
from graphql.execution.values import VariableValues, get_variable_values
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import metrics
from graph.documents import (
    DocumentLimits,
    parse_document,
    request_problem,
    validate_document,
    variables_problem,
)
from graph.extensions import INTERNAL_MESSAGE, UNAVAILABLE_MESSAGE, is_database_unavailable
from graph.read_plans import DocumentPlans, Mutation, NotCompiled, ReadPlan, plan_document
from graph.responses import GRAPHQL_RESPONSE_JSON, prefers_graphql_response
from resolvers.auth import bearer_token, hash_token
from resolvers.events import wake_listeners

log = logging.getLogger("callfloor.reads")

# Documents whose plans (or the knowledge that they have none) are kept, per process.
MAX_DOCUMENTS = 500
JSON_CONTENT_TYPE = b"application/json"
GRAPHQL_RESPONSE_CONTENT_TYPE = f"{GRAPHQL_RESPONSE_JSON}; charset=utf-8".encode()
# Accept headers that ask for a streamed response, which the view answers itself.
STREAMING = (b"multipart/mixed", b"text/event-stream")


@dataclass(frozen=True)
class Rules:
    """How the view lets documents in (graph/documents.py): the compiled path holds to the
    same, and shares its caches of parsed and validated documents."""

    limits: DocumentLimits
    validation_rules: tuple[type[ASTValidationRule], ...]


class CompiledReads:
    """ASGI: answer the reads the compiler knows in one statement; pass on everything else."""

    def __init__(self, app: ASGIApp, schema: GraphQLSchema, rules: Rules) -> None:
        self.app = app
        self.schema = schema
        self.rules = rules
        self.documents: OrderedDict[tuple[str, str | None], DocumentPlans | None] = OrderedDict()
        # Requests answered here, and sent on after reading their body: the tests read
        # them to know the path they meant to test really ran.
        self.answered = 0
        self.passed_on = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = _first_headers(scope["headers"])
        content_type = headers.get(b"content-type", b"")
        accept = headers.get(b"accept", b"")
        if JSON_CONTENT_TYPE not in content_type or any(s in accept for s in STREAMING):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:  # the client went away
            return
        answer = await self.answer(scope, headers, body)
        if answer is not None:
            self.answered += 1
            await _send_json(send, answer, accept)
            return
        self.passed_on += 1
        await self.app(scope, _replay(body, receive), send)

    async def answer(self, scope: Scope, headers: dict[bytes, bytes], body: bytes) -> bytes | None:
        """The response body, or None when the view must answer."""
        token = bearer_token(headers.get(b"authorization", b"").decode("latin-1"))
        if token is None:
            return None
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(request, dict):
            return None
        query, inputs = request.get("query"), request.get("variables")
        operation_name = request.get("operationName")
        if (
            not isinstance(query, str)
            or not isinstance(inputs, dict | None)
            or not isinstance(operation_name, str | None)
            or request.get("extensions") is not None
        ):
            return None
        # Anything the view would refuse, it refuses itself, in its words.
        if request_problem(query, inputs, operation_name, self.rules.limits) is not None:
            return None
        document = self.document(query, operation_name)
        if document is None or variables_problem(inputs, document.parsed) is not None:
            return None
        variables = get_variable_values(
            self.schema, document.operation.variable_definitions or (), inputs or {}
        )
        if not isinstance(variables, VariableValues):
            return None
        plan = document.plan(variables)
        if plan is None:
            return None
        try:
            arguments = plan.arguments(hash_token(token), variables)
        except Exception:
            # Fallback: an argument the resolver refuses. Anything else (first: null makes
            # the resolver fail too) is the view's to answer as it always has.
            return None
        pool: asyncpg.Pool = scope["app"].state.pool
        try:
            answer = await _run(pool, plan, arguments)
        except asyncpg.SyntaxOrAccessError:
            # A statement PostgreSQL cannot run at all (class 42) is the compiler's bug:
            # the view still answers, and the operator hears of it.
            log.warning("compiled read fell back", exc_info=True)
            return None
        except Exception as error:
            if plan.mutation is not None and (
                not isinstance(error, asyncpg.PostgresError) or is_database_unavailable(error)
            ):
                # The connection failed or the server is going away: the mutation may
                # have committed, so it must not run again. Answered as the view answers.
                # If it did commit, the readers' poll finds its events within a second:
                # no wake-up through a database that just failed to answer.
                code, answer = _mutation_failed(plan.mutation, error)
                _label(scope, operation_name, document, code)
                return answer
            # PostgreSQL refused the statement, so it changed nothing: the view answers
            # again, with its code (a rule's refusal, BAD_USER_INPUT for a value the
            # database refuses). A mutation runs a second time this way, as it does when
            # nextLead found nothing callable (no row: the view says what holds leads back).
            log.debug("compiled operation fell back: %r", error)
            return None
        if answer is None:
            return None
        _label(scope, operation_name, document, "OK")
        if plan.mutation is not None and plan.mutation.node.name.value == "nextLead":
            # "Nothing callable" fell back above, and the view counted it.
            metrics.count_next_lead("started")
        return answer

    def document(self, query: str, operation_name: str | None) -> DocumentPlans | None:
        """The plans of a document that parses and validates as the view would have it,
        made on first sight; None when it has none."""
        key = (query, operation_name)
        if key in self.documents:
            self.documents.move_to_end(key)
            return self.documents[key]
        plans: DocumentPlans | None = None
        try:
            parsed = parse_document(query, self.rules.limits)
            if not validate_document(self.schema, parsed.document, self.rules.validation_rules):
                plans = plan_document(self.schema, parsed, operation_name)
        except (GraphQLError, NotCompiled, RecursionError):
            plans = None
        self.documents[key] = plans
        if len(self.documents) > MAX_DOCUMENTS:
            self.documents.popitem(last=False)
        return plans


def _label(scope: Scope, operation_name: str | None, document: DocumentPlans, outcome: str) -> None:
    """The request's operation and outcome, for the metrics, as the view notes them."""
    labels = scope.get(metrics.SCOPE_KEY)
    if isinstance(labels, metrics.RequestLabels):
        name = operation_name if operation_name is not None else document.operation_name
        labels.operation = metrics.operation_label(name)
        labels.outcome = outcome


async def _run(pool: asyncpg.Pool, plan: ReadPlan, arguments: list[Any]) -> bytes | None:
    """The statement's answer; after a mutation that published call events, the wake-up
    of every server's reader, on the same connection, once it has committed."""
    async with pool.acquire() as connection:
        answer: bytes | None = await connection.fetchval(plan.sql, *arguments)
        if answer is not None and plan.mutation is not None and plan.mutation.publishes:
            await wake_listeners(connection)
    return answer


def _mutation_failed(mutation: Mutation, error: Exception) -> tuple[str, bytes]:
    """The view's answer to a mutation whose field raised error, and its code: data null
    (each call mutation's answer is non-null) and the error at the field, coded as
    graph/extensions.py codes it."""
    if is_database_unavailable(error):
        code, message = "SERVICE_UNAVAILABLE", UNAVAILABLE_MESSAGE
    else:
        log.error("unexpected error at %s: %r", [mutation.key], error, exc_info=error)
        code, message = "INTERNAL_SERVER_ERROR", INTERNAL_MESSAGE
    formatted = GraphQLError(
        message, nodes=mutation.node, path=[mutation.key], extensions={"code": code}
    ).formatted
    return code, orjson.dumps({"data": None, "errors": [formatted]})


def _first_headers(raw: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """Each header's first value, as Starlette's request.headers.get() reads it."""
    headers: dict[bytes, bytes] = {}
    for name, value in raw:
        headers.setdefault(name, value)
    return headers


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """receive for the view: the body already read, then whatever comes next."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send_json(send: Send, body: bytes, accept: bytes) -> None:
    """200 with the JSON body, as the view sends a response with data."""
    wants_graphql_response = prefers_graphql_response(accept.decode("latin-1"))
    content_type = GRAPHQL_RESPONSE_CONTENT_TYPE if wants_graphql_response else JSON_CONTENT_TYPE
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-length", str(len(body)).encode()),
                (b"content-type", content_type),
                (b"vary", b"Accept"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
