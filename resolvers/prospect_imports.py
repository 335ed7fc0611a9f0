"""Bulk import of prospects from CSV: streamed in batches, COPYed into staging tables,
merged with one statement per connection.

The file is read in batches on a worker thread while the previous batch is being copied,
so memory holds a batch or two whatever the file's size. Rows are split by phone over
one or more connections; each stages its share in a TEMP table and merges it in one
statement, all at the same time. Every data row ends in exactly one count: inserted,
updated, skipped, duplicates in the file, or errors.

The file reading, batching, transactions and report they share with the Do-Not-Call
import are in resolvers/import_files.py.
"""

from __future__ import annotations

import asyncio
import io
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar, cast

import asyncpg
from asyncpg.pgproto.pgproto import UUID

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
    import_transactions,
    loose_key,
    map_columns,
    read_ahead,
    read_first_line,
    read_header,
)
from resolvers.limits import (
    EMAIL_PATTERN,
    MAX_COMPANY_LENGTH,
    MAX_EMAIL_LENGTH,
    MAX_PRIORITY,
    MAX_PROSPECT_NAME_LENGTH,
    MIN_PRIORITY,
)
from sql.queries import QUERIES

MODES = ("skip", "update", "report")
STAGING_COLUMNS = (
    "row_number",
    "name",
    "phone",
    "email",
    "company",
    "status",
    "time_zone",
    "priority",
    "phone_zones",
    "id",
)

# The fields a column can feed, and the headers each is found under by default. Headers
# are compared lower-cased, with every run of other characters read as "_".
FIELDS = (
    "name",
    "first_name",
    "last_name",
    "phone",
    "email",
    "company",
    "status",
    "time_zone",
    "priority",
)
HEADER_ALIASES: dict[str, tuple[str, ...]] = {
    "name": ("name", "full_name", "fullname", "contact", "contact_name", "prospect", "lead"),
    "first_name": ("first_name", "firstname", "first", "given_name", "forename"),
    "last_name": ("last_name", "lastname", "last", "surname", "family_name"),
    "phone": PHONE_HEADERS,
    "email": ("email", "e_mail", "email_address"),
    "company": ("company", "company_name", "organization", "organisation", "business", "account"),
    "status": ("status", "lead_status", "stage"),
    "time_zone": ("time_zone", "timezone", "tz"),
    "priority": ("priority",),
}


@dataclass(kw_only=True)
class ImportReport(ImportReportBase):
    """What a prospect import did (or, in a dry run, would do)."""

    COUNTS = ("inserted", "updated", "skipped", "duplicates_in_file", "errors")

    mode: str
    inserted: int = 0
    updated: int = 0
    skipped: int = 0
    # Phones normalized by the fast path for E.164 and North American numbers.
    fast_phones: int = 0

    def heading(self) -> str:
        """The mode."""
        return f"mode {self.mode}"


# ---------------------------------------------------------------------------------------
# Reading the CSV.


def time_ordered_ids() -> Iterator[UUID]:
    """Ids for the prospects an import adds: UUIDv7 (RFC 9562) with a counter.

    Each id holds the millisecond it was made (the clock is read once per
    _IDS_PER_CLOCK_READ ids), 12 random bits drawn once per import, and a 62-bit counter
    that starts at a random value below 2**61 and goes up by one an id (section 6.2,
    method 1, in rand_b). So an import's ids are unique, sort in the order they were made,
    and the indexes that end in the id take new rows at one end. Made here rather than by
    uuidv7() in the merge: the server reads its random source once per id, ~11 µs a row
    in a build without OpenSSL; this is ~0.4 µs."""
    counter = secrets.randbits(61)
    random_a = secrets.randbits(12)
    while True:
        milliseconds = time.time_ns() // 1_000_000 & _MS_MASK
        # The version (7) and the variant (0b10) in their places.
        high = milliseconds << 80 | 0x7 << 76 | random_a << 64 | 0b10 << 62
        for _ in range(_IDS_PER_CLOCK_READ):
            counter += 1
            yield UUID((high | counter).to_bytes(16))


_MS_MASK = (1 << 48) - 1
_IDS_PER_CLOCK_READ = 1000

StagedRow = tuple[
    int,
    str | None,
    str,
    str | None,
    str | None,
    str | None,
    str | None,
    int | None,
    str,
    UUID,
]


