"""Python's input limits and the database's constraints agree, boundary by boundary.

resolvers/limits.py mirrors named constraints so that a bad value is refused early, with
the field it concerns. Each test writes the limit itself (the database must take it) and
one past it (the named constraint must refuse it) into the real migrated schema, so a
limit changed on one side only fails here. Every write is rolled back.

The same goes for the defaults settings.py and the SQL functions share: the re-call gap
and a call's lease, when a connection carries no app.* settings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest

from resolvers import limits
from settings import DEFAULT_ACTIVE_CALL_TIMEOUT_SECONDS, DEFAULT_MIN_CALL_INTERVAL_SECONDS


@dataclass(frozen=True)
class Boundary:
    """A limit of resolvers/limits.py, written at and one past it into a checked column."""

    constant: str
    statement: str
    accepted: object
    refused: object
    constraint: str


def text_of(length: int) -> str:
    """A text of exactly length characters."""
    return "x" * length


def email_of(length: int) -> str:
    """A well-formed email address of exactly length characters."""
    return "x" * (length - len("@example.com")) + "@example.com"


BOUNDARIES = [
    Boundary(
        "MAX_PROSPECT_NAME_LENGTH",
        "UPDATE prospects SET name = $1",
        text_of(limits.MAX_PROSPECT_NAME_LENGTH),
        text_of(limits.MAX_PROSPECT_NAME_LENGTH + 1),
        "prospects_name_length",
    ),
    Boundary(
        "MAX_USER_NAME_LENGTH",
        "UPDATE users SET name = $1",
        text_of(limits.MAX_USER_NAME_LENGTH),
        text_of(limits.MAX_USER_NAME_LENGTH + 1),
        "users_name_length",
    ),
    Boundary(
        "MAX_EMAIL_LENGTH",
        "UPDATE prospects SET email = $1",
        email_of(limits.MAX_EMAIL_LENGTH),
        email_of(limits.MAX_EMAIL_LENGTH + 1),
        "prospects_email_format",
    ),
    Boundary(
        "MAX_EMAIL_LENGTH",
        "UPDATE users SET email = $1",
        email_of(limits.MAX_EMAIL_LENGTH),
        email_of(limits.MAX_EMAIL_LENGTH + 1),
        "users_email_format",
    ),
    Boundary(
        "MAX_COMPANY_LENGTH",
        "UPDATE prospects SET company = $1",
        text_of(limits.MAX_COMPANY_LENGTH),
        text_of(limits.MAX_COMPANY_LENGTH + 1),
        "prospects_company_length",
    ),
    Boundary(
        "MIN_PRIORITY",
        "UPDATE prospects SET priority = $1",
        limits.MIN_PRIORITY,
        limits.MIN_PRIORITY - 1,
        "prospects_priority_range",
    ),
    Boundary(
        "MAX_PRIORITY",
        "UPDATE prospects SET priority = $1",
        limits.MAX_PRIORITY,
        limits.MAX_PRIORITY + 1,
        "prospects_priority_range",
    ),
    Boundary(
        "MAX_NOTES_LENGTH",
        "UPDATE call_logs SET notes = $1",
        text_of(limits.MAX_NOTES_LENGTH),
        text_of(limits.MAX_NOTES_LENGTH + 1),
        "call_logs_notes_length",
    ),
    Boundary(
        "MAX_RECORDING_URL_LENGTH",
        "UPDATE call_logs SET recording_url = $1",
        "https://" + text_of(limits.MAX_RECORDING_URL_LENGTH - len("https://")),
        "https://" + text_of(limits.MAX_RECORDING_URL_LENGTH + 1 - len("https://")),
        "call_logs_recording_url_length",
    ),
    Boundary(
        "MIN_DURATION_SECONDS",
        "UPDATE call_logs SET duration = $1",
        limits.MIN_DURATION_SECONDS,
        limits.MIN_DURATION_SECONDS - 1,
        "call_logs_duration_range",
    ),
    Boundary(
        "MAX_DURATION_SECONDS",
        "UPDATE call_logs SET duration = $1",
        limits.MAX_DURATION_SECONDS,
        limits.MAX_DURATION_SECONDS + 1,
        "call_logs_duration_range",
    ),
    Boundary(
        "MAX_DO_NOT_CALL_SCOPE_LENGTH",
        "UPDATE do_not_call SET scope = $1",
        text_of(limits.MAX_DO_NOT_CALL_SCOPE_LENGTH),
        text_of(limits.MAX_DO_NOT_CALL_SCOPE_LENGTH + 1),
        "do_not_call_scope_length",
    ),
    Boundary(
        "MAX_DO_NOT_CALL_REASON_LENGTH",
        "UPDATE do_not_call SET reason = $1",
        text_of(limits.MAX_DO_NOT_CALL_REASON_LENGTH),
        text_of(limits.MAX_DO_NOT_CALL_REASON_LENGTH + 1),
        "do_not_call_reason_length",
    ),
    Boundary(
        "MAX_DO_NOT_CALL_REASON_LENGTH",
        "UPDATE do_not_call SET removal_reason = $1",
        text_of(limits.MAX_DO_NOT_CALL_REASON_LENGTH),
        text_of(limits.MAX_DO_NOT_CALL_REASON_LENGTH + 1),
        "do_not_call_removal_reason_length",
    ),
    Boundary(
        "MIN_WEEKDAY",
        "UPDATE calling_hours SET weekday = $1",
        limits.MIN_WEEKDAY,
        limits.MIN_WEEKDAY - 1,
        "calling_hours_weekday",
    ),
    Boundary(
        "MAX_WEEKDAY",
        "UPDATE calling_hours SET weekday = $1",
        limits.MAX_WEEKDAY,
        limits.MAX_WEEKDAY + 1,
        "calling_hours_weekday",
    ),
    Boundary(
        "MIN_ATTEMPTS",
        "UPDATE dialing_rules SET max_attempts_total = $1",
        limits.MIN_ATTEMPTS,
        limits.MIN_ATTEMPTS - 1,
        "dialing_rules_total_positive",
    ),
    Boundary(
        "MIN_ATTEMPTS",
        "UPDATE dialing_rules SET max_attempts_per_day = $1",
        limits.MIN_ATTEMPTS,
        limits.MIN_ATTEMPTS - 1,
        "dialing_rules_day_positive",
    ),
    Boundary(
        "MIN_ATTEMPTS",
        "UPDATE dialing_rules SET max_attempts_per_number_24h = $1",
        limits.MIN_ATTEMPTS,
        limits.MIN_ATTEMPTS - 1,
        "dialing_rules_number_positive",
    ),
]

# Addresses on both sides of the pattern: Python must judge each as the database does.
EMAILS = [
    "a@b",
    "first.last+tag@example.com",
    "ünïcode@exämple.org",
    "a@b@example.com",
    "@example.com",
    "nobody@",
    "no body@example.com",
    "nobody@exam ple.com",
    "tab\t@example.com",
    "line\n@example.com",
    "nobody.example.com",
]


@pytest.fixture
async def connection(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection in a transaction, rolled back at the end, holding one row of every
    checked table: each UPDATE of a boundary writes exactly one row."""
    async with pool.acquire() as held:
        transaction = held.transaction()
        await transaction.start()
        try:
            user_id = await held.fetchval(
                "INSERT INTO users (email, name, password_hash, role)"
                " VALUES ('limits@test.example', 'Limits', 'not-a-hash', 'agent') RETURNING id"
            )
            prospect_id = await held.fetchval(
                "INSERT INTO prospects (name, phone) VALUES ('Limits', '+12125550100') RETURNING id"
            )
            await held.execute(
                "INSERT INTO call_logs (prospect_id, caller_id, phone_number)"
                " VALUES ($1, $2, '+12125550100')",
                prospect_id,
                user_id,
            )
            await held.execute(
                "INSERT INTO do_not_call (phone, source) VALUES ('+12125550199', 'api')"
            )
            # One weekday left, so moving it to any other collides with no row.
            await held.execute("DELETE FROM calling_hours WHERE weekday <> 3")
            yield held
        finally:
            await transaction.rollback()


