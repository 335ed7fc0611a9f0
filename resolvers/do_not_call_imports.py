"""Bulk import of Do-Not-Call numbers: national and internal lists of any size.

A file is a plain list (one number a line, no header) or a CSV whose header has a phone
column, with optional scope, reason and expires_at columns that override the import's
own. It is read in batches on a worker thread, as prospect CSVs are (resolvers/import_files.py
supplies the reading, batching and transaction pieces), each batch COPYed into a TEMP
staging table and merged into do_not_call set-wise, all in one transaction: the list
lands whole or not at all, and memory holds a batch or two whatever the file's size.

Every data row ends in exactly one count: added, already listed, a duplicate in the
file, or an error. A number already listed stays listed with its entry as it is, except
that an entry expiring before the import's expiry (or, when the import has none, at any
time) takes the import's: expiries move later, never earlier.
"""

from __future__ import annotations

import io
import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import asyncpg

from resolvers.auth import Actor
from resolvers.errors import BadUserInput
from resolvers.import_files import (
    BATCH_ROWS,
    PHONE_HEADERS,
    Connection,
    ImportReportBase,
    PhoneRows,
    RowError,
    check_csv_text,
    clean_cell,
    csv_records,
    header_key,
    import_transactions,
    map_columns,
    read_ahead,
    read_first_line,
    read_header,
    split_first_line,
)
from resolvers.limits import MAX_DO_NOT_CALL_REASON_LENGTH, MAX_DO_NOT_CALL_SCOPE_LENGTH
from sql.queries import QUERIES

# The columns a Do-Not-Call CSV may have, and the headers each is found under (compared
# as prospect CSV headers are): phones under the same names as in a prospect CSV.
DO_NOT_CALL_ALIASES: dict[str, tuple[str, ...]] = {
    "phone": PHONE_HEADERS,
    "scope": ("scope", "list", "list_name"),
    "reason": ("reason", "comment", "note", "notes"),
    "expires_at": (
        "expires_at",
        "expires",
        "expires_on",
        "expiry",
        "expiry_date",
        "expiration",
        "expiration_date",
    ),
}
STAGING_COLUMNS = ("row_number", "phone", "scope", "reason", "expires_at")
StagedNumber = tuple[int, str, str | None, str | None, datetime | None]
_EXPIRY_EXAMPLE = "ISO 8601, e.g. 2027-01-31 or 2027-01-31T18:00:00+01:00"


def parse_expiry(text: str) -> datetime | None:
    """An ISO 8601 date or time, or None when text is not one. A date alone is midnight,
    and a time without an offset is UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _text_problem(value: str, limit: int) -> bool:
    return len(value) > limit or "\x00" in value


@dataclass(frozen=True)
class DoNotCallImportOptions:
    """The import's scope, reason and expiry (a row's own cells override them)."""

    scope: str | None = None
    reason: str | None = None
    expires_at: datetime | None = None
    dry_run: bool = False
    region: str = "US"
    batch_rows: int = BATCH_ROWS

    def checked(self, now: datetime) -> DoNotCallImportOptions:
        """These options with empty texts as None and a zone on the expiry; BAD_USER_INPUT
        when a value could never be listed."""
        scope = clean_cell(self.scope) if self.scope is not None else None
        reason = clean_cell(self.reason) if self.reason is not None else None
        if scope is not None and _text_problem(scope, MAX_DO_NOT_CALL_SCOPE_LENGTH):
            raise BadUserInput(
                f"scope must be at most {MAX_DO_NOT_CALL_SCOPE_LENGTH} characters of text",
                field="scope",
            )
        if reason is not None and _text_problem(reason, MAX_DO_NOT_CALL_REASON_LENGTH):
            raise BadUserInput(
                f"reason must be at most {MAX_DO_NOT_CALL_REASON_LENGTH} characters of text",
                field="reason",
            )
        expires_at = self.expires_at
        if expires_at is not None:
            if expires_at.tzinfo is None:
                expires_at = expires_at.replace(tzinfo=UTC)
            if expires_at <= now:
                raise BadUserInput("expiresAt must be in the future", field="expiresAt")
        return replace(self, scope=scope, reason=reason, expires_at=expires_at)


@dataclass(kw_only=True)
class DoNotCallImportReport(ImportReportBase):
    """What a Do-Not-Call import did (or, in a dry run, would do). added + already_listed +
    duplicates_in_file + errors = rows; extended counts among already_listed."""

    COUNTS = ("added", "already_listed", "extended", "duplicates_in_file", "errors")

    plain_list: bool = False
    added: int = 0
    already_listed: int = 0
    extended: int = 0

    def heading(self) -> str:
        """The file's shape."""
        return "a plain list of numbers" if self.plain_list else "CSV"


def _is_plain_list(first: str) -> bool:
    """Whether a file whose first line this is lists numbers without a header: one cell
    that is no phone header and has a digit in it (a header would have none)."""
    cells = split_first_line(first)
    return (
        len(cells) == 1
        and header_key(cells[0]) not in DO_NOT_CALL_ALIASES["phone"]
        and any(ch.isdigit() for ch in cells[0])
    )


