"""Do-Not-Call lists in bulk: the importDoNotCall mutation and `server.py import-dnc`."""

from __future__ import annotations

import asyncio
import csv
import io
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from helpers import (
    START_CALL,
    Api,
    Team,
    add_prospect,
    add_user,
    end,
    query_database,
    run,
    table_rows,
)

from resolvers import do_not_call_imports
from resolvers.errors import BadUserInput
from settings import Settings

IMPORT = """
mutation($csv: String!, $scope: String, $reason: String, $expiresAt: DateTime,
         $dryRun: Boolean) {
  importDoNotCall(csv: $csv, scope: $scope, reason: $reason, expiresAt: $expiresAt,
                  dryRun: $dryRun) {
    dryRun rows added alreadyListed extended duplicatesInFile errors
    rowErrors { row field reason }
  }
}
"""


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Imports take files up to 10 MB (MAX_CSV_BYTES) through the API once the operator
    raises MAX_REQUEST_BYTES above them; these tests run with it raised."""
    return replace(settings, max_request_bytes=12 * 1024 * 1024)


NEXT_LEAD = "mutation { nextLead { nothingCallable callLogId prospect { id phone } } }"
ADD = "mutation($n: String!, $e: DateTime) { addDoNotCall(phone: $n, expiresAt: $e) { id } }"
# The tables an import could touch, to compare before and after.
TABLES = ("do_not_call", "prospects", "call_logs", "active_calls")


async def import_list(api: Api, token: str, text: str, **variables: Any) -> dict[str, Any]:
    data = await api.data(IMPORT, {"csv": text, **variables}, token)
    result: dict[str, Any] = data["importDoNotCall"]
    return result


def counts(result: dict[str, Any]) -> tuple[int, int, int, int, int]:
    """(added, alreadyListed, extended, duplicatesInFile, errors)."""
    return (
        result["added"],
        result["alreadyListed"],
        result["extended"],
        result["duplicatesInFile"],
        result["errors"],
    )


async def snapshot(pool: asyncpg.Pool) -> dict[str, list[dict[str, Any]]]:
    """Every row of the tables an import could touch."""
    return await table_rows(pool, TABLES)


async def listed(pool: asyncpg.Pool) -> dict[str, asyncpg.Record]:
    rows = await pool.fetch("SELECT * FROM do_not_call WHERE removed_at IS NULL")
    return {row["phone"]: row for row in rows}


# ---------------------------------------------------------------------------------------
# The mutation.


async def test_phones_in_every_writing_and_duplicates(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    await api.data(ADD, {"n": "(718) 555-0100"}, team.manager["token"])
    text = (
        "Phone Number,Scope,Reason\n"
        "(212) 555-0123,national,\n"
        "+1 212-555-0123,,\n"
        "212.555.0123,internal,\n"
        "2125550123,,\n"
        "1-646-555-0199,,asked twice\n"
        "+16465550199,,\n"
        "+1 718 555 0100,national,\n"
        "+44 20 7946 0958,,\n"
    )
    result = await import_list(api, team.manager["token"], text, reason="national list")
    assert result["rows"] == 8
    # Every row lands in exactly one count; extended is among the already listed.
    assert counts(result) == (3, 1, 0, 4, 0)
    entries = await listed(pool)
    assert set(entries) == {"+12125550123", "+16465550199", "+17185550100", "+442079460958"}
    imported = {phone: row for phone, row in entries.items() if row["source"] == "import"}
    assert {phone: (r["scope"], r["reason"]) for phone, r in imported.items()} == {
        # The first row of a phone wins; a row's cells override the arguments.
        "+12125550123": ("national", "national list"),
        "+16465550199": (None, "asked twice"),
        "+442079460958": (None, "national list"),
    }
    assert {r["added_by"] for r in imported.values()} == {UUID(team.manager["id"])}
    assert all(r["expires_at"] is None for r in imported.values())
    # The number listed before keeps its entry as it was.
    assert entries["+17185550100"]["source"] == "api"


async def test_a_plain_list_of_numbers(api: Api, team: Team, pool: asyncpg.Pool) -> None:
    text = "+1 212 555 0101\n\n(212) 555-0102\n212-555-01\n2125550101\r\n646.555.0103\n"
    result = await import_list(api, team.admin["token"], text, scope="internal")
    assert result["rows"] == 5  # the blank line is not a row, but keeps its number
    assert counts(result) == (3, 0, 0, 1, 1)
    assert result["rowErrors"] == [
        {"row": 4, "field": "phone", "reason": "phone '212-555-01' is not a valid phone number"}
    ]
    entries = await listed(pool)
    assert sorted(entries) == ["+12125550101", "+12125550102", "+16465550103"]
    assert {r["scope"] for r in entries.values()} == {"internal"}
    # A lone "phone" header is a CSV, not a number.
    result = await import_list(api, team.admin["token"], "phone\n212-555-0104\n")
    assert (result["rows"], result["added"]) == (1, 1)


async def test_broken_rows_in_the_middle_are_reported_and_the_rest_imported(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    text = (
        "mobile;scope;reason;expires\n"
        "(212) 555-0101;;;\n"
        "555-01;;;\n"
        "(212) 555-0103;;;next tuesday\n"
        "(212) 555-0104;;;2001-01-01\n"
        "\n"
        f"(212) 555-0105;{'x' * 65};;\n"
        f"(212) 555-0106;;{'y' * 501};\n"
        ";national;;\n"
        "(212) 555-0108;national;moved;2999-12-31\n"
    )
    result = await import_list(api, team.manager["token"], text)
    assert result["rows"] == 8
    assert counts(result) == (2, 0, 0, 0, 6)
    assert [(e["row"], e["field"]) for e in result["rowErrors"]] == [
        (3, "phone"),
        (4, "expiresAt"),
        (5, "expiresAt"),
        (7, "scope"),
        (8, "reason"),
        (9, "phone"),
    ]
    assert "next tuesday" in result["rowErrors"][1]["reason"]
    assert "not in the future" in result["rowErrors"][2]["reason"]
    assert "phone is missing" in result["rowErrors"][5]["reason"]
    entries = await listed(pool)
    assert sorted(entries) == ["+12125550101", "+12125550108"]
    row = entries["+12125550108"]
    assert (row["scope"], row["reason"], row["expires_at"]) == (
        "national",
        "moved",
        datetime(2999, 12, 31, tzinfo=UTC),
    )


async def test_the_dry_run_writes_nothing_and_predicts_the_import(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    await api.data(ADD, {"n": "212-555-0101", "e": "2998-01-01T00:00:00Z"}, team.manager["token"])
    await api.data(ADD, {"n": "212-555-0102"}, team.manager["token"])
    await add_prospect(api, team.manager["token"], "212-555-0103")
    text = "phone\n212-555-0101\n212-555-0102\n212-555-0103\n212-555-0103\nnope\n"
    before = await snapshot(pool)
    dry = await import_list(
        api, team.manager["token"], text, expiresAt="2999-01-01T00:00:00Z", dryRun=True
    )
    assert dry["dryRun"] is True
    assert counts(dry) == (1, 2, 1, 1, 1)
    assert await snapshot(pool) == before
    real = await import_list(api, team.manager["token"], text, expiresAt="2999-01-01T00:00:00Z")
    assert {**dry, "dryRun": False} == real


async def test_importing_twice_changes_nothing_the_second_time(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    text = "phone,expires_at\n212-555-0101,2999-01-01\n212-555-0102,\n212-555-0101,\nbad,\n"
    first = await import_list(api, team.manager["token"], text, expiresAt="2998-06-01T00:00:00Z")
    assert counts(first) == (2, 0, 0, 1, 1)
    before = await snapshot(pool)
    again = await import_list(api, team.manager["token"], text, expiresAt="2998-06-01T00:00:00Z")
    assert counts(again) == (0, 2, 0, 1, 1)
    assert await snapshot(pool) == before


async def test_an_expiry_is_extended_never_shortened(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    token = team.manager["token"]
    await api.data(ADD, {"n": "212-555-0101", "e": "2030-01-01T00:00:00Z"}, token)  # earlier
    await api.data(ADD, {"n": "212-555-0102", "e": "2040-01-01T00:00:00Z"}, token)  # later
    await api.data(ADD, {"n": "212-555-0103"}, token)  # never expires
    await api.data(ADD, {"n": "212-555-0104", "e": "2030-01-01T00:00:00Z"}, token)
    await pool.execute(  # an entry whose time ran out is listed until someone removes it
        "UPDATE do_not_call SET expires_at = now() - interval '1 day' WHERE phone = '+12125550104'"
    )
    ids = {phone: row["id"] for phone, row in (await listed(pool)).items()}
    text = "212-555-0101\n212-555-0102\n212-555-0103\n212-555-0104\n"

    result = await import_list(api, token, text, expiresAt="2035-01-01T00:00:00Z")
    assert counts(result) == (0, 4, 2, 0, 0)
    entries = await listed(pool)
    assert {phone: row["expires_at"] for phone, row in entries.items()} == {
        "+12125550101": datetime(2035, 1, 1, tzinfo=UTC),
        "+12125550102": datetime(2040, 1, 1, tzinfo=UTC),
        "+12125550103": None,
        "+12125550104": datetime(2035, 1, 1, tzinfo=UTC),
    }
    # The entries are the same ones, with their source; only the expiry moved.
    assert {phone: row["id"] for phone, row in entries.items()} == ids
    assert {row["source"] for row in entries.values()} == {"api"}

    # An import without an expiry lists for good: every expiry goes.
    result = await import_list(api, token, text)
    assert counts(result) == (0, 4, 3, 0, 0)
    assert {row["expires_at"] for row in (await listed(pool)).values()} == {None}
    # A shorter one then changes nothing.
    result = await import_list(api, token, text, expiresAt="2031-01-01T00:00:00Z")
    assert counts(result) == (0, 4, 0, 0, 0)
    assert {row["expires_at"] for row in (await listed(pool)).values()} == {None}


async def test_a_removed_number_is_listed_again_and_its_old_entry_kept(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    await api.data(ADD, {"n": "212-555-0101"}, team.manager["token"])
    await api.data(
        'mutation { removeDoNotCall(phone: "212-555-0101", reason: "consented") }',
        token=team.manager["token"],
    )
    result = await import_list(api, team.manager["token"], "212-555-0101\n")
    assert counts(result) == (1, 0, 0, 0, 0)
    rows = await pool.fetch("SELECT source, removed_at FROM do_not_call ORDER BY added_at")
    assert [(r["source"], r["removed_at"] is None) for r in rows] == [
        ("api", False),
        ("import", True),
    ]


async def test_an_imported_number_is_refused_and_skipped_by_the_queue(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    blocked = await add_prospect(api, team.manager["token"], "(212) 555-0177", name="Blocked")
    free = await add_prospect(api, team.manager["token"], "(212) 555-0178", name="Free")
    result = await import_list(api, team.manager["token"], "+1 212 555 0177\n")
    assert result["added"] == 1
    code = await api.error_code(START_CALL, {"p": blocked["id"]}, team.agent["token"])
    assert code == "DO_NOT_CALL"
    lead = (await api.data(NEXT_LEAD, token=team.agent["token"]))["nextLead"]
    assert lead["prospect"]["id"] == free["id"]
    again = (await api.data(NEXT_LEAD, token=team.agents[1]["token"]))["nextLead"]
    assert again["nothingCallable"] is True
    assert (
        await pool.fetchval("SELECT count(*) FROM call_logs WHERE prospect_id = $1", blocked["id"])
        == 0
    )


async def test_only_managers_and_admins_import(api: Api, team: Team, pool: asyncpg.Pool) -> None:
    text = "212-555-0123\n"
    assert await api.error_code(IMPORT, {"csv": text}, team.agent["token"]) == "FORBIDDEN"
    assert await api.error_code(IMPORT, {"csv": text}) == "UNAUTHENTICATED"
    assert await pool.fetchval("SELECT count(*) FROM do_not_call") == 0
    assert (await import_list(api, team.admin["token"], text))["added"] == 1


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"csv": ""}, "empty"),
        ({"csv": "\n\n212-555-0123\n"}, "empty"),
        ({"csv": "number\n212-555-0123\n"}, "no phone column"),
        ({"csv": "name,email\nPat,pat@example.com\n"}, "no phone column"),
        ({"csv": "212-555-0123\n" + "x" * (10 * 1024 * 1024)}, "larger than"),
        ({"csv": "212-555-0123\x00\n"}, "NUL"),
        ({"csv": '"phone\n212-555-0123\n'}, "no phone column"),
        ({"csv": '"phone\n' + "1" * 200_000}, "malformed"),
        ({"csv": "212-555-0123\n", "expiresAt": "2001-01-01T00:00:00Z"}, "future"),
        ({"csv": "212-555-0123\n", "scope": "s" * 65}, "scope"),
        ({"csv": "212-555-0123\n", "reason": "r" * 501}, "reason"),
        ({"csv": "212-555-0123\n", "expiresAt": "soon"}, "DateTime"),
    ],
)
async def test_unusable_input_is_refused_whole(
    api: Api, team: Team, pool: asyncpg.Pool, variables: dict[str, Any], message: str
) -> None:
    body = await api.graphql(IMPORT, variables, team.manager["token"])
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", body
    assert message in body["errors"][0]["message"]
    assert await pool.fetchval("SELECT count(*) FROM do_not_call") == 0


async def test_an_expiry_without_an_offset_is_utc(api: Api, team: Team, pool: asyncpg.Pool) -> None:
    await import_list(api, team.manager["token"], "212-555-0123\n", expiresAt="2999-01-01T12:00:00")
    assert await pool.fetchval("SELECT expires_at FROM do_not_call") == datetime(
        2999, 1, 1, 12, tzinfo=UTC
    )


async def test_batches_count_like_one_merge(pool: asyncpg.Pool) -> None:
    """Small batches (a phone's rows in different batches) give the counts of one batch."""
    await pool.execute(
        "INSERT INTO do_not_call (phone, source, expires_at)"
        " SELECT '+1212555' || lpad(i::text, 4, '0'), 'api', now() + interval '1 day'"
        " FROM generate_series(0, 99) i"
    )
    lines = ["phone"]
    for index in range(1500):
        number = f"212555{index % 700:04d}"  # 0..699: a hundred listed, most twice
        lines.append("555-01" if index % 97 == 0 else f"({number[:3]}) {number[3:6]}-{number[6:]}")
    text = "\n".join(lines) + "\n"

    async def run_import(batch_rows: int, dry_run: bool) -> tuple[int, ...]:
        options = do_not_call_imports.DoNotCallImportOptions(
            dry_run=dry_run, batch_rows=batch_rows, expires_at=datetime.now(UTC) + timedelta(days=9)
        )
        async with pool.acquire() as connection:
            report = await do_not_call_imports.import_do_not_call(
                connection, io.StringIO(text, newline=""), options
            )
        assert (
            report.added + report.already_listed + report.duplicates_in_file + report.errors
            == report.rows
            == 1500
        )
        return (report.added, report.already_listed, report.extended, report.duplicates_in_file)

    whole = await run_import(100_000, dry_run=True)
    errors = len(range(0, 1500, 97))
    unique = len({i % 700 for i in range(1500) if i % 97 != 0})
    assert whole == (unique - 100, 100, 100, 1500 - errors - unique)
    assert await run_import(37, dry_run=True) == whole
    assert await run_import(37, dry_run=False) == whole
    assert await pool.fetchval("SELECT count(*) FROM do_not_call") == unique


async def test_a_file_that_breaks_late_writes_nothing(pool: asyncpg.Pool) -> None:
    """All or nothing: batches merged before the file turned out unusable roll back too."""
    good = [f"212555{i:04d}" for i in range(100)]
    # An unterminated quote swallows the rest of the file into one overlong cell.
    text = "\n".join(["phone", *good, '"' + "1" * 200_000]) + "\n"
    options = do_not_call_imports.DoNotCallImportOptions(batch_rows=10)
    async with pool.acquire() as connection:
        with pytest.raises(BadUserInput, match="malformed"):
            await do_not_call_imports.import_do_not_call(
                connection, io.StringIO(text, newline=""), options
            )
    assert await pool.fetchval("SELECT count(*) FROM do_not_call") == 0


# ---------------------------------------------------------------------------------------
# The command line.


def summary(stdout: str) -> dict[str, str]:
    return {
        key.strip(): value.strip()
        for key, value in (line.split(":", 1) for line in stdout.splitlines() if ":" in line)
    }


def test_import_dnc_command(data_dir: Path, database_url: str, tmp_path: Path) -> None:
    listing = tmp_path / "national.txt"
    listing.write_text("+1 212 555 0101\n(212) 555-0102\n212-555-01\n2125550101\n")
    errors_file = tmp_path / "errors.csv"
    options = ("--scope", "national", "--reason", "national registry")

    dry = run(
        data_dir, "import-dnc", str(listing), *options, "--dry-run", DATABASE_URL=database_url
    )
    assert dry.returncode == 1, dry.stderr  # one row is rejected
    assert "dry run: rolled back, nothing was written" in dry.stdout
    assert "rolling back (dry run)" in dry.stderr
    assert "committing" not in dry.stderr + dry.stdout
    assert "a plain list of numbers" in dry.stdout

    done = run(
        data_dir,
        "import-dnc",
        str(listing),
        *options,
        "--expires-at",
        "2999-01-01",
        "--errors-file",
        str(errors_file),
        DATABASE_URL=database_url,
    )
    assert done.returncode == 1, done.stderr
    assert "100.0%" in done.stderr  # the progress bar
    lines = summary(done.stdout)
    assert (lines["added"], lines["already listed"], lines["duplicates in file"]) == ("2", "0", "1")
    assert lines["errors"] == "1"
    assert "row 3: phone '212-555-01' is not a valid phone number" in done.stdout
    with errors_file.open() as handle:
        assert list(csv.reader(handle)) == [
            ["row", "field", "reason"],
            ["3", "phone", "phone '212-555-01' is not a valid phone number"],
        ]

    def entries() -> list[tuple[Any, ...]]:
        rows = query_database(
            database_url,
            "SELECT phone, scope, source, reason, expires_at, added_by FROM do_not_call"
            " ORDER BY phone",
        )
        return [tuple(r) for r in rows]

    expiry = datetime(2999, 1, 1, tzinfo=UTC)
    assert entries() == [
        ("+12125550101", "national", "import", "national registry", expiry, None),
        ("+12125550102", "national", "import", "national registry", expiry, None),
    ]

    table = tmp_path / "internal.csv"
    table.write_text("Mobile,Reason\n212-555-0102,asked\n212-555-0103,asked\n")
    clean = run(data_dir, "import-dnc", str(table), DATABASE_URL=database_url)
    assert clean.returncode == 0, clean.stderr
    lines = summary(clean.stdout)
    assert (lines["added"], lines["already listed"], lines["extended"]) == ("1", "1", "1")
    assert "columns: phone <- Mobile; reason <- Reason" in clean.stdout

    for arguments in (
        (str(tmp_path / "nope.txt"),),
        (str(listing), "--expires-at", "someday"),
        (str(listing), "--expires-at", "2001-01-01"),
        (str(listing), "--scope", "s" * 65),
    ):
        refused = run(data_dir, "import-dnc", *arguments, DATABASE_URL=database_url)
        assert refused.returncode == 2, (arguments, refused.stdout, refused.stderr)
        assert "error:" in refused.stderr
    no_phone = tmp_path / "people.csv"
    no_phone.write_text("name,email\nPat,pat@example.com\n")
    refused = run(data_dir, "import-dnc", str(no_phone), DATABASE_URL=database_url)
    assert refused.returncode == 2
    assert "no phone column" in refused.stderr
    assert len(entries()) == 3


# ---------------------------------------------------------------------------------------
# An import committing while agents dial.

ROUNDS = 3
AGENTS = 6
PROSPECTS = 400
OTHER_NUMBERS = 3000


@dataclass
class Round:
    """One round: agents dialling this round's prospects while half their numbers import."""

    api: Api
    manager_token: str
    number: int
    dialling: asyncio.Event = field(default_factory=asyncio.Event)
    committed: asyncio.Event = field(default_factory=asyncio.Event)
    calls_made: int = 0

    async def dial(self, agent: dict[str, Any]) -> None:
        """Take leads and end them until nothing is callable once the import committed."""
        while True:
            lead = (await self.api.data(NEXT_LEAD, token=agent["token"]))["nextLead"]
            if lead["nothingCallable"]:
                if self.committed.is_set():
                    return
                await asyncio.wait_for(self.committed.wait(), 60)
                continue
            self.calls_made += 1
            if self.calls_made >= PROSPECTS // 8:
                self.dialling.set()
            await end(self.api, agent["token"], lead["prospect"]["id"], lead["callLogId"])

    async def import_numbers(self, pool: asyncpg.Pool, numbers: list[str]) -> datetime:
        """Import once the agents are well under way; a time after the commit."""
        await asyncio.wait_for(self.dialling.wait(), 60)
        text = "\n".join(numbers) + "\n"
        result = await import_list(self.api, self.manager_token, text, scope="national")
        assert result["added"] == len(numbers)
        # Read after the response, so after the commit: a call started later saw the list.
        after_commit: datetime = await pool.fetchval("SELECT clock_timestamp()")
        self.committed.set()
        return after_commit


async def test_no_call_starts_on_an_imported_number_once_the_import_commits(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    agents = [await add_user(pool, api, f"dialer{i}@test.example", "agent") for i in range(AGENTS)]
    for number in range(ROUNDS):
        # Numbers of this round only: earlier rounds' prospects wait out their recycle delay.
        phones = [f"+1646{200 + number}{i:04d}" for i in range(PROSPECTS)]
        await pool.execute(
            "INSERT INTO prospects (name, phone) SELECT 'R' || p, p FROM unnest($1::text[]) p",
            phones,
        )
        imported = set(phones[::2])
        others = [f"+1718{200 + number}{i:04d}" for i in range(OTHER_NUMBERS)]
        this_round = Round(api, team.manager["token"], number)
        dialers = [asyncio.create_task(this_round.dial(agent)) for agent in agents]
        after_commit = await this_round.import_numbers(pool, [*sorted(imported), *others])
        await asyncio.gather(*dialers)

        calls = await pool.fetch(
            "SELECT phone_number, started_at FROM call_logs WHERE phone_number = ANY($1::text[])",
            phones,
        )
        late = {c["phone_number"] for c in calls if c["started_at"] > after_commit}
        assert late, f"round {number}: nobody dialled after the commit; the test proves nothing"
        assert not late & imported, f"round {number}: an imported number was called"
        called = [c["phone_number"] for c in calls]
        assert len(called) == len(set(called)), f"round {number}: a number was called twice"
        # Every number not imported was called; the imported ones left were held back.
        assert set(phones) - imported <= set(called)
        assert imported - set(called), f"round {number}: the import came too late to matter"