async def refusal(connection: asyncpg.Connection, statement: str, value: object) -> str | None:
    """The check constraint that refuses the write, or None when the database takes it.
    The write is undone either way (a savepoint)."""
    savepoint = connection.transaction()
    await savepoint.start()
    try:
        await connection.execute(statement, value)
    except asyncpg.CheckViolationError as error:
        return str(error.constraint_name)
    finally:
        await savepoint.rollback()
    return None


@pytest.mark.parametrize(
    "boundary", BOUNDARIES, ids=[f"{b.constant}-{b.constraint}" for b in BOUNDARIES]
)
async def test_the_database_takes_each_limit_and_refuses_one_past_it(
    connection: asyncpg.Connection, boundary: Boundary
) -> None:
    assert await refusal(connection, boundary.statement, boundary.accepted) is None
    refused_by = await refusal(connection, boundary.statement, boundary.refused)
    assert refused_by == boundary.constraint


@pytest.mark.parametrize(
    ("statement", "constraint"),
    [
        ("UPDATE prospects SET email = $1", "prospects_email_format"),
        ("UPDATE users SET email = $1", "users_email_format"),
    ],
)
async def test_the_email_pattern_judges_addresses_as_the_database_does(
    connection: asyncpg.Connection, statement: str, constraint: str
) -> None:
    for email in EMAILS:
        python_takes = limits.EMAIL_PATTERN.fullmatch(email) is not None
        refused_by = await refusal(connection, statement, email)
        assert refused_by == (None if python_takes else constraint), email


def test_every_limit_is_proved_against_the_database() -> None:
    """A constant added to resolvers/limits.py without a boundary here fails."""
    constants = {name for name in vars(limits) if name.isupper()}
    proved = {boundary.constant for boundary in BOUNDARIES} | {"EMAIL_PATTERN"}
    assert constants == proved


async def test_the_sql_functions_fall_back_to_the_defaults_of_settings(database_url: str) -> None:
    """psql or a hand-written job, connected without the server's app.* settings, gets the
    gap and lease the server would use by default."""
    plain = await asyncpg.connect(database_url)
    try:
        unset = await plain.fetchval(
            "SELECT coalesce(current_setting('app.min_call_interval_seconds', true), '')"
            " || coalesce(current_setting('app.active_call_timeout_seconds', true), '')"
        )
        gap = await plain.fetchval("SELECT extract(epoch FROM min_call_interval())")
        lease = await plain.fetchval("SELECT extract(epoch FROM active_call_timeout())")
    finally:
        await plain.close()
    assert unset == ""
    assert gap == DEFAULT_MIN_CALL_INTERVAL_SECONDS
    assert lease == DEFAULT_ACTIVE_CALL_TIMEOUT_SECONDS
