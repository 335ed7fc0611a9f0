"""Compiled reads: a query document becomes one SQL statement that returns the whole
response as JSON built by PostgreSQL (docs/reads.md). So do the call mutations
(startCall, endCall, heartbeatCall, nextLead): their function joined to the session,
their answer built from what it returns.

A plan is made once per document, operation and @skip/@include values, from a document
that parsed and validated under the schema's own rules, and only when the compiler knows
every field it selects (the prospect, prospects, activeCalls and viewer reads and the
types below them; one call mutation and its function's own fields). Anything else raises
NotCompiled and is served by graphql-core, which stays the reference:
tests/test_compiled_reads.py and tests/test_compiled_calls.py require identical answers.

The statement looks the session up itself, so a request costs one round trip. It answers
no row when graphql-core would answer an error: no live session, or an unknown prospect.
An argument the resolvers would refuse raises Fallback before anything runs. Either way
the request then takes the normal path, which words the error.

Written into the SQL are only the fixed expressions of this module, aliases it numbers
itself, and response keys, which are GraphQL names (the lexer admits only
[_A-Za-z][_0-9A-Za-z]*, checked again here). Every value is a parameter.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLField,
    GraphQLIncludeDirective,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLSkipDirective,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
    get_operation_ast,
    visit,
)
from graphql.execution.values import VariableValues, get_argument_values, get_directive_values
from graphql.language import Visitor

from graph.documents import ParsedDocument
from graph.types import MAX_HISTORY
from resolvers import prospects
from resolvers.calls import CallOutcome
from resolvers.errors import DomainError, parse_id

# json_build_object takes at most 100 arguments: 50 keys and their values.
MAX_KEYS = 50
GRAPHQL_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]*")


class NotCompiled(Exception):
    """The document selects something the compiler does not know: graphql-core serves it."""


class Fallback(Exception):
    """This request's arguments would make an error: graphql-core serves it and words it."""


# --- what each type's fields are in SQL ------------------------------------------------
# "{t}" stands for the alias of the row the object is built from.

DATETIME = "graphql_datetime({t}.%s)"

USER = {
    "id": "{t}.id",
    "email": "{t}.email",
    "name": "{t}.name",
    "role": "{t}.role",
    "active": "{t}.active",
    "createdAt": DATETIME % "created_at",
}

PROSPECT = {
    "id": "{t}.id",
    "name": "{t}.name",
    "phone": "{t}.phone",
    "email": "{t}.email",
    "company": "{t}.company",
    "status": "{t}.status",
    "lastCall": DATETIME % "last_call",
    "createdAt": DATETIME % "created_at",
    "updatedAt": DATETIME % "updated_at",
    "timeZone": "{t}.time_zone",
    "timeZones": "coalesce(prospect_time_zones({t}.queue_zones), '{}'::text[])",
    "priority": "{t}.priority",
}

CALL_LOG = {
    "id": "{t}.id",
    "prospectId": "{t}.prospect_id",
    "callerId": "{t}.caller_id",
    "phoneNumber": "{t}.phone_number",
    "fromNumber": "{t}.from_number",
    "startedAt": DATETIME % "started_at",
    "endedAt": DATETIME % "ended_at",
    "outcome": "{t}.outcome",
    "duration": "{t}.duration",
    "notes": "{t}.notes",
    "recordingUrl": "{t}.recording_url",
}

ACTIVE_CALL = {
    "id": "{t}.id",
    "prospectId": "{t}.prospect_id",
    "callerId": "{t}.caller_id",
    "callLogId": "{t}.call_log_id",
    "phoneNumber": "{t}.phone_number",
    "startedAt": DATETIME % "started_at",
    "leaseExpiresAt": DATETIME % "lease_expires_at",
    # As the active_calls named queries name them.
    "prospectName": "(SELECT n.name FROM prospects n WHERE n.id = {t}.prospect_id)",
    "callerName": (
        "(SELECT coalesce(nullif(n.name, ''), n.email) FROM users n WHERE n.id = {t}.caller_id)"
    ),
}

