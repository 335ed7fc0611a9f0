"""Reading the files that bulk imports take: prospect CSVs and Do-Not-Call lists.

What both imports share: a file's first line, its delimiter and header, the mapping of
headers to fields, rows that each carry a phone (checked, normalized and staged for COPY
in batches), reading the next batch on a worker thread while the last one is merged, the
transactions an import runs in, and its report of counts and row errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import heapq
import itertools
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Generic, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from resolvers.auth import Actor
from resolvers.bulk_phones import PhoneNormalizer
from resolvers.errors import BadUserInput
from sql.queries import QUERIES

# Rows read, staged and merged at a time: big enough that per-statement overheads vanish,
# small enough that memory stays flat and the reading of the next chunk overlaps the merge.
BATCH_ROWS = 20_000
# How many row errors a report keeps; the command line can write every one to a file.
MAX_LISTED_ERRORS = 100
# The largest CSV the importProspects mutation takes in its argument.
MAX_CSV_BYTES = 10 * 1024 * 1024
# A connection of its own (the command line) or one borrowed from the server's pool.
Connection = asyncpg.Connection | PoolConnectionProxy
# The headers a phone column is found under by default, in every kind of file. Headers are
# compared lower-cased, with every run of other characters read as "_". Several phone
# columns may be present: a row uses the first non-empty one, in this order.
PHONE_HEADERS = (
    "phone",
    "phone_number",
    "phonenumber",
    "telephone",
    "tel",
    "mobile",
    "mobile_phone",
    "mobile_number",
    "cell",
    "cell_phone",
)


def loose_key(text: str) -> str:
    """A name compared loosely: case, spaces and punctuation ignored ("not_interested")."""
    return re.sub(r"[\W_]+", "", text.casefold())


def header_key(header: str) -> str:
    """A header as the aliases are written: lower case, words joined by '_'."""
    return re.sub(r"[\W_]+", "_", header.strip().casefold()).strip("_")


@dataclass(frozen=True)
class RowError:
    """Why one row was not imported. Rows count as a spreadsheet shows them: header is 1."""

    row: int
    reason: str
    field: str | None = None


@dataclass(kw_only=True)
class ImportReportBase:
    """What a bulk import did (or, in a dry run, would do): rows read, row errors, time.

    Subclasses add their counts and name them in COUNTS, in the order they are printed.
    """

    COUNTS: ClassVar[tuple[str, ...]] = ()

    dry_run: bool
    rows: int = 0
    duplicates_in_file: int = 0
    errors: int = 0
    listed_errors: list[RowError] = field(default_factory=list)
    columns: dict[str, list[str]] = field(default_factory=dict)
    ignored_columns: list[str] = field(default_factory=list)
    seconds: float = 0.0
    _kept: list[tuple[int, int, RowError]] = field(default_factory=list, repr=False)

    def add_error(self, error: RowError) -> None:
        """Count an error; keep it while it is among the MAX_LISTED_ERRORS first rows."""
        self.errors += 1
        # A heap of (-row, order, error): its top is the highest row kept, the one to drop.
        item = (-error.row, self.errors, error)
        if len(self._kept) < MAX_LISTED_ERRORS:
            heapq.heappush(self._kept, item)
        elif item > self._kept[0]:
            heapq.heapreplace(self._kept, item)

    def error_recorder(
        self, on_error: Callable[[RowError], object] | None
    ) -> Callable[[RowError], None]:
        """A callback that counts each error here, then hands it to on_error if given."""

        def record_error(error: RowError) -> None:
            self.add_error(error)
            if on_error is not None:
                on_error(error)

        return record_error

    def finish(self) -> None:
        """Put the kept errors in row order into listed_errors."""
        self.listed_errors = [item[2] for item in sorted(self._kept, key=lambda i: (-i[0], i[1]))]

    def heading(self) -> str:
        """How the import ran, for the report's first line."""
        return ""


# A row staged for COPY, whatever the import.
R = TypeVar("R")
T = TypeVar("T")


