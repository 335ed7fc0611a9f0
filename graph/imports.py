"""Bulk data in: prospects from CSV, and Do-Not-Call lists."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

import strawberry

from graph.types import GraphInfo
from resolvers import do_not_call_imports, import_files, prospect_imports
from resolvers.auth import SUPERVISORS


def _camel(name: str | None) -> str | None:
    """A field name as the schema spells it (time_zone -> timeZone)."""
    if name is None:
        return None
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


def _row_errors(report: import_files.ImportReportBase) -> list[ImportRowError]:
    """The report's listed row errors, with fields as the schema spells them."""
    return [
        ImportRowError(row=e.row, field=_camel(e.field), reason=e.reason)
        for e in report.listed_errors
    ]


@strawberry.enum(description="What an import does with a row whose phone is already a prospect.")
class ImportMode(Enum):
    SKIP = "skip"
    UPDATE = "update"
    REPORT = "report"


@strawberry.input(
    description=(
        'Which header feeds a field, where the defaults do not find it (e.g. phone: "Cell Phone").'
    )
)
class ImportColumnsInput:
    name: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    email: str | None = None
    company: str | None = None
    status: str | None = None
    time_zone: str | None = None
    priority: str | None = None


@strawberry.type(description="A row that was not imported, and why.")
class ImportRowError:
    row: int = strawberry.field(
        description="The row as a spreadsheet numbers it: the header is row 1."
    )
    field: str | None
    reason: str


@strawberry.type(description="A field and the headers it was read from.")
class ImportColumn:
    field: str
    headers: list[str]


@strawberry.type(
    description=(
        "What an import did, or in a dry run would do. Every data row is counted once: "
        "inserted, updated, skipped, duplicatesInFile or errors."
    )
)
class ImportProspectsResult:
    dry_run: bool
    mode: ImportMode
    rows: int = strawberry.field(description="Data rows read (blank rows are not counted).")
    inserted: int
    updated: int
    skipped: int = strawberry.field(
        description="The phone is already a prospect and nothing was (or needed to be) changed."
    )
    duplicates_in_file: int = strawberry.field(
        description="Rows whose phone an earlier row of the file already had."
    )
    errors: int
    row_errors: list[ImportRowError] = strawberry.field(
        description=f"The first {import_files.MAX_LISTED_ERRORS} row errors, in row order."
    )
    columns: list[ImportColumn]
    ignored_columns: list[str]


@strawberry.type(
    description=(
        "What a Do-Not-Call import did, or in a dry run would do. Every data row is counted "
        "once: added, alreadyListed, duplicatesInFile or errors."
    )
)
class ImportDoNotCallResult:
    dry_run: bool
    rows: int = strawberry.field(description="Data rows read (blank rows are not counted).")
    added: int = strawberry.field(description="Numbers listed by this import.")
    already_listed: int = strawberry.field(
        description="Numbers that were listed already; their entries stay as they are, "
        "but for the expiry (see extended)."
    )
    extended: int = strawberry.field(
        description="Among alreadyListed: entries whose expiry moved later to the import's "
        "(or went, when the import has none). An expiry never moves earlier."
    )
    duplicates_in_file: int = strawberry.field(
        description="Rows whose number an earlier row of the file already had."
    )
    errors: int
    row_errors: list[ImportRowError] = strawberry.field(
        description=f"The first {import_files.MAX_LISTED_ERRORS} row errors, in row order."
    )


@strawberry.type
class ImportMutations:
    """Import mutations, merged into Mutation."""

    @strawberry.mutation(
        description=(
            "Import prospects from CSV text (at most 10 MB; managers and admins). Columns are "
            "found by header (name or first/last name, phone, email, company, status, "
            "timeZone, priority); phones are normalized and de-duplicated against the file "
            "and the database. A dry run writes nothing."
        )
    )
    async def import_prospects(
        self,
        info: GraphInfo,
        csv: str,
        mode: ImportMode = ImportMode.SKIP,
        dry_run: bool = False,
        columns: ImportColumnsInput | None = None,
    ) -> ImportProspectsResult:
        actor = await info.context.require_role(*SUPERVISORS)
        chosen = {
            name: header
            for name in prospect_imports.FIELDS
            if columns is not None and (header := getattr(columns, name)) is not None
        }
        report = await prospect_imports.import_prospects_text(
            info.context.pool,
            actor,
            csv,
            prospect_imports.CsvImportOptions(
                mode=mode.value,
                dry_run=dry_run,
                region=info.context.settings.default_phone_region,
                columns=chosen,
            ),
        )
        return ImportProspectsResult(
            dry_run=report.dry_run,
            mode=ImportMode(report.mode),
            rows=report.rows,
            inserted=report.inserted,
            updated=report.updated,
            skipped=report.skipped,
            duplicates_in_file=report.duplicates_in_file,
            errors=report.errors,
            row_errors=_row_errors(report),
            columns=[
                ImportColumn(field=_camel(f) or f, headers=h) for f, h in report.columns.items()
            ],
            ignored_columns=report.ignored_columns,
        )

    @strawberry.mutation(
        description=(
            "List numbers on the Do-Not-Call registry in bulk (at most 10 MB; managers and "
            "admins): a plain list, one number a line, or a CSV with a phone column and "
            "optional scope, reason and expires_at columns that override the arguments. "
            "All or nothing, in one transaction; a dry run writes nothing."
        )
    )
    async def import_do_not_call(
        self,
        info: GraphInfo,
        csv: str,
        scope: str | None = None,
        reason: str | None = None,
        expires_at: datetime | None = None,
        dry_run: bool = False,
    ) -> ImportDoNotCallResult:
        actor = await info.context.require_role(*SUPERVISORS)
        report = await do_not_call_imports.import_do_not_call_text(
            info.context.pool,
            actor,
            csv,
            do_not_call_imports.DoNotCallImportOptions(
                scope=scope,
                reason=reason,
                expires_at=expires_at,
                dry_run=dry_run,
                region=info.context.settings.default_phone_region,
            ),
        )
        return ImportDoNotCallResult(
            dry_run=report.dry_run,
            rows=report.rows,
            added=report.added,
            already_listed=report.already_listed,
            extended=report.extended,
            duplicates_in_file=report.duplicates_in_file,
            errors=report.errors,
            row_errors=_row_errors(report),
        )