STATUS_CHANGE = {
    # A bigint: an ID is a string.
    "id": "{t}.id::text",
    "prospectId": "{t}.prospect_id",
    "oldStatus": "{t}.old_status",
    "newStatus": "{t}.new_status",
    "changedById": "{t}.changed_by",
    "createdAt": DATETIME % "created_at",
}

LEAD_ASSIGNMENT = {
    "id": "{t}.id",
    "prospectId": "{t}.prospect_id",
    "agentId": "{t}.agent_id",
    "assignedById": "{t}.assigned_by",
    "assignedAt": DATETIME % "assigned_at",
    "expiresAt": DATETIME % "expires_at",
    "active": "{t}.active",
}

SCALARS: dict[str, dict[str, str]] = {
    "User": USER,
    "Prospect": PROSPECT,
    "CallLog": CALL_LOG,
    "ActiveCall": ACTIVE_CALL,
    "StatusChange": STATUS_CHANGE,
    "LeadAssignment": LEAD_ASSIGNMENT,
}

# A nested object found by a key of its parent: (type, table, the parent's column).
REFERENCES: dict[tuple[str, str], tuple[str, str, str]] = {
    ("CallLog", "caller"): ("User", "users", "caller_id"),
    ("CallLog", "prospect"): ("Prospect", "prospects", "prospect_id"),
    ("ActiveCall", "caller"): ("User", "users", "caller_id"),
    ("ActiveCall", "prospect"): ("Prospect", "prospects", "prospect_id"),
    ("StatusChange", "changedBy"): ("User", "users", "changed_by"),
    ("LeadAssignment", "agent"): ("User", "users", "agent_id"),
}

# A prospect's histories, newest first, as the named queries order them.
HISTORIES = {
    "callHistory": ("CallLog", "call_logs", "started_at DESC"),
    "statusHistory": ("StatusChange", "prospect_status_log", "created_at DESC, id DESC"),
}

# What the session lookup's row (live_session_user(), as authenticate() reads it) is.
VIEWER_ALIAS = "graphql_viewer"

# The call mutations' answers. A mutation's statement cannot read what its own function
# wrote (the statement's snapshot is older than the function's writes), so an answer is
# built from what the function returns, as the resolvers build it, and nothing else: no
# nested object that would be read from the tables (ActiveCall.prospect, CallLog.caller).
# "{t}" stands for the function's row.
START_CALL_PAYLOAD = {
    "activeCallId": "{t}.active_call_id",
    "callLogId": "{t}.call_log_id",
}
# nextLead's answer when it started a call (next_lead() returns no row when nothing is
# callable: the statement answers nothing, and graphql-core says what holds leads back).
NEXT_LEAD_PAYLOAD = {
    "callLogId": "{t}.call_log_id",
    "nothingCallable": "false",
}
# The active call as start_call() returns it, active_call_json() (ActiveCall.from_record).
ACTIVE_CALL_JSON = {
    "id": "({t}->>'id')",
    "prospectId": "({t}->>'prospect_id')",
    "callerId": "({t}->>'caller_id')",
    "callLogId": "({t}->>'call_log_id')",
    "phoneNumber": "({t}->>'phone_number')",
    "startedAt": "graphql_datetime(({t}->>'started_at')::timestamptz)",
    "leaseExpiresAt": "graphql_datetime(({t}->>'lease_expires_at')::timestamptz)",
    "prospectName": "({t}->>'prospect_name')",
    "callerName": "({t}->>'caller_name')",
}

# The fields of a mutation's answer, by type, from the function's row ("{t}").
RESULT_SCALARS = {
    "StartCallPayload": START_CALL_PAYLOAD,
    "NextLeadPayload": NEXT_LEAD_PAYLOAD,
    "ActiveCall": ACTIVE_CALL_JSON,
    "CallLog": CALL_LOG,
    "Prospect": PROSPECT,
}


def _column(expression: str, alias: str) -> str:
    return expression.replace("{t}", alias)


