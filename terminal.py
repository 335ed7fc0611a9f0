"""What the command line shows an operator: progress bars and reports in words.

Resolvers return data; this module turns it into lines. Each describe_* function hands
its lines to `write` (print, or a list's append in a test) rather than printing them.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, timedelta
from typing import TextIO

from resolvers.archive import ArchivePlan, ArchiveResult, describe_age
from resolvers.import_files import ImportReportBase
from resolvers.mock_store import MockReport

# Where a report's lines go, one call per line.
Write = Callable[[str], object]


def count(number: int, noun: str, plural: str | None = None) -> str:
    """A number and its noun, agreeing: '1 row', '2 rows', '1,000 status changes'."""
    return f"{number:,} {noun if number == 1 else plural or noun + 's'}"


class ProgressBar:
    """A progress bar on stderr: redrawn in place on a terminal, a line per tenth otherwise."""

    def __init__(self, total_bytes: int, position: Callable[[], int], stream: TextIO | None = None):
        self.total = max(total_bytes, 1)
        self.position = position
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty()
        self.started = time.monotonic()
        self.last_tenth = -1
        self.last_draw = 0.0

    def update(self, rows: int) -> None:
        """Show progress after a batch of rows."""
        fraction = min(self.position() / self.total, 1.0)
        elapsed = max(time.monotonic() - self.started, 1e-9)
        text = f"{fraction:6.1%}  {count(rows, 'row')}  {rows / elapsed:,.0f} rows/s"
        if self.terminal:
            if time.monotonic() - self.last_draw < 0.1 and fraction < 1.0:
                return
            self.last_draw = time.monotonic()
            filled = int(fraction * 30)
            self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {text}")
        elif int(fraction * 10) > self.last_tenth:
            self.last_tenth = int(fraction * 10)
            self.stream.write(f"read {text}\n")
        self.stream.flush()

    def finish(self, message: str) -> None:
        """End the bar with a message (e.g. while the merge runs)."""
        if self.terminal:
            self.stream.write("\n")
        self.stream.write(message + "\n")
        self.stream.flush()


def describe_import_report(report: ImportReportBase, write: Write, errors_shown: int = 20) -> None:
    """A file import's report as an operator reads it, with the first errors_shown row errors."""
    rate = report.rows / report.seconds if report.seconds else 0.0
    heading = f", {report.heading()}" if report.heading() else ""
    rows = count(report.rows, "row")
    write(f"read {rows} in {report.seconds:.1f} s ({rate:,.0f} rows/s){heading}")
    for name in report.COUNTS:
        write(f"  {name.replace('_', ' ') + ':':20} {getattr(report, name):>10,}")
    if report.columns:
        columns = "; ".join(
            f"{name} <- {', '.join(headers)}" for name, headers in report.columns.items()
        )
        write(f"columns: {columns}")
    if report.ignored_columns:
        write(f"ignored columns: {', '.join(report.ignored_columns)}")
    for error in report.listed_errors[:errors_shown]:
        write(f"row {error.row}: {error.reason}")
    if report.errors > errors_shown:
        more = count(report.errors - errors_shown, "more row error")
        write(f"... and {more} (see --errors-file)")
    if report.dry_run:
        write("dry run: rolled back, nothing was written; the counts say what an import would do")


def describe_mock_report(report: MockReport, write: Write) -> None:
    """A mock-store import's report as an operator reads it."""
    write(
        f"users: {report.users_created} created, {report.users_existing} already here, "
        f"{report.users_merged} merged (same email)"
    )
    write(
        f"prospects: {report.prospects_created} created, {report.prospects_existing} already "
        f"here ({report.prospects_filled} filled in), {report.prospects_merged} merged "
        f"(same phone), {report.prospects_rejected} rejected"
    )
    write(
        f"calls: {report.calls_created} created, {report.calls_existing} already here, "
        f"{report.calls_duplicate} duplicates, {report.calls_rejected} rejected"
    )
    for merge in report.merges:
        write(f"merged: {merge}")
    for warning in report.warnings:
        write(f"warning: {warning.position}: {warning.reason}")
    for error in report.errors:
        write(f"error: {error.position}: {error.reason}")
    if report.dry_run:
        write("dry run: rolled back, nothing was written; the counts say what an import would do")


def describe_plan(plan: ArchivePlan, older_than: timedelta, write: Write) -> None:
    """What an archive run is about to move, in words."""
    cutoff = plan.cutoff.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    write(f"archiving what is older than {describe_age(older_than)}: before {cutoff}")
    if plan.call_logs or plan.status_changes:
        write(f"to move: {_history(plan.call_logs, plan.status_changes, ', ')}")
    else:
        write("to move: nothing")
    if plan.calls_in_progress:
        write(f"left in place: {count(plan.calls_in_progress, 'old call')} still in progress")


def describe_result(result: ArchiveResult, write: Write) -> None:
    """What an archive run moved, in words."""
    write(
        f"moved {_history(result.call_logs, result.status_changes, ' and ')} "
        f"to the archive in {count(result.batches, 'batch', 'batches')} ({result.seconds:.1f} s)"
    )


def _history(call_logs: int, status_changes: int, joiner: str) -> str:
    return count(call_logs, "call log") + joiner + count(status_changes, "status change")


def progress_printer(write: Write, every_seconds: float = 1.0) -> Callable[[ArchiveResult], None]:
    """An archive run's on_batch callback that reports progress at most every every_seconds."""
    last = time.monotonic()

    def show(result: ArchiveResult) -> None:
        nonlocal last
        if time.monotonic() - last >= every_seconds:
            last = time.monotonic()
            write(f"  ... {_history(result.call_logs, result.status_changes, ', ')}")

    return show


def print_logins(logins: list[tuple[str, str, str]]) -> None:
    """Show the demo logins on the terminal."""
    print(f"Demo logins (password for all: {logins[0][1]}):")
    for email, _, role in logins:
        print(f"  {role:8} {email}")
