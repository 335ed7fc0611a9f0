"""Domain errors: expected failures that reach the client with a code."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import asyncpg

from resolvers.limits import (
    MAX_COMPANY_LENGTH,
    MAX_DO_NOT_CALL_REASON_LENGTH,
    MAX_DO_NOT_CALL_SCOPE_LENGTH,
    MAX_DURATION_SECONDS,
    MAX_NOTES_LENGTH,
    MAX_PRIORITY,
    MAX_PROSPECT_NAME_LENGTH,
    MAX_RECORDING_URL_LENGTH,
    MAX_USER_NAME_LENGTH,
    MIN_DURATION_SECONDS,
    MIN_PRIORITY,
)

# SQLSTATE raised by raise_domain_error() in sql/migrations; HINT carries the code.
DOMAIN_SQLSTATE = "CF000"


class DomainError(Exception):
    """An expected failure; `code` reaches the client as extensions.code."""

    code = "BAD_USER_INPUT"
    http_status = 422

    def __init__(self, message: str, **extensions: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extensions = {key: value for key, value in extensions.items() if value is not None}


class BadUserInput(DomainError):
    """The input is malformed or out of range."""

    code = "BAD_USER_INPUT"
    http_status = 422


class Unauthenticated(DomainError):
    """No valid bearer token."""

    code = "UNAUTHENTICATED"
    http_status = 401


class Forbidden(DomainError):
    """Signed in, but the role does not allow this."""

    code = "FORBIDDEN"
    http_status = 403


class NotFound(DomainError):
    """The record does not exist."""

    code = "NOT_FOUND"
    http_status = 404


class Conflict(DomainError):
    """The write collides with existing data (e.g. a duplicate phone)."""

    code = "CONFLICT"
    http_status = 409


class TooManyRequests(DomainError):
    """Throttled, e.g. after repeated failed logins."""

    code = "TOO_MANY_REQUESTS"
    http_status = 429


class CallRuleRefusal(DomainError):
    """A call rule refused the call (ALREADY_IN_CALL, RECENTLY_CALLED, ...)."""

    http_status = 409

    def __init__(self, code: str, message: str, **extensions: Any) -> None:
        super().__init__(message, **extensions)
        self.code = code


# Named constraints mapped to what the client should hear.
_CONSTRAINTS: dict[str, tuple[type[DomainError], str, str | None]] = {
    "prospects_phone_key": (Conflict, "A prospect with this phone number already exists", "phone"),
    "users_email_key": (Conflict, "A user with this email already exists", "email"),
    "prospects_status_fkey": (BadUserInput, "Unknown status", "status"),
    "dispositions_sets_status_fkey": (BadUserInput, "Unknown status", "setsStatus"),
    "do_not_call_scope_length": (
        BadUserInput,
        f"Scope must be at most {MAX_DO_NOT_CALL_SCOPE_LENGTH} characters",
        "scope",
    ),
    "do_not_call_reason_length": (
        BadUserInput,
        f"Reason must be at most {MAX_DO_NOT_CALL_REASON_LENGTH} characters",
        "reason",
    ),
    "do_not_call_removal_reason_length": (
        BadUserInput,
        f"Reason must be at most {MAX_DO_NOT_CALL_REASON_LENGTH} characters",
        "reason",
    ),
    "prospects_name_length": (
        BadUserInput,
        f"Name must be 1 to {MAX_PROSPECT_NAME_LENGTH} characters",
        "name",
    ),
    "prospects_email_format": (BadUserInput, "Email is not a valid address", "email"),
    "prospects_company_length": (
        BadUserInput,
        f"Company must be at most {MAX_COMPANY_LENGTH} characters",
        "company",
    ),
    "prospects_priority_range": (
        BadUserInput,
        f"Priority must be between {MIN_PRIORITY} and {MAX_PRIORITY}",
        "priority",
    ),
    "prospects_phone_e164": (BadUserInput, "Phone must be in E.164 form", "phone"),
    "users_email_format": (BadUserInput, "Email is not a valid address", "email"),
    "users_name_length": (
        BadUserInput,
        f"Name must be at most {MAX_USER_NAME_LENGTH} characters",
        "name",
    ),
    "users_role_known": (BadUserInput, "Role must be agent, manager or admin", "role"),
    "call_logs_notes_length": (
        BadUserInput,
        f"Notes must be at most {MAX_NOTES_LENGTH} characters",
        "notes",
    ),
    "call_logs_recording_url_length": (
        BadUserInput,
        f"Recording URL must be at most {MAX_RECORDING_URL_LENGTH} characters",
        "recordingUrl",
    ),
    "call_logs_duration_range": (
        BadUserInput,
        f"Duration must be between {MIN_DURATION_SECONDS} and {MAX_DURATION_SECONDS} seconds",
        "duration",
    ),
}

# The one list of what the dialing rules call their refusals and the reasons nextLead
# counts (call_eligibility(), end_call(), held_back_shared() in sql/functions): the server
# answers each with its code and HTTP 409. tests/test_error_codes.py checks it against
# every code the SQL can name.
RULE_CODES = (
    "PROSPECT_ERASED",
    "ALREADY_IN_CALL",
    "DO_NOT_CALL",
    "RECENTLY_CALLED",
    "OUTSIDE_CALLING_HOURS",
    "MAX_ATTEMPTS_REACHED",
    "ASSIGNED_TO_OTHER_AGENT",
    "CALLBACK_RESERVED",
    "PROSPECT_CLOSED",
    "RECYCLE_DELAY",
    "CALLBACK_NOT_DUE",
    "CALLBACK_PENDING",
    "CALL_NOT_ACTIVE",
)
# The other codes the database may raise, by the error class that carries them.
ERROR_CLASSES: dict[str, type[DomainError]] = {
    cls.code: cls for cls in (BadUserInput, Unauthenticated, Forbidden, NotFound, Conflict)
}


def domain_error_from_code(code: str, message: str, **extensions: Any) -> DomainError:
    """The DomainError for a code named by the database."""
    if code in RULE_CODES:
        return CallRuleRefusal(code, message, **extensions)
    return ERROR_CLASSES.get(code, BadUserInput)(message, **extensions)


def translate_database_error(error: asyncpg.PostgresError) -> DomainError | None:
    """The DomainError a database error stands for, or None when it is unexpected."""
    if error.sqlstate == DOMAIN_SQLSTATE:
        detail = getattr(error, "detail", None)
        extensions = json.loads(detail) if detail else {}
        return domain_error_from_code(
            getattr(error, "hint", None) or "BAD_USER_INPUT", error.args[0], **extensions
        )
    constraint = getattr(error, "constraint_name", None)
    if constraint in _CONSTRAINTS:
        cls, message, field = _CONSTRAINTS[constraint]
        return cls(message, field=field)
    if isinstance(error, asyncpg.DataError):
        return BadUserInput("Invalid value")
    return None


@contextmanager
def database_errors() -> Iterator[None]:
    """Re-raise expected database errors as DomainErrors; let the rest through."""
    try:
        yield
    except asyncpg.PostgresError as error:
        domain_error = translate_database_error(error)
        if domain_error is None:
            raise
        raise domain_error from error


def parse_id(value: str, field: str = "id") -> UUID:
    """A UUID from client input, or BAD_USER_INPUT naming the field."""
    try:
        return UUID(str(value))
    except ValueError:
        raise BadUserInput(f"{field} is not a valid ID", field=field) from None