def _key(name: str) -> str:
    """A response key as an SQL string literal; only a GraphQL name can be one."""
    if not GRAPHQL_NAME.fullmatch(name):
        raise NotCompiled(f"not a GraphQL name: {name!r}")
    return f"'{name}'"


# --- parameters ------------------------------------------------------------------------

ArgumentGroup = Callable[[VariableValues], Sequence[Any]]
# Checks a field's coerced arguments as its resolver does: the values, or Fallback.
ArgumentCheck = Callable[[dict[str, Any]], Sequence[Any]]


@dataclass
class Parameters:
    """The statement's parameters: $1 is the token's hash; the others come from groups,
    each computing a few values from the request's variables (one field's arguments)."""

    groups: list[ArgumentGroup] = field(default_factory=list)
    slots: list[tuple[int, int]] = field(default_factory=list)

    def group(self, compute: ArgumentGroup) -> int:
        """Add a group; its index."""
        self.groups.append(compute)
        return len(self.groups) - 1

    def slot(self, group: int, position: int, sql_type: str) -> str:
        """The placeholder of one value of a group, cast to its type: made on first use
        (PostgreSQL refuses a parameter the statement never reads), the same thereafter."""
        if (group, position) not in self.slots:
            self.slots.append((group, position))
        return f"${self.slots.index((group, position)) + 2}::{sql_type}"

    def values(self, token_hash: bytes, variables: VariableValues) -> list[Any]:
        """Every parameter for one request; Fallback when an argument would be refused."""
        computed = [compute(variables) for compute in self.groups]
        return [token_hash, *(computed[group][position] for group, position in self.slots)]


@dataclass(frozen=True)
class Mutation:
    """The one field a compiled mutation runs: where an error it ends in belongs, and
    whether it publishes call events (the servers' readers are woken once it commits)."""

    key: str
    node: FieldNode
    publishes: bool = True


@dataclass(frozen=True)
class ReadPlan:
    """One compiled statement and how to fill its parameters; for a mutation, the field
    it runs (the statement then changes data: it must not be sent twice)."""

    sql: str
    parameters: Parameters
    mutation: Mutation | None = None

    def arguments(self, token_hash: bytes, variables: VariableValues) -> list[Any]:
        """The statement's parameters for one request (Fallback when one is refused)."""
        return self.parameters.values(token_hash, variables)


# --- arguments, checked as the resolvers check them -----------------------------------


def _history_first(arguments: dict[str, Any]) -> Sequence[Any]:
    first = arguments.get("first", 20)
    if not isinstance(first, int) or not 0 <= first <= MAX_HISTORY:
        raise Fallback
    return (first,)


def _prospect_id(arguments: dict[str, Any]) -> Sequence[Any]:
    try:
        return (parse_id(arguments["id"]),)
    except DomainError:
        raise Fallback from None


def _start_call(arguments: dict[str, Any]) -> Sequence[Any]:
    """startCall's prospect; a phone or caller line to normalise goes to the resolver."""
    if arguments.get("phoneNumber") is not None or arguments.get("fromNumber") is not None:
        raise Fallback
    try:
        return (parse_id(arguments["prospectId"], "prospectId"),)
    except DomainError:
        raise Fallback from None


def _heartbeat_call(arguments: dict[str, Any]) -> Sequence[Any]:
    try:
        return (parse_id(arguments["callLogId"], "callLogId"),)
    except DomainError:
        raise Fallback from None


def _end_call(arguments: dict[str, Any]) -> Sequence[Any]:
    """endCall's arguments, checked as the resolver checks them (CallOutcome.validate())."""
    outcome = CallOutcome(
        outcome=arguments["outcome"],
        duration=arguments.get("duration"),
        notes=arguments.get("notes"),
        recording_url=arguments.get("recordingUrl"),
        callback_at=arguments.get("callbackAt"),
    )
    try:
        outcome.validate()
        return (
            parse_id(arguments["prospectId"], "prospectId"),
            parse_id(arguments["callLogId"], "callLogId"),
            outcome.outcome,
            outcome.duration,
            outcome.notes,
            outcome.recording_url,
            outcome.callback_at,
        )
    except DomainError:
        raise Fallback from None


