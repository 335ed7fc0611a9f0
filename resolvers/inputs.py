"""What every value a client sends must be, checked where input enters (the GraphQL
document and variables, the REST bodies) rather than field by field: text without NUL
or unpaired surrogates, and date-times that PostgreSQL and asyncpg can hold."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime

from resolvers.errors import BadUserInput

# NUL: PostgreSQL text cannot hold it. U+D800..U+DFFF: a str decoded from JSON keeps a
# surrogate only when it is unpaired (a pair becomes one code point), and such a string
# cannot be encoded as UTF-8, so bcrypt, asyncpg and the JSON response would all fail.
_NOT_TEXT = re.compile("[\x00\ud800-\udfff]")

# PostgreSQL's timestamptz runs from 4713 BC to 294276 AD, but Python's datetime (and so
# asyncpg) stops at years 1 and 9999 in UTC. A year's margin at each end keeps whatever
# the SQL derives from an input (the next opening of calling hours, the 24 hours before
# it) within range too: "9999-12-31T23:59:59Z" used to come back as a year-10000 row.
EARLIEST_DATE_TIME = datetime(2, 1, 1, tzinfo=UTC)
LATEST_DATE_TIME = datetime(9998, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def text_problem(text: str) -> str | None:
    """Why text cannot be stored or encoded, or None when it is fine."""
    found = _NOT_TEXT.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "must not contain NUL characters"
    return f"is not valid Unicode (an unpaired surrogate, U+{ord(found.group()):04X})"


def check_text(text: str, field: str) -> str:
    """text itself, or BAD_USER_INPUT naming the field."""
    problem = text_problem(text)
    if problem is not None:
        raise BadUserInput(f"{field} {problem}", field=field)
    return text


Path = tuple[str | int, ...]


def strings_in(value: object) -> Iterator[tuple[Path, str]]:
    """Every string in a decoded JSON value, object keys included, with its path.

    Iterative, so a value nested thousands of levels deep cannot exhaust the stack.
    """
    stack: list[tuple[Path, object]] = [((), value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            yield path, item
        elif isinstance(item, dict):
            for key, child in item.items():
                key_text = str(key)
                yield (*path, key_text), key_text
                stack.append(((*path, key_text), child))
        elif isinstance(item, list):
            stack.extend(((*path, index), child) for index, child in enumerate(item))


def field_of(path: Path, default: str) -> str:
    """The innermost object key on a path (the input field a client would name), else default."""
    return next((part for part in reversed(path) if isinstance(part, str)), default)


def check_json_text(value: object, field: str) -> None:
    """BAD_USER_INPUT at the first string in a decoded JSON value that is not text."""
    for path, text in strings_in(value):
        problem = text_problem(text)
        if problem is not None:
            name = field_of(path, field)
            raise BadUserInput(f"{name} {problem}", field=name)


def check_date_time(value: datetime) -> datetime:
    """value itself, or BAD_USER_INPUT when it leaves the range the database can hold once
    converted to UTC (a value without an offset counts as UTC)."""
    try:
        in_utc = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    except OverflowError:
        in_utc = None
    if in_utc is None or not EARLIEST_DATE_TIME <= in_utc <= LATEST_DATE_TIME:
        raise BadUserInput(
            "A date-time must lie between 0002-01-01T00:00:00Z and 9998-12-31T23:59:59Z"
            " once converted to UTC"
        )
    return value