class DoNotCallRows(PhoneRows[StagedNumber]):
    """The numbers of a Do-Not-Call file, checked, normalized and ready for COPY."""

    def __init__(
        self,
        source: Iterable[str],
        *,
        options: DoNotCallImportOptions,
        now: datetime,
        on_error: Callable[[RowError], object],
    ) -> None:
        first, lines = read_first_line(
            source, "The file is empty: it needs a number, or a header with a phone column"
        )
        self.plain_list = _is_plain_list(first)
        records: Iterator[list[str]]
        if self.plain_list:
            records = ([line.strip()] for line in itertools.chain([first], lines))
            headers = None
            columns: dict[str, list[int]] = {"phone": [0]}
        else:
            records = csv_records(first, lines, None)
            headers = read_header(records)
            columns = map_columns(headers, {}, DO_NOT_CALL_ALIASES)
        super().__init__(
            records, headers=headers, columns=columns, region=options.region, on_error=on_error
        )
        self._options = options
        self._now = now
        self._scope = self._first_index("scope")
        self._reason = self._first_index("reason")
        self._expires_at = self._first_index("expires_at")

    def _cell(self, record: list[str], index: int | None) -> str | None:
        return clean_cell(record[index]) if index is not None else None

    def _stage(self, record: list[str]) -> StagedNumber | None:
        normalized = self._phone(record)
        if normalized is None:
            return None
        scope = self._cell(record, self._scope)
        if scope is not None and _text_problem(scope, MAX_DO_NOT_CALL_SCOPE_LENGTH):
            self._fail(
                f"scope must be at most {MAX_DO_NOT_CALL_SCOPE_LENGTH} characters of text", "scope"
            )
            return None
        reason = self._cell(record, self._reason)
        if reason is not None and _text_problem(reason, MAX_DO_NOT_CALL_REASON_LENGTH):
            self._fail(
                f"reason must be at most {MAX_DO_NOT_CALL_REASON_LENGTH} characters of text",
                "reason",
            )
            return None
        expires_at = self._options.expires_at
        given = self._cell(record, self._expires_at)
        if given is not None:
            expires_at = parse_expiry(given)
            if expires_at is None:
                self._fail(
                    f"expires_at {given[:64]!r} is not a date or time ({_EXPIRY_EXAMPLE})",
                    "expires_at",
                )
                return None
            if expires_at <= self._now:
                self._fail(f"expires_at {given[:64]!r} is not in the future", "expires_at")
                return None
        return (
            self.row,
            normalized[0],
            scope or self._options.scope,
            reason or self._options.reason,
            expires_at,
        )


async def import_do_not_call(
    connection: Connection,
    source: Iterable[str],
    options: DoNotCallImportOptions,
    *,
    actor: Actor | None = None,
    on_error: Callable[[RowError], object] | None = None,
    on_progress: Callable[[int, bool], None] | None = None,
) -> DoNotCallImportReport:
    """List the numbers of a file on the Do-Not-Call registry, in one transaction; nothing
    is written in a dry run. The entries added record actor (None: the command line).

    on_error sees every row error (the report keeps the first MAX_LISTED_ERRORS rows');
    on_progress gets the data rows read so far after each batch, and once more with True
    when the whole file is merged and the transaction is about to commit.
    """
    started = time.perf_counter()
    now = datetime.now(UTC)
    options = options.checked(now)
    report = DoNotCallImportReport(dry_run=options.dry_run)
    record_error = report.error_recorder(on_error)
    added_by = actor.id if actor is not None else None
    async with import_transactions([connection], actor=actor, dry_run=options.dry_run):
        await connection.execute(QUERIES["create_do_not_call_staging"])
        await connection.execute(QUERIES["create_import_seen"])
        rows = DoNotCallRows(source, options=options, now=now, on_error=record_error)
        report.plain_list = rows.plain_list
        report.columns = rows.column_names()
        report.ignored_columns = rows.ignored
        staged = unique = 0
        async for batch in read_ahead(lambda: rows.next_batch(options.batch_rows)):
            await connection.copy_records_to_table(
                "do_not_call_staging",
                records=batch,
                columns=STAGING_COLUMNS,
                schema_name="pg_temp",
            )
            unique += await connection.fetchval(QUERIES["keep_new_do_not_call_rows"])
            if options.dry_run:
                preview = await connection.fetchrow(QUERIES["preview_do_not_call_chunk"])
                assert preview is not None
                report.added += preview["added"]
                report.extended += preview["extended"]
            else:
                report.added += await connection.fetchval(
                    QUERIES["insert_imported_do_not_call"], added_by
                )
                report.extended += await connection.fetchval(QUERIES["extend_imported_do_not_call"])
            await connection.execute(QUERIES["clear_do_not_call_staging"])
            staged += len(batch)
            if on_progress is not None:
                on_progress(rows.rows, False)
        report.rows = rows.rows
        report.duplicates_in_file = staged - unique
        report.already_listed = unique - report.added
        if on_progress is not None:
            on_progress(rows.rows, True)
        report.finish()
    report.seconds = time.perf_counter() - started
    return report


async def import_do_not_call_text(
    pool: asyncpg.Pool, actor: Actor, text: str, options: DoNotCallImportOptions
) -> DoNotCallImportReport:
    """The importDoNotCall mutation: the file given as text, at most MAX_CSV_BYTES."""
    check_csv_text(text)
    # One connection: a request leaves the rest of the pool to the floor.
    async with pool.acquire() as connection:
        return await import_do_not_call(
            connection, io.StringIO(text, newline=""), options, actor=actor
        )