# endCall's values (_end_call()) and their types, in end_call()'s order after the user.
END_CALL_PARAMETER_TYPES = ("uuid", "uuid", "text", "int", "text", "text", "timestamptz")


def _input_field(value: Any, python_name: str, graphql_name: str) -> Any:
    if value is None:
        return None
    if isinstance(value, dict):
        return value.get(python_name, value.get(graphql_name))
    return getattr(value, python_name, None)


def _page(arguments: dict[str, Any]) -> Sequence[Any]:
    """prospects(first, after, filter) as the page query's parameters, then the page size
    and whether a previous page exists."""
    first = arguments.get("first", 20)
    after = arguments.get("after")
    filter_ = arguments.get("filter")
    assigned_to = _input_field(filter_, "assigned_to", "assignedTo")
    try:
        page = prospects.page_parameters(
            first=first,
            after=after,
            status=_input_field(filter_, "status", "status"),
            search=_input_field(filter_, "search", "search"),
            assigned_to=parse_id(assigned_to, "assignedTo") if assigned_to else None,
        )
    except DomainError:
        raise Fallback from None
    return (*page, first, after is not None)


# The page query's parameters (resolvers.prospects.page_parameters) and their types.
PAGE_PARAMETER_TYPES = ("text", "text", "uuid", "timestamptz", "uuid", "int", "text", "int")


# --- the compiler ----------------------------------------------------------------------