class CsvRows(PhoneRows[StagedRow]):
    """The data rows of a prospects CSV, validated and normalized, in batches for COPY.

    Rows are checked against the limits of the prospects table's constraints, so the merge
    never fails on a row: a bad row is a row error, and the rest of the file goes in.
    """

    def __init__(
        self,
        source: Iterable[str],
        *,
        region: str,
        statuses: Iterable[str],
        time_zones: Iterable[str] = (),
        columns: Mapping[str, str] | None = None,
        delimiter: str | None = None,
        on_error: Callable[[RowError], object],
    ) -> None:
        first, lines = read_first_line(source, "The CSV is empty: it needs a header row")
        records = csv_records(first, lines, delimiter)
        headers = read_header(records)
        super().__init__(
            records,
            headers=headers,
            columns=map_columns(headers, columns or {}, HEADER_ALIASES),
            region=region,
            on_error=on_error,
        )
        self._name = self._first_index("name")
        self._first_name = self._first_index("first_name")
        self._last_name = self._first_index("last_name")
        self._email = self._first_index("email")
        self._company = self._first_index("company")
        self._status = self._first_index("status")
        self._time_zone = self._first_index("time_zone")
        self._priority = self._first_index("priority")
        self._time_zones = {zone.casefold(): zone for zone in time_zones}
        self._ids = time_ordered_ids()
        # Looked up as written first (the usual case), then loosely.
        self._statuses: dict[str, str] = {}
        for status in statuses:
            self._statuses.setdefault(status, status)
            self._statuses.setdefault(loose_key(status), status)

    def _stage(self, record: list[str]) -> StagedRow | None:
        normalized = self._phone(record)
        if normalized is None:
            return None
        phone, phone_zones = normalized

        name = clean_cell(record[self._name]) if self._name is not None else None
        if name is None and (self._first_name is not None or self._last_name is not None):
            first = record[self._first_name].strip() if self._first_name is not None else ""
            last = record[self._last_name].strip() if self._last_name is not None else ""
            name = f"{first} {last}".strip() or None
        if name is not None and (len(name) > MAX_PROSPECT_NAME_LENGTH or "\x00" in name):
            self._fail(f"name must be 1 to {MAX_PROSPECT_NAME_LENGTH} characters of text", "name")
            return None

        email = clean_cell(record[self._email]) if self._email is not None else None
        if email is not None and (
            len(email) > MAX_EMAIL_LENGTH or "\x00" in email or not EMAIL_PATTERN.fullmatch(email)
        ):
            self._fail(f"email {email[:100]!r} is not a valid address", "email")
            return None

        company = clean_cell(record[self._company]) if self._company is not None else None
        if company is not None and (len(company) > MAX_COMPANY_LENGTH or "\x00" in company):
            self._fail(
                f"company must be at most {MAX_COMPANY_LENGTH} characters of text", "company"
            )
            return None

        status: str | None = None
        if self._status is not None and (given := record[self._status].strip()):
            status = self._statuses.get(given) or self._statuses.get(loose_key(given))
            if status is None:
                self._fail(f"unknown status {given[:64]!r}", "status")
                return None

        time_zone: str | None = None
        if self._time_zone is not None and (given := record[self._time_zone].strip()):
            time_zone = self._time_zones.get(given.casefold())
            if time_zone is None:
                self._fail(
                    f"unknown time zone {given[:64]!r} (IANA names, e.g. Europe/Paris)", "time_zone"
                )
                return None

        priority: int | None = None
        if self._priority is not None and (given := record[self._priority].strip()):
            try:
                priority = int(given)
            except ValueError:
                priority = None
            if priority is None or not MIN_PRIORITY <= priority <= MAX_PRIORITY:
                self._fail(
                    f"priority must be a whole number from {MIN_PRIORITY} to {MAX_PRIORITY}",
                    "priority",
                )
                return None
        return (
            self.row,
            name,
            phone,
            email,
            company,
            status,
            time_zone,
            priority,
            " ".join(phone_zones),  # split again by the merge (see migration 014)
            next(self._ids),
        )


# ---------------------------------------------------------------------------------------
# Staging and merging.


@dataclass(frozen=True)
class CsvImportOptions:
    """How to read and merge a CSV."""

    mode: str = "skip"
    dry_run: bool = False
    region: str = "US"
    columns: Mapping[str, str] | None = None
    delimiter: str | None = None
    batch_rows: int = BATCH_ROWS


Partitions = list[list[StagedRow]]
T = TypeVar("T")


def _partition(batch: list[StagedRow], parts: int) -> Partitions:
    """Rows split by phone, so that every row of one phone goes to the same connection."""
    if parts == 1:
        return [batch]
    split: Partitions = [[] for _ in range(parts)]
    for row in batch:
        split[hash(row[2]) % parts].append(row)
    return split


