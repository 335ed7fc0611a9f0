"""Data in: CSV imports (mutation and command line) and the mock-store migration."""

from __future__ import annotations

import copy
import csv
import io
import itertools
import json
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import bcrypt
import pytest
from helpers import ROOT, Api, Team, add_prospect, query_database, run, table_rows

from resolvers import archive, mock_store, prospect_imports
from resolvers.bulk_phones import PhoneNormalizer
from resolvers.errors import BadUserInput
from resolvers.phones import normalize_phone, phone_time_zones
from settings import Settings

SAMPLES = ROOT / "samples"

IMPORT = """
mutation($csv: String!, $mode: ImportMode! = SKIP, $dryRun: Boolean! = false,
         $columns: ImportColumnsInput) {
  importProspects(csv: $csv, mode: $mode, dryRun: $dryRun, columns: $columns) {
    dryRun mode rows inserted updated skipped duplicatesInFile errors
    rowErrors { row field reason }
    columns { field headers }
    ignoredColumns
  }
}
"""


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Imports take files up to 10 MB (MAX_CSV_BYTES) through the API once the operator
    raises MAX_REQUEST_BYTES above them; these tests run with it raised."""
    return replace(settings, max_request_bytes=12 * 1024 * 1024)


# The tables an import may touch, to compare before and after.
TABLES = ("users", "prospects", "call_logs", "prospect_status_log", "lead_assignments")


async def snapshot(pool: asyncpg.Pool) -> dict[str, list[dict[str, Any]]]:
    """Every row of the tables an import may touch."""
    return await table_rows(pool, TABLES)


async def import_csv(api: Api, token: str, text: str, **variables: Any) -> dict[str, Any]:
    data = await api.data(IMPORT, {"csv": text, **variables}, token)
    result: dict[str, Any] = data["importProspects"]
    return result


def counts(result: dict[str, Any]) -> tuple[int, int, int, int, int]:
    return (
        result["inserted"],
        result["updated"],
        result["skipped"],
        result["duplicatesInFile"],
        result["errors"],
    )


# ---------------------------------------------------------------------------------------
# Phones: the fast path gives phonenumbers' answers.


def test_fast_phone_path_agrees_with_phonenumbers() -> None:
    rng = random.Random(20261127)
    fast = 0
    for region in ("US", "CA", "GB", "DE", "FR", "MX", "AR", "JM"):
        phones = PhoneNormalizer(region)
        for _ in range(120):
            area = rng.choice(["212", "415", "646", "800", "876", "905", "604", "787", "999"])
            local = f"{area}{rng.randint(200, 999)}{rng.randint(0, 9999):04d}"
            digits = str(rng.randint(10**8, 10**10 - 1))
            country = rng.choice([1, 44, 49, 33, 52, 54, 55, 86, 91, 39, 7, 61, 880, 800])
            for text in (
                f"+1{local}",
                f"({local[:3]}) {local[3:6]}-{local[6:]}",
                f"{local[:3]}.{local[3:6]}.{local[6:]}",
                f"1-{local[:3]}-{local[3:6]}-{local[6:]}",
                local,
                f"+{country} {digits}",
                f"+44 (0){digits[:10]}",
                f"0{digits[:10]}",
            ):
                try:
                    e164 = normalize_phone(text, region)
                    expected: Any = (e164, tuple(phone_time_zones(e164)))
                except BadUserInput:
                    expected = None
                assert phones.normalize(text) == expected, (region, text)
        fast += phones.fast
    assert fast > 1000, "the fast path should take most clean numbers"


# ---------------------------------------------------------------------------------------
# CSV through the importProspects mutation.


async def test_duplicates_in_every_form_of_phone_writing(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    await add_prospect(api, team.manager["token"], phone="+1 (212) 555 0123", name="Existing")
    text = (
        "name,phone\n"
        "Pat One,(212) 555-0123\n"
        "Pat Two,+1 212-555-0123\n"
        "Pat Three,212.555.0123\n"
        "Pat Four,2125550123\n"
        "Quinn,(646) 555-0199\n"
        "Quinn Again,+16465550199\n"
    )
    result = await import_csv(api, team.manager["token"], text)
    # Each row lands in exactly one count.
    assert counts(result) == (1, 0, 1, 4, 0)
    assert result["rows"] == 6
    rows = await pool.fetch("SELECT name, phone FROM prospects ORDER BY phone")
    assert [tuple(r) for r in rows] == [
        ("Existing", "+12125550123"),
        ("Quinn", "+16465550199"),
    ]


async def test_importing_twice_changes_nothing_the_second_time(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    text = (SAMPLES / "prospects.csv").read_text()
    first = await import_csv(api, team.manager["token"], text, mode="UPDATE")
    assert counts(first) == (4, 0, 0, 1, 1)
    before = await snapshot(pool)
    for mode in ("UPDATE", "SKIP"):
        again = await import_csv(api, team.manager["token"], text, mode=mode)
        assert counts(again) == (0, 0, 4, 1, 1)
    assert await snapshot(pool) == before


async def test_a_broken_row_in_the_middle_is_reported_and_the_others_imported(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    text = (
        "First Name,Last Name,Mobile,E-mail,Status,Priority,Time Zone\n"
        "Ana,Lopez,(212) 555-0101,ana@example.com,new,5,\n"
        "Ben,Meyer,555-01,ben@example.com,New,,\n"
        "Cleo,Nakamura,(212) 555-0103,not-an-email,New,,\n"
        "\n"
        "Dev,Okafor,(212) 555-0104,,Hot lead,,\n"
        ",,(212) 555-0105,,,,\n"
        "Emma,Patel,(212) 555-0106,,,99999,\n"
        "Finn,Quinn,(212) 555-0107,,,,Mars/Olympus\n"
        "Gus,Rossi,+44 20 7946 0958,gus@example.co.uk,not interested,-3,europe/london\n"
    )
    result = await import_csv(api, team.manager["token"], text)
    assert counts(result) == (2, 0, 0, 0, 6)
    assert result["rows"] == 8  # the blank line is not a row, but keeps its number
    assert [(e["row"], e["field"]) for e in result["rowErrors"]] == [
        (3, "phone"),
        (4, "email"),
        (6, "status"),
        (7, "name"),
        (8, "priority"),
        (9, "timeZone"),
    ]
    assert "555-01" in result["rowErrors"][0]["reason"]
    rows = await pool.fetch(
        "SELECT name, phone, email, status, priority, time_zone, phone_time_zones "
        "FROM prospects ORDER BY phone"
    )
    assert [tuple(r) for r in rows] == [
        ("Ana Lopez", "+12125550101", "ana@example.com", "New", 5, None, ["America/New_York"]),
        (
            "Gus Rossi",
            "+442079460958",
            "gus@example.co.uk",
            "Not Interested",
            -3,
            "Europe/London",
            ["Europe/London"],
        ),
    ]


async def test_the_dry_run_writes_nothing_and_predicts_the_import(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    await add_prospect(api, team.manager["token"], phone="(415) 555-0142", name="Ben M.")
    text = (SAMPLES / "prospects.csv").read_text()
    for mode in ("SKIP", "UPDATE", "REPORT"):
        before = await snapshot(pool)
        dry = await import_csv(api, team.manager["token"], text, mode=mode, dryRun=True)
        assert dry["dryRun"] is True
        assert await snapshot(pool) == before
        real = await import_csv(api, team.manager["token"], text, mode=mode)
        assert {**dry, "dryRun": False} == real
        # Put the database back for the next mode.
        await pool.execute("DELETE FROM prospects WHERE phone <> '+14155550142'")
        await pool.execute(
            "UPDATE prospects SET name = 'Ben M.', email = NULL, company = NULL, status = 'New'"
        )


async def test_update_mode_fills_and_changes_what_differs_and_logs_the_status_once(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    prospect = await add_prospect(api, team.agent["token"], phone="212-555-0150", name="Old Name")
    await pool.execute(
        "UPDATE prospects SET email = 'kept@example.com' WHERE id = $1", prospect["id"]
    )
    text = "phone,name,email,company,status\n2125550150,,,Acme,Qualified\n"
    result = await import_csv(api, team.manager["token"], text, mode="UPDATE")
    assert counts(result) == (0, 1, 0, 0, 0)
    row = await pool.fetchrow("SELECT * FROM prospects WHERE id = $1", prospect["id"])
    assert (row["name"], row["email"], row["company"], row["status"]) == (
        "Old Name",
        "kept@example.com",
        "Acme",
        "Qualified",
    )
    log = await pool.fetch("SELECT old_status, new_status, changed_by FROM prospect_status_log")
    assert [tuple(r) for r in log] == [("New", "Qualified", UUID(team.manager["id"]))]
    again = await import_csv(api, team.manager["token"], text, mode="UPDATE")
    assert counts(again) == (0, 0, 1, 0, 0)
    assert await pool.fetchval("SELECT count(*) FROM prospect_status_log") == 1


async def test_report_mode_lists_phones_already_in_the_database(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    existing = await add_prospect(api, team.manager["token"], phone="(212) 555-0123")
    text = "name,phone\nNew One,646-555-0101\nClash,+12125550123\n"
    result = await import_csv(api, team.manager["token"], text, mode="REPORT")
    assert counts(result) == (1, 0, 0, 0, 1)
    error = result["rowErrors"][0]
    assert error["row"] == 3
    assert existing["id"] in error["reason"]
    names = await pool.fetch("SELECT name FROM prospects ORDER BY name")
    assert [r["name"] for r in names] == ["New One", "Pat Prospect"]


async def test_columns_by_choice_and_other_delimiters(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    text = 'Nom;Portable;Société;Notes\n"Durand; Marie";06 12 34 56 78;Orange;vip\n'
    result = await import_csv(
        api,
        team.manager["token"],
        text,
        columns={"name": "Nom", "phone": "portable", "company": "Société"},
    )
    assert counts(result) == (0, 0, 0, 0, 1)  # a French number, read in the US region
    assert result["ignoredColumns"] == ["Notes"]
    text = text.replace("06 12 34 56 78", "+33 6 12 34 56 78")
    result = await import_csv(
        api, team.manager["token"], text, columns={"name": "Nom", "phone": "Portable"}
    )
    assert counts(result) == (1, 0, 0, 0, 0)
    assert {c["field"]: c["headers"] for c in result["columns"]} == {
        "name": ["Nom"],
        "phone": ["Portable"],
    }
    row = await pool.fetchrow("SELECT name, phone, phone_time_zones FROM prospects")
    assert tuple(row) == ("Durand; Marie", "+33612345678", ["Europe/Paris"])


async def test_only_managers_and_admins_import(api: Api, team: Team, pool: asyncpg.Pool) -> None:
    text = "name,phone\nPat,212-555-0123\n"
    assert await api.error_code(IMPORT, {"csv": text}, team.agent["token"]) == "FORBIDDEN"
    assert await api.error_code(IMPORT, {"csv": text}) == "UNAUTHENTICATED"
    assert await pool.fetchval("SELECT count(*) FROM prospects") == 0
    result = await import_csv(api, team.admin["token"], text)
    assert result["inserted"] == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("name,email\nPat,pat@example.com\n", "no phone column"),
        ("name,phone\nPat,212-555-0123\n" + "x" * (10 * 1024 * 1024), "larger than"),
        ("name,phone\nPat,212-555-0123\x00\n", "NUL"),
    ],
)
async def test_unusable_csv_is_refused_whole(
    api: Api, team: Team, pool: asyncpg.Pool, text: str, message: str
) -> None:
    body = await api.graphql(IMPORT, {"csv": text}, team.manager["token"])
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert message in body["errors"][0]["message"]
    assert await pool.fetchval("SELECT count(*) FROM prospects") == 0


async def test_unknown_mapped_column_is_refused(api: Api, team: Team, pool: asyncpg.Pool) -> None:
    code = await api.error_code(
        IMPORT,
        {"csv": "name,phone\nPat,212-555-0123\n", "columns": {"phone": "Cell"}},
        team.manager["token"],
    )
    assert code == "BAD_USER_INPUT"
    assert await pool.fetchval("SELECT count(*) FROM prospects") == 0


async def test_chunks_and_connections_count_like_one_merge(pool: asyncpg.Pool) -> None:
    rng = random.Random(7)
    lines = ["name,phone,status"]
    for index in range(3000):
        number = f"212{200 + index % 1500 // 10}{index % 10:04d}"  # each twice
        written = rng.choice([f"+1{number}", f"({number[:3]}) {number[3:6]}-{number[6:]}"])
        name = "" if index % 389 == 0 else f"P{index}"
        lines.append(f"{name},{'555-01' if index % 211 == 0 else written},New")
    text = "\n".join(lines) + "\n"

    async def run_import(
        connections: int, dry_run: bool, batch_rows: int, mode: str = "update"
    ) -> prospect_imports.ImportReport:
        held = [await pool.acquire() for _ in range(connections)]
        try:
            options = prospect_imports.CsvImportOptions(
                mode=mode, dry_run=dry_run, batch_rows=batch_rows
            )
            return await prospect_imports.import_csv(held, io.StringIO(text, newline=""), options)
        finally:
            for connection in held:
                await pool.release(connection)

    def summary(report: prospect_imports.ImportReport) -> tuple[Any, ...]:
        return (
            report.inserted,
            report.updated,
            report.skipped,
            report.duplicates_in_file,
            report.errors,
            [(e.row, e.reason) for e in report.listed_errors],
        )

    # One chunk on one connection is the plain reading of the rules.
    alone = await run_import(1, dry_run=True, batch_rows=100_000)
    good = [i for i in range(3000) if i % 211 != 0]
    phones = {f"212{200 + i % 1500 // 10}{i % 10:04d}" for i in good}
    assert alone.duplicates_in_file == len(good) - len(phones) > 0
    # 15 broken phones (every 211th row), and rows 389, 778 and 1167: nameless and the first
    # of their phones (rows 1556, 1945, ... are nameless too, but duplicates).
    assert alone.errors == 15 + 3
    # Small chunks (a phone's rows in different chunks) on three connections agree.
    assert summary(await run_import(3, dry_run=True, batch_rows=97)) == summary(alone)
    together = await run_import(3, dry_run=False, batch_rows=97)
    assert summary(together) == summary(alone)
    assert await pool.fetchval("SELECT count(*) FROM prospects") == alone.inserted
    again = await run_import(2, dry_run=False, batch_rows=250)
    assert (again.inserted, again.updated, again.skipped) == (0, 0, alone.inserted)
    reported = await run_import(2, dry_run=True, batch_rows=250, mode="report")
    assert reported.errors == alone.errors + alone.inserted


async def test_a_list_imported_again_with_new_rows_adds_only_those(pool: asyncpg.Pool) -> None:
    """Known phones are skipped (or reported) and left as they were; new ones among them,
    and a run of new ones after them, go in once, over chunks and connections."""
    known = [f"+1212555{i:04d}" for i in range(600)]
    new = [f"+1312555{i:04d}" for i in range(150)]

    async def run_import(phones: list[str], mode: str) -> prospect_imports.ImportReport:
        text = "name,phone,company\n" + "".join(f"P{p},{p},Again\n" for p in phones)
        held = [await pool.acquire() for _ in range(2)]
        try:
            options = prospect_imports.CsvImportOptions(mode=mode, batch_rows=100)
            return await prospect_imports.import_csv(held, io.StringIO(text), options)
        finally:
            for connection in held:
                await pool.release(connection)

    assert (await run_import(known, "skip")).inserted == 600
    before = await snapshot(pool)
    again = await run_import(known[:400] + new[:50] + known[400:] + new[50:], "skip")
    assert (again.inserted, again.updated, again.skipped) == (150, 0, 600)
    assert (again.duplicates_in_file, again.errors) == (0, 0)
    after = await snapshot(pool)
    assert len(after["prospects"]) == 750
    assert [p for p in after["prospects"] if p["phone"] in set(known)] == before["prospects"]
    reported = await run_import(known[:300] + [f"+1415555{i:04d}" for i in range(10)], "report")
    assert (reported.inserted, reported.errors) == (10, 300)


def test_import_ids_are_uuidv7_in_the_order_they_are_made() -> None:
    before = datetime.now(UTC)
    ids = list(itertools.islice(prospect_imports.time_ordered_ids(), 5000))
    after = datetime.now(UTC)
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)  # byte order, as PostgreSQL sorts uuids
    for made in ids[:: len(ids) // 10]:
        assert (made.version, made.variant) == (7, "specified in RFC 4122")
        at = datetime.fromtimestamp(int.from_bytes(made.bytes[:6]) / 1000, UTC)
        assert before - timedelta(milliseconds=1) <= at <= after
    # Each import starts its counter at a random place.
    assert next(prospect_imports.time_ordered_ids()).bytes[6:] != ids[0].bytes[6:]


async def test_imported_prospects_carry_the_importers_ids(pool: asyncpg.Pool) -> None:
    text = "name,phone\n" + "".join(f"P{i},+1212555{i:04d}\n" for i in range(300))
    async with pool.acquire() as connection:
        options = prospect_imports.CsvImportOptions(batch_rows=70)
        report = await prospect_imports.import_csv([connection], io.StringIO(text), options)
    assert report.inserted == 300
    rows = await pool.fetch("SELECT id FROM prospects ORDER BY phone")
    assert all(row["id"].version == 7 for row in rows)
    # Made in row order, so they sort in row order, across chunks.
    assert [row["id"] for row in rows] == sorted(row["id"] for row in rows)


async def test_imported_prospects_keep_every_zone_of_their_number(pool: asyncpg.Pool) -> None:
    # One zone, a toll-free number (every North American zone) and a Russian mobile.
    phones = ["+12125550123", "+18005550199", "+79123456789", "+442079460958"]
    text = "name,phone\n" + "".join(f"P{i},{phone}\n" for i, phone in enumerate(phones))
    async with pool.acquire() as connection:
        report = await prospect_imports.import_csv(
            [connection], io.StringIO(text), prospect_imports.CsvImportOptions()
        )
    assert report.inserted == len(phones)
    stored = dict(await pool.fetch("SELECT phone, phone_time_zones FROM prospects"))
    assert stored == {phone: phone_time_zones(phone) for phone in phones}
    assert len(stored["+18005550199"]) > 30


async def test_nul_bytes_in_a_file_are_row_errors(pool: asyncpg.Pool) -> None:
    text = (
        "name,phone,email,company\n"
        "Nul\x00Name,212-555-0101,,\n"
        "Ok,212-555-0102,a\x00b@example.com,\n"
        "Ok Too,212-555-0103,,Nul\x00Corp\n"
        "Fine,212-555-0104,,\n"
    )
    async with pool.acquire() as connection:
        report = await prospect_imports.import_csv(
            [connection], io.StringIO(text, newline=""), prospect_imports.CsvImportOptions()
        )
    assert (report.inserted, report.errors) == (1, 3)
    assert [(e.row, e.field) for e in report.listed_errors] == [
        (2, "name"),
        (3, "email"),
        (4, "company"),
    ]


# ---------------------------------------------------------------------------------------
# The mock store.


def mock_data() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SAMPLES / "mock-database.json").read_text())
    return data


async def import_mock(
    pool: asyncpg.Pool, data: Any, dry_run: bool = False
) -> mock_store.MockReport:
    async with pool.acquire() as connection:
        return await mock_store.import_mock_store(
            connection, data, region="US", bcrypt_rounds=4, dry_run=dry_run
        )


async def test_mock_store_users_prospects_and_calls(api: Api, pool: asyncpg.Pool) -> None:
    report = await import_mock(pool, mock_data())
    assert report.errors == []
    assert (report.users_created, report.prospects_created, report.prospects_merged) == (3, 2, 1)
    assert report.calls_created == 3

    users = {r["email"]: r for r in await pool.fetch("SELECT * FROM users")}
    stored = mock_data()["users"][0]["passwordHash"]
    assert users["ada@callfloor.example"]["password_hash"] == stored
    manager_hash = users["max@callfloor.example"]["password_hash"]
    assert bcrypt.checkpw(b"manager-password", manager_hash.encode())
    assert await api.login("alice@callfloor.example", "agent-password")

    # prospects[0] (updated 2024-03-05) wins over prospects[2]; its empty company is filled.
    ana = await pool.fetchrow("SELECT * FROM prospects WHERE phone = '+12125550123'")
    assert (ana["name"], ana["email"], ana["company"], ana["status"]) == (
        "Ana Lopez",
        "ana.lopez@example.com",
        "Acme Corp",
        "Contacted",
    )
    assert ana["created_at"].isoformat() == "2024-03-01T08:00:00+00:00"
    assert ana["last_call"].isoformat() == "2024-03-05T16:15:00+00:00"
    assert ana["phone_time_zones"] == ["America/New_York"]
    assert "prospects[0], prospects[2] share +12125550123" in report.merges[0]

    calls = await pool.fetch(
        "SELECT p.phone, u.email, c.outcome, c.duration, c.started_at, c.ended_at "
        "FROM call_logs c JOIN prospects p ON p.id = c.prospect_id "
        "JOIN users u ON u.id = c.caller_id ORDER BY c.started_at"
    )
    assert [(c["phone"], c["email"], c["outcome"], c["duration"]) for c in calls] == [
        ("+12125550123", "max@callfloor.example", "Voicemail", 25),
        ("+14155550142", "alice@callfloor.example", "No Answer", 0),
        ("+12125550123", "alice@callfloor.example", "Connected", 300),
    ]
    # Importing writes no status history: the store's status is where history starts.
    assert await pool.fetchval("SELECT count(*) FROM prospect_status_log") == 0


async def test_mock_store_imported_twice_changes_nothing(pool: asyncpg.Pool) -> None:
    await import_mock(pool, mock_data())
    before = await snapshot(pool)
    report = await import_mock(pool, mock_data())
    assert (report.users_created, report.users_existing) == (0, 3)
    assert (report.prospects_created, report.prospects_existing) == (0, 2)
    assert (report.calls_created, report.calls_existing, report.prospects_filled) == (0, 3, 0)
    assert await snapshot(pool) == before


async def test_mock_store_calls_already_archived_are_not_imported_again(
    pool: asyncpg.Pool,
) -> None:
    await import_mock(pool, mock_data())
    # The store's calls are from 2024: all of them move to the archive.
    moved = await archive.archive(pool, datetime.now(UTC) - timedelta(days=1), batch_size=2)
    assert moved.call_logs == 3
    report = await import_mock(pool, mock_data())
    assert (report.calls_created, report.calls_existing) == (0, 3)
    assert await pool.fetchval("SELECT count(*) FROM call_logs") == 0


async def test_mock_dry_run_writes_nothing(pool: asyncpg.Pool) -> None:
    before = await snapshot(pool)
    dry = await import_mock(pool, mock_data(), dry_run=True)
    assert await snapshot(pool) == before
    real = await import_mock(pool, mock_data())
    assert {**vars(dry), "dry_run": False} == vars(real)


async def test_a_bad_call_keeps_its_prospect_and_all_its_calls_out(pool: asyncpg.Pool) -> None:
    data = mock_data()
    data["calls"][1]["outcome"] = "Left a message with the dog"  # the call of prospects[2]
    data["prospects"].insert(1, {"id": "p9", "name": "No Phone", "phone": "12"})
    data["calls"].append({"id": "c9", "prospectId": "p9", "callerId": "u1", "startedAt": 1e12})
    data["calls"].append({"id": "c10", "prospectId": "p2", "callerId": "u404", "startedAt": 0})
    data["users"].append({"id": "u4", "email": "not an email", "password": "whatever-pass"})
    report = await import_mock(pool, data)

    reasons = {e.position: e.reason for e in report.errors}
    assert "users[3]" in reasons
    assert "not a valid phone number" in reasons["prospects[1]"]
    assert "unknown outcome" in reasons["calls[1]"]
    assert "was not imported" in reasons["calls[2]"]
    assert "u404" in reasons["calls[3]"]
    # Ana (prospects[0] and prospects[3], merged) had the bad call: none of her is written,
    # and neither is Ben (prospects[2]), whose added call has an unknown caller.
    assert await pool.fetchval("SELECT count(*) FROM prospects") == 0
    assert await pool.fetchval("SELECT count(*) FROM call_logs") == 0
    assert report.prospects_rejected == 3
    assert await pool.fetchval("SELECT count(*) FROM users") == 3

    # Fixed, the same file imports the rest; the already imported users are matched.
    fixed = copy.deepcopy(data)
    fixed["calls"][1]["outcome"] = "Voicemail"
    fixed["calls"].pop()
    report = await import_mock(pool, fixed)
    assert (report.prospects_created, report.calls_created, report.users_existing) == (2, 3, 3)


async def test_mock_store_fills_empty_fields_of_existing_prospects_only(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    existing = await add_prospect(api, team.agent["token"], phone="212.555.0123", name="Ana L.")
    await pool.execute("UPDATE prospects SET status = 'Callback' WHERE id = $1", existing["id"])
    log_before = await pool.fetchval("SELECT count(*) FROM prospect_status_log")
    report = await import_mock(pool, mock_data())
    assert (report.prospects_existing, report.prospects_filled) == (1, 1)
    row = await pool.fetchrow("SELECT * FROM prospects WHERE id = $1", existing["id"])
    assert (row["name"], row["status"], row["email"], row["company"]) == (
        "Ana L.",
        "Callback",
        "ana.lopez@example.com",
        "Acme Corp",
    )
    assert await pool.fetchval("SELECT count(*) FROM prospect_status_log") == log_before


async def test_mock_store_shapes(pool: asyncpg.Pool) -> None:
    with pytest.raises(BadUserInput):
        await import_mock(pool, [1, 2, 3])
    with pytest.raises(BadUserInput):
        await import_mock(pool, {"users": {"not": "a list"}})
    data = {
        "users": [
            {"_id": 7, "email": "Old@Example.com", "password": "$2y$10$" + "a" * 53},
            {"_id": 8, "email": "old@example.com", "password": "short"},
        ],
        "leads": [
            {
                "_id": 1,
                "firstName": "Lee",
                "lastName": "Chan",
                "phoneNumber": "+1 415 555 0199",
                "status": "not_interested",
                "calls": [
                    {"userId": 8, "timestamp": 1709300000000, "result": "NO-ANSWER"},
                    {"userId": 7, "timestamp": 1709300000000, "result": "no answer"},
                    {"agentEmail": "OLD@example.com", "timestamp": "2024-03-02T10:00:00"},
                ],
            }
        ],
    }
    report = await import_mock(pool, data)
    assert report.errors == []
    assert (report.users_created, report.users_merged) == (1, 1)
    # Users 7 and 8 are one person (same email), so two of the calls are one call.
    assert (report.calls_created, report.calls_duplicate) == (2, 1)
    user = await pool.fetchrow("SELECT email, password_hash FROM users")
    assert tuple(user) == ("Old@Example.com", "$2y$10$" + "a" * 53)
    prospect = await pool.fetchrow("SELECT name, status FROM prospects")
    assert tuple(prospect) == ("Lee Chan", "Not Interested")


# ---------------------------------------------------------------------------------------
# The command line, as real processes on the test database.


def test_import_csv_command(data_dir: Path, database_url: str, tmp_path: Path) -> None:
    sample = str(SAMPLES / "prospects.csv")
    errors_file = tmp_path / "errors.csv"
    dry = run(data_dir, "import-csv", sample, "--dry-run", DATABASE_URL=database_url)
    assert dry.returncode == 1, dry.stderr  # one row is rejected
    assert "dry run: rolled back, nothing was written" in dry.stdout
    assert "rolling back (dry run)" in dry.stderr
    assert "committing" not in dry.stderr + dry.stdout
    assert "inserted:" in dry.stdout

    done = run(
        data_dir,
        "import-csv",
        sample,
        "--errors-file",
        str(errors_file),
        DATABASE_URL=database_url,
    )
    assert done.returncode == 1, done.stderr
    assert "100.0%" in done.stderr  # the progress bar
    lines = dict(line.split(":", 1) for line in done.stdout.splitlines() if ":" in line)
    assert int(lines["  inserted"]) == 4
    assert "row 6: phone '555-01' is not a valid phone number" in done.stdout
    with errors_file.open() as handle:
        assert list(csv.reader(handle)) == [
            ["row", "field", "reason"],
            ["6", "phone", "phone '555-01' is not a valid phone number"],
        ]

    again = run(data_dir, "import-csv", sample, "--mode", "update", DATABASE_URL=database_url)
    again_lines = dict(line.split(":", 1) for line in again.stdout.splitlines() if ":" in line)
    assert (int(again_lines["  inserted"]), int(again_lines["  updated"])) == (0, 0)

    missing = run(data_dir, "import-csv", str(tmp_path / "nope.csv"), DATABASE_URL=database_url)
    assert missing.returncode == 2
    latin = tmp_path / "latin.csv"
    latin.write_bytes("name,phone\nJosé,212-555-0111\n".encode("latin-1"))
    refused = run(data_dir, "import-csv", str(latin), DATABASE_URL=database_url)
    assert refused.returncode == 2
    assert "--encoding" in refused.stderr
    accepted = run(
        data_dir, "import-csv", str(latin), "--encoding", "latin-1", DATABASE_URL=database_url
    )
    assert accepted.returncode == 0, accepted.stderr
    rows = query_database(database_url, "SELECT name FROM prospects WHERE phone = '+12125550111'")
    assert [row["name"] for row in rows] == ["José"]


def test_import_mock_command(data_dir: Path, database_url: str, tmp_path: Path) -> None:
    sample = str(SAMPLES / "mock-database.json")
    dry = run(data_dir, "import-mock", sample, "--dry-run", DATABASE_URL=database_url)
    assert dry.returncode == 0, dry.stderr
    assert "users: 3 created" in dry.stdout
    assert "dry run: rolled back, nothing was written" in dry.stdout

    first = run(data_dir, "import-mock", sample, DATABASE_URL=database_url)
    assert first.returncode == 0, first.stderr
    assert "prospects: 2 created" in first.stdout
    assert "calls: 3 created" in first.stdout
    second = run(data_dir, "import-mock", sample, DATABASE_URL=database_url)
    assert "users: 0 created, 3 already here" in second.stdout
    assert "calls: 0 created, 3 already here" in second.stdout

    broken = tmp_path / "broken.json"
    data = mock_data()
    data["calls"][0]["startedAt"] = "yesterday"
    broken.write_text(json.dumps(data))
    result = run(data_dir, "import-mock", str(broken), DATABASE_URL=database_url)
    assert result.returncode == 1
    assert "error: calls[0]: startedAt 'yesterday' is not a time" in result.stdout

    not_json = tmp_path / "store.json"
    not_json.write_text("{users: []}")
    assert run(data_dir, "import-mock", str(not_json), DATABASE_URL=database_url).returncode == 2
    # The refused files wrote nothing: what is there is the first import's.
    counts = query_database(
        database_url,
        "SELECT (SELECT count(*) FROM users) AS users, (SELECT count(*) FROM prospects)"
        " AS prospects, (SELECT count(*) FROM call_logs) AS calls",
    )
    assert dict(counts[0]) == {"users": 3, "prospects": 2, "calls": 3}