def _pick_delimiter(header_line: str) -> str:
    counts = {d: header_line.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > 0 else ","


def clean_cell(value: str) -> str | None:
    """A cell's text without surrounding spaces; None when nothing is left."""
    value = value.strip()
    return value or None


def read_first_line(source: Iterable[str], empty_message: str) -> tuple[str, Iterator[str]]:
    """The first line of a file and the lines after it; BAD_USER_INPUT when it is blank."""
    lines: Iterator[str] = iter(source)
    first = next(lines, "")
    if not first.strip():
        raise BadUserInput(empty_message, field="csv")
    return first, lines


def csv_records(first: str, lines: Iterator[str], delimiter: str | None) -> Iterator[list[str]]:
    """The CSV records from the first line on; the delimiter, unless given, is the one of
    , ; tab | that the first line has most of."""
    return csv.reader(
        itertools.chain([first], lines), delimiter=delimiter or _pick_delimiter(first)
    )


def read_header(records: Iterator[list[str]]) -> list[str]:
    """The header record of a CSV whose first line is not blank."""
    try:
        return next(records)
    except csv.Error as error:
        raise BadUserInput(f"Row 1: the CSV is malformed ({error})", field="csv") from None


def split_first_line(first: str) -> list[str]:
    """The cells of a file's first line, read as csv_records would read them."""
    return next(csv.reader([first], delimiter=_pick_delimiter(first)), [])


def map_columns(
    headers: list[str], chosen: Mapping[str, str], aliases: Mapping[str, tuple[str, ...]]
) -> dict[str, list[int]]:
    """Field -> column indices: the columns chosen by header, then the defaults (aliases,
    whose keys are the fields). Every phone column is kept, the first found of the others."""
    keys = [header_key(h) for h in headers]
    mapping: dict[str, list[int]] = {}
    for name, header in chosen.items():
        if name not in aliases:
            raise BadUserInput(
                f"Unknown field {name!r}; fields are {', '.join(aliases)}", field="columns"
            )
        wanted = header_key(header)
        index = next((i for i, key in enumerate(keys) if key == wanted), None)
        if index is None:
            raise BadUserInput(f"The header has no column {header!r}", field="columns")
        mapping[name] = [index]
    taken = {i for indices in mapping.values() for i in indices}
    for name, names in aliases.items():
        if name in mapping:
            continue
        found = [
            i for alias in names for i, key in enumerate(keys) if key == alias and i not in taken
        ]
        if found:
            mapping[name] = found if name == "phone" else found[:1]
            taken.update(mapping[name])
    if "phone" not in mapping:
        raise BadUserInput(
            "The header has no phone column (phone, phone_number, mobile, ...); "
            f"found {', '.join(repr(h) for h in headers)}",
            field="csv",
        )
    return mapping


class PhoneRows(ABC, Generic[R]):
    """Rows of a file that each carry a phone, checked and staged for COPY in batches.

    The file is a CSV whose header names the columns (fields as map_columns gives them),
    or, without headers, a plain list of phones, one a line. Errors go to on_error with
    the row number; a spreadsheet's row numbers are used, so a header is row 1. Blank
    rows are skipped but keep their number. Several phone columns may be given: a row
    uses the first non-empty one.
    """

    def __init__(
        self,
        records: Iterator[list[str]],
        *,
        headers: list[str] | None,
        columns: dict[str, list[int]],
        region: str,
        on_error: Callable[[RowError], object],
    ) -> None:
        self._records = records
        self.headers = headers or []
        self.columns = columns
        used = {i for indices in columns.values() for i in indices}
        self.ignored = [h for i, h in enumerate(self.headers) if i not in used and h.strip()]
        self._width = len(self.headers) or 1
        self._phones = columns["phone"]
        self._on_error = on_error
        self.phones = PhoneNormalizer(region)
        # The number of the last row read (the header's, if any), and the data rows read.
        self.row = 0 if headers is None else 1
        self.rows = 0

    def column_names(self) -> dict[str, list[str]]:
        """Which headers feed which field (none in a plain list)."""
        if not self.headers:
            return {}
        return {name: [self.headers[i] for i in indices] for name, indices in self.columns.items()}

    def _first_index(self, name: str) -> int | None:
        indices = self.columns.get(name)
        return indices[0] if indices else None

    def next_batch(self, size: int = BATCH_ROWS) -> list[R]:
        """Up to size valid rows; an empty list at the end of the file."""
        batch: list[R] = []
        append = batch.append
        stage = self._stage
        width = self._width
        try:
            for record in self._records:
                self.row += 1
                if not any(record):
                    continue
                if len(record) < width:
                    record += [""] * (width - len(record))
                self.rows += 1
                staged = stage(record)
                if staged is not None:
                    append(staged)
                    if len(batch) >= size:
                        break
        except csv.Error as error:
            raise BadUserInput(f"Row {self.row + 1}: the CSV is malformed ({error})") from None
        return batch

    def _fail(self, reason: str, field: str) -> None:
        self._on_error(RowError(self.row, reason, field))

    def _phone(self, record: list[str]) -> tuple[str, tuple[str, ...]] | None:
        """The row's phone in E.164 and the zones it rings in; None once the error is told."""
        raw_phone = ""
        for index in self._phones:
            raw_phone = record[index].strip()
            if raw_phone:
                break
        if not raw_phone:
            self._fail("phone is missing", "phone")
            return None
        normalized = self.phones.normalize(raw_phone)
        if normalized is None:
            self._fail(f"phone {raw_phone[:64]!r} is not a valid phone number", "phone")
        return normalized

    @abstractmethod
    def _stage(self, record: list[str]) -> R | None:
        """The record as a row for COPY, or None once the error is told."""


async def read_ahead(read: Callable[[], list[T]]) -> AsyncIterator[list[T]]:
    """Batches from read() on a worker thread, the next one read while the caller works on
    this one; they end at the first empty batch."""
    pending = asyncio.ensure_future(asyncio.to_thread(read))
    try:
        while True:
            batch = await pending
            if not batch:
                return
            pending = asyncio.ensure_future(asyncio.to_thread(read))
            yield batch
    finally:
        if not pending.done():
            # A thread cannot be interrupted; let it finish its batch before the file closes.
            await asyncio.gather(pending, return_exceptions=True)


@contextlib.asynccontextmanager
async def import_transactions(
    connections: Sequence[Connection], *, actor: Actor | None, dry_run: bool
) -> AsyncIterator[None]:
    """A transaction on each connection, acting for actor, with memory for an import's
    merges. They commit together when the block ends (roll back in a dry run); if anything
    fails, all roll back."""
    transactions = [connection.transaction() for connection in connections]
    try:
        for connection, transaction in zip(connections, transactions, strict=True):
            await transaction.start()
            if actor is not None:
                # Triggers record the importing user (the status log, for one).
                await connection.execute(
                    "SELECT set_config('app.user_id', $1, true)", str(actor.id)
                )
            await connection.execute(QUERIES["prepare_bulk_import"])
        yield
    except BaseException:
        for transaction in transactions:
            with contextlib.suppress(Exception):
                await transaction.rollback()
        raise
    for transaction in transactions:
        if dry_run:
            await transaction.rollback()
        else:
            await transaction.commit()


def check_csv_text(text: str) -> None:
    """BAD_USER_INPUT unless text is a file a mutation takes: at most MAX_CSV_BYTES of
    Unicode, without NUL characters."""
    if len(text) > MAX_CSV_BYTES:
        raise BadUserInput(f"csv is larger than {MAX_CSV_BYTES // (1024 * 1024)} MB", field="csv")
    try:
        size = len(text.encode())
    except UnicodeEncodeError:
        raise BadUserInput("csv is not valid Unicode text", field="csv") from None
    if size > MAX_CSV_BYTES:
        raise BadUserInput(f"csv is larger than {MAX_CSV_BYTES // (1024 * 1024)} MB", field="csv")
    if "\x00" in text:
        raise BadUserInput("csv contains a NUL character", field="csv")