class _VariableFinder(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.found = False

    def enter_variable(self, node: VariableNode, *args: Any) -> None:
        self.found = True


def _uses_variables(node: FieldNode) -> bool:
    finder = _VariableFinder()
    for argument in node.arguments or ():
        visit(argument, finder)
    return finder.found


@dataclass
class Compiler:
    """Writes the statement for one operation, given the values of its @skip/@include."""

    schema: GraphQLSchema
    fragments: dict[str, FragmentDefinitionNode]
    directive_variables: VariableValues
    parameters: Parameters = field(default_factory=Parameters)
    joins: list[str] = field(default_factory=list)
    aliases: int = 0
    mutation: Mutation | None = None

    def alias(self) -> str:
        """A fresh table alias."""
        self.aliases += 1
        return f"t{self.aliases}"

    # Which fields a selection asks for, in order, as graphql-core collects them.

    def included(self, node: Any) -> bool:
        skip = get_directive_values(GraphQLSkipDirective, node, self.directive_variables)
        if skip is not None and skip.get("if") is True:
            return False
        include = get_directive_values(GraphQLIncludeDirective, node, self.directive_variables)
        return not (include is not None and include.get("if") is False)

    def collect(
        self, type_name: str, selection_sets: Sequence[SelectionSetNode | None]
    ) -> dict[str, list[FieldNode]]:
        fields: dict[str, list[FieldNode]] = {}
        visited: set[str] = set()

        def walk(selection_set: SelectionSetNode) -> None:
            for selection in selection_set.selections:
                if not self.included(selection):
                    continue
                if isinstance(selection, FieldNode):
                    key = selection.alias.value if selection.alias else selection.name.value
                    fields.setdefault(key, []).append(selection)
                elif isinstance(selection, InlineFragmentNode):
                    condition = selection.type_condition
                    if condition is not None and condition.name.value != type_name:
                        raise NotCompiled("a fragment on another type")
                    walk(selection.selection_set)
                elif isinstance(selection, FragmentSpreadNode):
                    name = selection.name.value
                    if name in visited:
                        continue
                    visited.add(name)
                    fragment = self.fragments[name]
                    if fragment.type_condition.name.value != type_name:
                        raise NotCompiled("a fragment on another type")
                    if fragment.variable_definitions:
                        raise NotCompiled("fragment variables")
                    walk(fragment.selection_set)

        for selection_set in selection_sets:
            if selection_set is not None:
                walk(selection_set)
        return fields

    def arguments(self, type_name: str, node: FieldNode, check: ArgumentCheck) -> int:
        """A parameter group for a field's arguments, checked as its resolver checks them;
        computed once here when they use no variables."""
        parent = self.schema.get_type(type_name)
        assert isinstance(parent, GraphQLObjectType)
        definition: GraphQLField = parent.fields[node.name.value]

        def compute(variables: VariableValues) -> Sequence[Any]:
            return check(get_argument_values(definition, node, variables))

        if not _uses_variables(node):
            try:
                values = compute(self.directive_variables)
            except Exception:  # Fallback, or one the resolver fails on too (first: null)
                raise NotCompiled("literal arguments the resolver refuses") from None
            return self.parameters.group(lambda variables: values)
        return self.parameters.group(compute)

    # Objects.

    def object(self, type_name: str, nodes: list[FieldNode], alias: str) -> str:
        """json_build_object of the selection on nodes, from the row called alias."""
        return self.selection(type_name, [node.selection_set for node in nodes], alias)

    def selection(
        self, type_name: str, selection_sets: Sequence[SelectionSetNode | None], alias: str
    ) -> str:
        """json_build_object of these selection sets, from the row called alias."""
        fields = self.collect(type_name, selection_sets)
        if not fields or len(fields) > MAX_KEYS:
            raise NotCompiled("an empty or very wide selection")
        entries = [
            f"{_key(key)}, {self.field(type_name, field_nodes, alias)}"
            for key, field_nodes in fields.items()
        ]
        return f"json_build_object({', '.join(entries)})"

    def field(self, type_name: str, nodes: list[FieldNode], alias: str) -> str:
        name = nodes[0].name.value
        if name == "__typename":
            return f"'{type_name}'::text"
        if type_name == "Query":
            return self.root_field(name, nodes)
        if type_name == "Mutation":
            return self.mutation_field(name, nodes)
        scalar = SCALARS.get(type_name, {}).get(name)
        if scalar is not None:
            if nodes[0].selection_set is not None:
                raise NotCompiled("a selection on a scalar")
            return _column(scalar, alias)
        reference = REFERENCES.get((type_name, name))
        if reference is not None:
            target_type, table, column = reference
            inner = self.alias()
            return (
                f"(SELECT {self.object(target_type, nodes, inner)} FROM {table} {inner} "
                f"WHERE {inner}.id = {alias}.{column})"
            )
        if type_name == "Prospect":
            return self.prospect_field(name, nodes, alias)
        if type_name == "ProspectConnection" or type_name == "ProspectEdge":
            raise NotCompiled("a connection outside prospects()")
        raise NotCompiled(f"{type_name}.{name}")

    def prospect_field(self, name: str, nodes: list[FieldNode], alias: str) -> str:
        inner = self.alias()
        if name in HISTORIES:
            target_type, table, order = HISTORIES[name]
            group = self.arguments("Prospect", nodes[0], _history_first)
            limit = self.parameters.slot(group, 0, "int")
            rows = (
                f"(SELECT * FROM {table} h WHERE h.prospect_id = {alias}.id "
                f"ORDER BY h.{order.replace(', ', ', h.')} LIMIT {limit}) {inner}"
            )
            return (
                f"(SELECT coalesce(json_agg({self.object(target_type, nodes, inner)}), '[]') "
                f"FROM {rows})"
            )
        if name == "activeCall":
            return (
                f"(SELECT {self.object('ActiveCall', nodes, inner)} FROM active_calls {inner} "
                f"WHERE {inner}.prospect_id = {alias}.id)"
            )
        if name == "assignment":
            return (
                f"(SELECT {self.object('LeadAssignment', nodes, inner)} "
                f"FROM lead_assignments {inner} WHERE {inner}.prospect_id = {alias}.id "
                f"AND assignment_is_live({inner}, now()) LIMIT 1)"
            )
        raise NotCompiled(f"Prospect.{name}")

    # The root fields.

    def root_field(self, name: str, nodes: list[FieldNode]) -> str:
        if (nodes[0].arguments or ()) and name not in ("prospect", "prospects"):
            raise NotCompiled(f"arguments to Query.{name}")
        if name == "viewer":
            # The session lookup finds active users only, as viewer's active: true says.
            return self.object("User", nodes, VIEWER_ALIAS)
        if name == "activeCalls":
            inner = self.alias()
            return (
                f"(SELECT coalesce(json_agg({self.object('ActiveCall', nodes, inner)} "
                f"ORDER BY {inner}.started_at, {inner}.id), '[]') FROM active_calls {inner})"
            )
        if name == "prospect":
            group = self.arguments("Query", nodes[0], _prospect_id)
            inner, row = self.alias(), self.alias()
            # No row when the prospect is unknown: the statement answers nothing, and
            # graphql-core answers NOT_FOUND.
            self.joins.append(
                f"CROSS JOIN LATERAL (SELECT {self.object('Prospect', nodes, inner)} AS v "
                f"FROM prospects {inner} WHERE {inner}.id = "
                f"{self.parameters.slot(group, 0, 'uuid')}) {row}"
            )
            return f"{row}.v"
        if name == "prospects":
            return self.connection(nodes)
        raise NotCompiled(f"Query.{name}")

    # The call mutations: the function runs once, joined to the session; the answer is
    # built from what it returns.

    def mutation_field(self, name: str, nodes: list[FieldNode]) -> str:
        if self.mutation is not None:
            raise NotCompiled("more than one mutation")
        node = nodes[0]
        self.mutation = Mutation(
            key=node.alias.value if node.alias else name,
            node=node,
            publishes=name != "heartbeatCall",  # a lease pushed on is no event
        )
        row = self.alias()
        if name == "startCall":
            group = self.arguments("Mutation", node, _start_call)
            prospect = self.parameters.slot(group, 0, "uuid")
            self.joins.append(
                f"CROSS JOIN LATERAL start_call({prospect}, {VIEWER_ALIAS}.id, NULL, NULL) {row}"
            )
            return self.result("StartCallPayload", nodes, row)
        if name == "endCall":
            group = self.arguments("Mutation", node, _end_call)
            values = [
                self.parameters.slot(group, position, sql_type)
                for position, sql_type in enumerate(END_CALL_PARAMETER_TYPES)
            ]
            arguments = ", ".join([*values[:2], f"{VIEWER_ALIAS}.id", *values[2:]])
            self.joins.append(f"CROSS JOIN LATERAL end_call({arguments}) {row}")
            return self.result("CallLog", nodes, row)
        if name == "heartbeatCall":
            group = self.arguments("Mutation", node, _heartbeat_call)
            call_log = self.parameters.slot(group, 0, "uuid")
            self.joins.append(
                f"CROSS JOIN LATERAL heartbeat_call({call_log}, {VIEWER_ALIAS}.id) {row}"
            )
            # As the heartbeat_call named query answers: the call as events carry it.
            call = self.alias()
            self.joins.append(f"CROSS JOIN LATERAL (SELECT active_call_json({row}) AS json) {call}")
            return self.result("ActiveCall", nodes, f"{call}.json")
        if name == "nextLead":
            if node.arguments:
                raise NotCompiled("arguments to nextLead")
            self.joins.append(f"CROSS JOIN LATERAL next_lead({VIEWER_ALIAS}.id) {row}")
            return self.result("NextLeadPayload", nodes, row)
        raise NotCompiled(f"Mutation.{name}")

    def result(self, type_name: str, nodes: list[FieldNode], source: str) -> str:
        """json_build_object of a mutation's answer, from what its function returned."""
        scalars = RESULT_SCALARS[type_name]
        fields = self.collect(type_name, [node.selection_set for node in nodes])
        if not fields or len(fields) > MAX_KEYS:
            raise NotCompiled("an empty or very wide selection")
        entries = []
        for key, field_nodes in fields.items():
            name = field_nodes[0].name.value
            if name == "__typename":
                value = f"'{type_name}'::text"
            elif name in scalars:
                if field_nodes[0].selection_set is not None:
                    raise NotCompiled("a selection on a scalar")
                value = _column(scalars[name], source)
            elif type_name == "NextLeadPayload" and name == "heldBack":
                value = "'[]'::json"  # empty when a call started, whatever it selects
            elif type_name in ("StartCallPayload", "NextLeadPayload") and name == "activeCall":
                value = self.result("ActiveCall", field_nodes, f"{source}.active_call")
            elif type_name == "NextLeadPayload" and name == "prospect":
                # Its own columns only: next_lead() does not write the prospect it hands
                # out (no rule's hold, no status), so the statement's snapshot reads what
                # the resolver reads after the commit; what starting the call wrote
                # (activeCall, callHistory) it would not see.
                inner = self.alias()
                value = (
                    f"(SELECT {self.result('Prospect', field_nodes, inner)} "
                    f"FROM prospects {inner} WHERE {inner}.id = {source}.prospect_id)"
                )
            else:
                raise NotCompiled(f"{type_name}.{name} in a mutation's answer")
            entries.append(f"{_key(key)}, {value}")
        return f"json_build_object({', '.join(entries)})"

    def connection(self, nodes: list[FieldNode]) -> str:
        """prospects(first, after, filter): one page, newest first, as a Relay connection."""
        group = self.arguments("Query", nodes[0], _page)
        page = [
            self.parameters.slot(group, position, sql_type)
            for position, sql_type in enumerate(PAGE_PARAMETER_TYPES)
        ]

        def first() -> str:
            return self.parameters.slot(group, len(PAGE_PARAMETER_TYPES), "int")

        def has_previous() -> str:
            return self.parameters.slot(group, len(PAGE_PARAMETER_TYPES) + 1, "boolean")

        rows = self.alias()
        cursor = f"graphql_prospect_cursor({rows}.created_at, {rows}.id)"
        entries = []
        for key, field_nodes in self.collect(
            "ProspectConnection", [node.selection_set for node in nodes]
        ).items():
            name = field_nodes[0].name.value
            if name == "__typename":
                value = "'ProspectConnection'::text"
            elif name == "edges":
                edge = self.edge(field_nodes, rows, cursor)
                value = (
                    f"coalesce(json_agg({edge} ORDER BY {rows}.graphql_row) "
                    f"FILTER (WHERE {rows}.graphql_row <= {first()}), '[]')"
                )
            elif name == "pageInfo":
                value = self.page_info(field_nodes, rows, cursor, first, has_previous)
            else:
                raise NotCompiled(f"ProspectConnection.{name}")
            entries.append(f"{_key(key)}, {value}")
        source = prospects_page_source(page)
        return (
            f"(SELECT json_build_object({', '.join(entries)}) FROM ("
            f"SELECT p.*, row_number() OVER (ORDER BY p.created_at DESC, p.id DESC) "
            f"AS graphql_row, count(*) OVER () AS graphql_rows FROM {source} p) {rows})"
        )

    def edge(self, nodes: list[FieldNode], rows: str, cursor: str) -> str:
        entries = []
        for key, field_nodes in self.collect(
            "ProspectEdge", [n.selection_set for n in nodes]
        ).items():
            name = field_nodes[0].name.value
            if name == "__typename":
                value = "'ProspectEdge'::text"
            elif name == "cursor":
                value = cursor
            elif name == "node":
                value = self.object("Prospect", field_nodes, rows)
            else:
                raise NotCompiled(f"ProspectEdge.{name}")
            entries.append(f"{_key(key)}, {value}")
        return f"json_build_object({', '.join(entries)})"

    def page_info(
        self,
        nodes: list[FieldNode],
        rows: str,
        cursor: str,
        first: Callable[[], str],
        has_previous: Callable[[], str],
    ) -> str:
        entries = []
        for key, field_nodes in self.collect("PageInfo", [n.selection_set for n in nodes]).items():
            name = field_nodes[0].name.value
            if name == "__typename":
                value = "'PageInfo'::text"
            elif name == "hasNextPage":
                value = f"count(*) > {first()}"
            elif name == "hasPreviousPage":
                value = has_previous()
            elif name == "startCursor":
                value = (
                    f"max(CASE WHEN {rows}.graphql_row = 1 AND 1 <= {first()} THEN {cursor} END)"
                )
            elif name == "endCursor":
                value = (
                    f"max(CASE WHEN {rows}.graphql_row = least({rows}.graphql_rows, {first()}) "
                    f"THEN {cursor} END)"
                )
            else:
                raise NotCompiled(f"PageInfo.{name}")
            entries.append(f"{_key(key)}, {value}")
        return f"json_build_object({', '.join(entries)})"

    def statement(self, operation: OperationDefinitionNode) -> ReadPlan:
        """The whole statement: the session, then the data. A mutation's function is
        joined to the session's row, so it runs once, and only for a live session."""
        mutates = operation.operation == OperationType.MUTATION
        data = self.selection("Mutation" if mutates else "Query", [operation.selection_set], "")
        if mutates and self.mutation is None:
            raise NotCompiled("a mutation that changes nothing")
        sql = (
            f"SELECT convert_to(json_build_object('data', {data})::text, 'UTF8') "
            f"FROM live_session_user($1::bytea) {VIEWER_ALIAS} {' '.join(self.joins)}"
        )
        return ReadPlan(sql=sql, parameters=self.parameters, mutation=self.mutation)


def prospects_page_source(page: list[str]) -> str:
    """The page's rows (one more than asked, to tell whether more follow) from
    prospects_page(), the function the prospects_page named query calls, so both paths
    read the same rows by the same plan; placeholders in page_parameters() order."""
    status, pattern, agent, cursor_at, cursor_id, limit, digits, walk = page
    return (
        f"prospects_page({status}, {pattern}, {digits}, {agent}, {cursor_at}, {cursor_id}, "
        f"{limit}, {walk})"
    )


# --- documents -------------------------------------------------------------------------


class _DirectiveVariables(Visitor):
    """The variables that @skip and @include read."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def enter_directive(self, node: Any, *args: Any) -> None:
        if node.name.value in ("skip", "include"):
            for argument in node.arguments or ():
                if isinstance(argument.value, VariableNode):
                    self.names.add(argument.value.name.value)


@dataclass
class DocumentPlans:
    """A validated query operation and its plans, one per value of its @skip/@include."""

    schema: GraphQLSchema
    parsed: ParsedDocument
    operation: OperationDefinitionNode
    operation_name: str | None
    directive_variables: tuple[str, ...]
    plans: dict[tuple[Any, ...], ReadPlan | None] = field(default_factory=dict)

    def plan(self, variables: VariableValues) -> ReadPlan | None:
        """The plan for these variables' @skip/@include values; None when not compiled."""
        key = tuple(variables.coerced.get(name) for name in self.directive_variables)
        if key not in self.plans:
            if len(self.plans) >= 16:
                return None
            try:
                self.plans[key] = compile_operation(
                    self.schema, self.parsed.document, self.operation, variables
                )
            except NotCompiled:
                self.plans[key] = None
        return self.plans[key]


def compile_operation(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: VariableValues,
) -> ReadPlan:
    """The plan of a query operation for these @skip/@include values, or NotCompiled."""
    fragments = {
        definition.name.value: definition
        for definition in document.definitions
        if isinstance(definition, FragmentDefinitionNode)
    }
    return Compiler(schema, fragments, variables).statement(operation)


def plan_document(
    schema: GraphQLSchema, parsed: ParsedDocument, operation_name: str | None
) -> DocumentPlans:
    """What can be compiled of a valid document's operation, or NotCompiled."""
    document = parsed.document
    operation = get_operation_ast(document, operation_name)
    if operation is None or operation.operation == OperationType.SUBSCRIPTION:
        raise NotCompiled("not one query or mutation operation")
    finder = _DirectiveVariables()
    visit(document, finder)
    name = operation.name.value if operation.name else None
    return DocumentPlans(
        schema=schema,
        parsed=parsed,
        operation=operation,
        operation_name=name,
        directive_variables=tuple(sorted(finder.names)),
    )