async def _all(work: Iterable[Awaitable[T]]) -> list[T]:
    """Run concurrently, one per connection; wait for all before raising the first error,
    so no connection is still busy when the transactions roll back."""
    results = await asyncio.gather(*work, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return cast(list[T], results)


@dataclass
class _Merged:
    unique: int = 0
    inserted: int = 0
    updated: int = 0
    unwritable: int = 0

    def add(self, other: _Merged) -> None:
        self.unique += other.unique
        self.inserted += other.inserted
        self.updated += other.updated
        self.unwritable += other.unwritable


async def _merge_chunk(
    connection: Connection,
    rows: list[StagedRow],
    options: CsvImportOptions,
    record_error: Callable[[RowError], None],
) -> _Merged:
    """Stage one chunk with COPY, report what will not be written, then merge it (or, in a
    dry run, count what a merge would do)."""
    await connection.copy_records_to_table(
        "import_staging", records=rows, columns=STAGING_COLUMNS, schema_name="pg_temp"
    )
    unwritable = await _list_unwritable_rows(connection, options.mode, record_error)
    if options.dry_run:
        preview = await connection.fetchrow(QUERIES["preview_import_chunk"])
        assert preview is not None
        changed = preview["changed"] if options.mode == "update" else 0
        merged = _Merged(preview["unique_phones"], preview["inserted"], changed, unwritable)
    else:
        row = await connection.fetchrow(QUERIES["merge_import_chunk"], options.mode == "update")
        assert row is not None
        merged = _Merged(row["unique_phones"], row["inserted"], row["updated"], unwritable)
    await connection.execute(QUERIES["clear_import_staging"])
    return merged


async def import_csv(
    connections: Sequence[Connection],
    source: Iterable[str],
    options: CsvImportOptions,
    *,
    actor: Actor | None = None,
    on_error: Callable[[RowError], object] | None = None,
    on_progress: Callable[[int, bool], None] | None = None,
) -> ImportReport:
    """Import prospects from CSV lines; nothing is written in a dry run.

    Chunks of rows are merged as they are read, while a worker thread reads the next
    chunk: PostgreSQL inserting rows and Python reading them work at the same time.
    Rows are split by phone over the connections, each merging its share in its own
    transaction, in parallel: PostgreSQL checks and indexes an inserted row on one core,
    and that is most of an import's time. The transactions commit together once every
    chunk has merged; if any fails, all roll back.

    on_error sees every row error (the report keeps the first MAX_LISTED_ERRORS rows');
    on_progress gets the data rows read so far after each chunk, and once more with True
    when the whole file is merged and the transactions are about to commit.
    """
    if options.mode not in MODES:
        raise BadUserInput(f"mode must be one of {', '.join(MODES)}", field="mode")
    started = time.perf_counter()
    report = ImportReport(mode=options.mode, dry_run=options.dry_run)
    record_error = report.error_recorder(on_error)

    async with import_transactions(connections, actor=actor, dry_run=options.dry_run):
        for connection in connections:
            await connection.execute(QUERIES["create_import_staging"])
            await connection.execute(QUERIES["create_import_seen"])
        first = connections[0]
        statuses = [r["name"] for r in await first.fetch(QUERIES["known_statuses"])]
        zones = [r["name"] for r in await first.fetch(QUERIES["known_time_zones"])]
        rows = CsvRows(
            source,
            region=options.region,
            statuses=statuses,
            time_zones=zones,
            columns=options.columns,
            delimiter=options.delimiter,
            on_error=record_error,
        )
        report.columns = rows.column_names()
        report.ignored_columns = rows.ignored
        parts = len(connections)

        def read() -> Partitions:
            batch = rows.next_batch(options.batch_rows)
            return _partition(batch, parts) if batch else []

        staged = 0
        total = _Merged()
        async for partitions in read_ahead(read):
            for merged in await _all(
                _merge_chunk(connection, part, options, record_error)
                for connection, part in zip(connections, partitions, strict=True)
                if part
            ):
                total.add(merged)
            staged += sum(len(part) for part in partitions)
            if on_progress is not None:
                on_progress(rows.rows, False)
        report.rows = rows.rows
        report.fast_phones = rows.phones.fast
        if on_progress is not None:
            on_progress(rows.rows, True)
        # Row errors were counted as they were found; each phone new to the file that was
        # neither written nor listed as unwritable was skipped.
        report.inserted, report.updated = total.inserted, total.updated
        report.duplicates_in_file = staged - total.unique
        report.skipped = total.unique - total.inserted - total.updated - total.unwritable
        assert report.skipped >= 0, "staged rows went missing: is import_staging a temp table?"
        report.finish()
    report.seconds = time.perf_counter() - started
    return report


async def _list_unwritable_rows(
    connection: Connection, mode: str, record_error: Callable[[RowError], None]
) -> int:
    """Report staged rows the merge will not write; returns how many."""
    count = 0
    report_existing = mode == "report"
    if not report_existing and not await connection.fetchval(
        QUERIES["import_staging_has_nameless_rows"]
    ):
        return 0  # the usual case, without sorting the whole file once more
    query = QUERIES["import_chunk_issues"]
    async for issue in connection.cursor(query, report_existing, prefetch=10_000):
        count += 1
        if issue["prospect_id"] is None:
            record_error(
                RowError(issue["row_number"], "name is missing for a new prospect", "name")
            )
        else:
            record_error(
                RowError(
                    issue["row_number"],
                    f"phone {issue['phone']} already belongs to prospect {issue['prospect_id']}",
                    "phone",
                )
            )
    return count


async def import_prospects_text(
    pool: asyncpg.Pool, actor: Actor, text: str, options: CsvImportOptions
) -> ImportReport:
    """The importProspects mutation: CSV given as text, at most MAX_CSV_BYTES."""
    check_csv_text(text)
    # One connection: a request leaves the rest of the pool to the floor.
    async with pool.acquire() as connection:
        return await import_csv([connection], io.StringIO(text, newline=""), options, actor=actor)
