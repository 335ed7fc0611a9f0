"""How a GraphQL request is let in: refused first when it would cost too much to parse or
validate (bytes, tokens, fields) or carries text the database cannot hold (NUL, unpaired
surrogates, in variables or in literals), then parsed and validated once per distinct
document. Over HTTP and WebSockets alike, since both run through the schema."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from graphql import (
    ArgumentNode,
    ASTValidationRule,
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    NameNode,
    Node,
    ObjectFieldNode,
    OperationDefinitionNode,
    OperationType,
    SelectionNode,
    SelectionSetNode,
    StringValueNode,
    VariableDefinitionNode,
    VariableNode,
    Visitor,
    validate,
    visit,
)
from graphql.language.parser import Parser, nested_too_deeply_error
from graphql.language.visitor import BREAK, SKIP, VisitorAction
from strawberry.extensions import SchemaExtension

from resolvers.inputs import field_of, strings_in, text_problem

# Distinct documents whose parse and validation are kept, as Strawberry's caches did.
CACHED_DOCUMENTS = 128


@dataclass(frozen=True)
class DocumentLimits:
    """What one document may cost before it is refused."""

    max_bytes: int
    max_tokens: int
    max_fields: int


@dataclass(frozen=True)
class ParsedDocument:
    """A parsed document and, for each variable, the argument or input field it feeds
    (to name the field in an error about the variable's value)."""

    document: DocumentNode
    variable_fields: dict[str, str] = field(default_factory=dict)


def refused(
    message: str, code: str, field_name: str | None = None, node: Node | None = None
) -> GraphQLError:
    """An error that refuses the request, with its code (and the field, when known)."""
    extensions: dict[str, Any] = {"code": code}
    if field_name is not None:
        extensions["field"] = field_name
    return GraphQLError(message, node, extensions=extensions)


class _FieldCountingParser(Parser):
    """graphql-core's parser, giving up at the first selection past the limit: validation
    compares selections pairwise, so their number is what makes it expensive."""

    def __init__(self, source: str, limits: DocumentLimits) -> None:
        super().__init__(source, max_tokens=limits.max_tokens)
        self._max_fields = limits.max_fields
        self._fields = 0

    def parse_selection(self) -> SelectionNode:
        self._fields += 1
        if self._fields > self._max_fields:
            raise refused(
                f"The document has more than {self._max_fields} fields",
                "GRAPHQL_VALIDATION_FAILED",
            )
        return super().parse_selection()


class _LiteralText(Visitor):
    """Refuses a string literal that is not text, naming its argument or input field."""

    def enter_string_value(
        self, node: StringValueNode, _key: Any, parent: Any, _path: Any, ancestors: Any
    ) -> None:
        problem = text_problem(node.value)
        if problem is None:
            return
        name = _given_to([*ancestors, parent]) or "value"
        raise refused(f"{name} {problem}", "BAD_USER_INPUT", name, node)


def _given_to(ancestors: list[Any]) -> str | None:
    """The argument or input field (or, for a default value, the variable) that the
    innermost of these ancestors of a value gives it to."""
    for ancestor in reversed(ancestors):
        if isinstance(ancestor, ArgumentNode | ObjectFieldNode):
            return str(ancestor.name.value)
        if isinstance(ancestor, VariableDefinitionNode):
            return str(ancestor.variable.name.value)
    return None


def input_field_of(document: DocumentNode, node: Node) -> str | None:
    """The argument or input field a value of the document is given to, to name it in an
    error: node is a literal, or the definition of a variable."""
    if isinstance(node, VariableDefinitionNode):
        return _variable_fields(document).get(node.variable.name.value)
    found: list[str | None] = []

    class Finder(Visitor):
        def enter(self, visited: Node, _key: Any, parent: Any, _path: Any, ancestors: Any) -> Any:
            if visited is node:
                found.append(_given_to([*ancestors, parent]))
                return BREAK
            return None

    visit(document, Finder())
    return found[0] if found else None


def _variable_fields(document: DocumentNode) -> dict[str, str]:
    """Each variable and the first argument or input field it is passed to."""
    fields: dict[str, str] = {}

    class Usages(Visitor):
        def enter_variable(
            self, node: VariableNode, _key: Any, parent: Any, _path: Any, _ancestors: Any
        ) -> None:
            if isinstance(parent, ArgumentNode | ObjectFieldNode):
                fields.setdefault(node.name.value, parent.name.value)

        def enter_variable_definition(self, *_args: Any) -> VisitorAction:
            return SKIP  # a definition names the variable; it does not use it

    visit(document, Usages())
    return fields


@lru_cache(maxsize=CACHED_DOCUMENTS)
def parse_document(query: str, limits: DocumentLimits) -> ParsedDocument:
    """The document, or a GraphQLError: a syntax error, too many tokens or fields, or a
    literal that is not text. Successes are cached; refusals are cheap to repeat."""
    parser = _FieldCountingParser(query, limits)
    try:
        document = parser.parse_document()
    except RecursionError:
        document = None  # raised below, outside the handler, as graphql.parse() does
    if document is None:
        raise nested_too_deeply_error(parser)
    visit(document, _LiteralText())
    return ParsedDocument(document, _variable_fields(document))


@lru_cache(maxsize=CACHED_DOCUMENTS)
def validate_document(
    schema: GraphQLSchema, document: DocumentNode, rules: tuple[type[ASTValidationRule], ...]
) -> list[GraphQLError]:
    """graphql-core's validation, once per parsed document (documents come from the cache)."""
    return validate(schema, document, rules)


def request_problem(
    query: object, variables: object, operation_name: object, limits: DocumentLimits
) -> GraphQLError | None:
    """Why a request is refused before its document is even parsed, or None."""
    # HTTP requests are checked for these by Strawberry; WebSocket messages are not.
    if not isinstance(query, str):
        return refused("query must be a string", "BAD_USER_INPUT", "query")
    if not isinstance(variables, dict | None):
        return refused("variables must be an object", "BAD_USER_INPUT", "variables")
    if operation_name is not None:
        if not isinstance(operation_name, str):
            return refused("operationName must be a string", "BAD_USER_INPUT", "operationName")
        if problem := text_problem(operation_name):
            return refused(f"operationName {problem}", "BAD_USER_INPUT", "operationName")
    # Characters never outnumber UTF-8 bytes: most documents are judged without encoding.
    size = len(query)
    if size > limits.max_bytes or len(query.encode("utf-8", "surrogatepass")) > limits.max_bytes:
        return refused(
            f"The document is larger than {limits.max_bytes} bytes", "GRAPHQL_VALIDATION_FAILED"
        )
    return None


def variables_problem(
    variables: dict[str, Any] | None, parsed: ParsedDocument
) -> GraphQLError | None:
    """A variable value holding text that is not text, naming the field, or None."""
    for path, text in strings_in(variables or {}):
        problem = text_problem(text)
        if problem is not None:
            variable = str(path[0])
            name = field_of(path[1:], parsed.variable_fields.get(variable, variable))
            return refused(f"{name} {problem}", "BAD_USER_INPUT", name)
    return None


def _refused_document(operation_name: str | None) -> DocumentNode:
    """A stand-in for a document that was refused unparsed: Strawberry asks a document
    its operation type before validation, which then answers the refusal. Never run."""
    operation = OperationDefinitionNode(
        operation=OperationType.QUERY,
        name=NameNode(value=operation_name) if operation_name is not None else None,
        variable_definitions=(),
        directives=(),
        selection_set=SelectionSetNode(selections=()),
    )
    return DocumentNode(definitions=(operation,))


class DocumentChecks(SchemaExtension):
    """Parse and validate each document once, refusing first what is too big or not text.

    Takes the place of Strawberry's MaxTokensLimiter, ParserCache and ValidationCache: a
    refusal must come before parsing or validation runs, not after.
    """

    def __init__(self, limits: DocumentLimits) -> None:
        self.limits = limits
        self.refusal: GraphQLError | None = None

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        query = context.query or ""
        self.refusal = request_problem(
            query, context.variables, context.operation_name, self.limits
        )
        if self.refusal is None:
            try:
                parsed = parse_document(query, self.limits)
            except GraphQLError as error:
                self.refusal = error
            else:
                context.graphql_document = parsed.document
                self.refusal = variables_problem(context.variables, parsed)
        if self.refusal is not None:
            context.graphql_document = _refused_document(context.operation_name)
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        if self.refusal is not None:
            context.pre_execution_errors = [self.refusal]
        else:
            assert context.graphql_document is not None
            context.pre_execution_errors = validate_document(
                context.schema._schema,
                context.graphql_document,
                tuple(context.validation_rules),
            )
        yield
