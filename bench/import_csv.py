"""Benchmark the CSV import: rows/s and peak memory at 100,000 and 1,000,000 rows.

Writes CSV files into a temporary directory, the way spreadsheets arrive: phones written
every which way ("+1 212-555-0123", "(212) 555-0123", "212.555.0123", "2125550123",
a few "+44 20 ..." and "+33 6 ..."), 1% repeats of an earlier phone in another writing,
0.1% broken phones. Starts an embedded PostgreSQL in another temporary directory and,
for each size, creates a fresh database and runs `server.py import-csv FILE` (the
command an operator runs) as a child process, then runs it again on the same file
(`--mode update`: every row is found unchanged). The child's peak RSS comes from
os.wait4, so it is the importing process alone, not this script.

Also times phone normalization alone: phonenumbers in full against the fast path.

Usage: .venv/bin/python bench/import_csv.py [--rows 100000,1000000] [--no-again] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import asyncpg
import common
import psutil

from resolvers.bulk_phones import PhoneNormalizer
from resolvers.phones import normalize_phone, phone_time_zones

AREAS = ("212", "312", "415", "617", "646", "713", "305", "404", "206", "303")
FIRST = ("Ana", "Ben", "Chloe", "Dev", "Emma", "Finn", "Grace", "Hugo", "Iris", "Jon")
LAST = ("Lopez", "Meyer", "Nakamura", "Okafor", "Patel", "Quinn", "Rossi", "Singh", "Tran")
COMPANIES = ("Acme Corp", "Globex", "Initech", "Umbrella", "Hooli", "")
STATUSES = ("New", "New", "New", "Contacted", "Callback", "")


def north_american(index: int) -> str:
    """A distinct valid North American number for each index below 8,000,000 per area."""
    line = (index // len(AREAS)) * 7919 % 8_000_000
    return f"{AREAS[index % len(AREAS)]}{200 + line // 10_000}{line % 10_000:04d}"


def written(number: str, rng: random.Random) -> str:
    """A 10-digit North American number the way some spreadsheet wrote it."""
    area, exchange, line = number[:3], number[3:6], number[6:]
    return rng.choice(
        (
            f"+1{number}",
            f"+1 {area}-{exchange}-{line}",
            f"({area}) {exchange}-{line}",
            f"{area}.{exchange}.{line}",
            number,
            f"1-{area}-{exchange}-{line}",
        )
    )


def write_csv(path: Path, rows: int, seed: int = 7) -> None:
    """rows data rows under a header, written in chunks so memory stays small."""
    rng = random.Random(seed)
    with path.open("w", newline="") as handle:
        handle.write("First Name,Last Name,Phone,Email,Company,Status\n")
        chunk: list[str] = []
        for index in range(rows):
            roll = rng.random()
            if roll < 0.001:
                phone = "555-01"  # broken
            elif roll < 0.011 and index > 0:
                phone = written(north_american(rng.randrange(index)), rng)  # a repeat
            elif roll < 0.021:
                phone = rng.choice(("+44 20 7946 {:04d}", "+33 6 12 34 {:04d}")).format(
                    index % 10_000
                )
            else:
                phone = written(north_american(index), rng)
            first, last = rng.choice(FIRST), rng.choice(LAST)
            email = f"{first}.{last}.{index}@example.com".lower()
            company, status = rng.choice(COMPANIES), rng.choice(STATUSES)
            chunk.append(f"{first},{last},{phone},{email},{company},{status}\n")
            if len(chunk) == 10_000:
                handle.writelines(chunk)
                chunk.clear()
        handle.writelines(chunk)


@dataclass
class Run:
    """One import-csv process."""

    rows: int
    mode: str
    seconds_total: float
    seconds_import: float
    rows_per_second: float
    peak_rss_mb: float
    # CPU seconds, whatever else the machine was doing: the import-csv process, and the
    # database server (its backends, checkpointer, WAL writer).
    cpu_import: float
    cpu_postgres: float
    inserted: int
    updated: int
    skipped: int
    duplicates_in_file: int
    errors: int


def postgres_cpu_seconds(postmaster: psutil.Process) -> float:
    """CPU time of the server: the postmaster reaps its backends, so their time adds up in
    its children's times once they exit; the live ones (checkpointer, ...) are added."""
    total = sum(postmaster.cpu_times()[:4])
    for child in postmaster.children():
        with contextlib.suppress(psutil.NoSuchProcess):
            total += common.cpu_seconds(child)
    return total


def run_import(csv_path: Path, url: str, rows: int, mode: str, postmaster: psutil.Process) -> Run:
    """Run `server.py import-csv` as a child; time it and read its peak RSS and CPU."""
    env = {**os.environ, "DATABASE_URL": url}
    postgres_before = postgres_cpu_seconds(postmaster)
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as errors:
        process = subprocess.Popen(
            [
                sys.executable,
                str(common.PROJECT_ROOT / "server.py"),
                "import-csv",
                str(csv_path),
                "--mode",
                mode,
            ],
            cwd=common.PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        assert process.stdout is not None
        output = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        total = time.perf_counter() - started
        postgres_cpu = postgres_cpu_seconds(postmaster) - postgres_before
        errors.seek(0)
        timing = re.search(r"^rows: ([\d,]+) in ([\d.]+) s", output, re.MULTILINE)
        if timing is None:
            raise RuntimeError(
                f"import-csv failed ({process.returncode}):\n{output}{errors.read()}"
            )
    seconds = float(timing.group(2))
    counts = {
        name: int(match.group(1).replace(",", ""))
        for name in ("inserted", "updated", "skipped", "duplicates in file", "errors")
        if (match := re.search(rf"^\s+{name}:\s+([\d,]+)$", output, re.MULTILINE))
    }
    return Run(
        rows=rows,
        mode=mode,
        seconds_total=round(total, 2),
        seconds_import=seconds,
        rows_per_second=round(rows / seconds),
        peak_rss_mb=round(usage.ru_maxrss / 1024, 1),  # kilobytes on Linux
        cpu_import=round(usage.ru_utime + usage.ru_stime, 1),
        cpu_postgres=round(postgres_cpu, 1),
        inserted=counts["inserted"],
        updated=counts["updated"],
        skipped=counts["skipped"],
        duplicates_in_file=counts["duplicates in file"],
        errors=counts["errors"],
    )


def time_phones(count: int = 20_000) -> dict[str, float]:
    """µs per number: phonenumbers in full (E.164 and zones) against the fast path."""
    rng = random.Random(3)
    numbers = [written(north_american(i), rng) for i in range(count)]
    started = time.perf_counter()
    for number in numbers:
        e164 = normalize_phone(number, "US")
        phone_time_zones(e164)
    full = (time.perf_counter() - started) / count * 1e6
    phones = PhoneNormalizer("US")
    started = time.perf_counter()
    for number in numbers:
        phones.normalize(number)
    fast = (time.perf_counter() - started) / count * 1e6
    return {"phonenumbers_us": round(full, 1), "fast_path_us": round(fast, 1)}


async def fresh_database(admin_url: str, name: str) -> str:
    connection = await asyncpg.connect(admin_url)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await connection.close()
    return await common.create_database(admin_url, name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100000,1000000", help="comma-separated sizes")
    parser.add_argument("--no-again", action="store_true", help="skip the second import")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    sizes = [int(size) for size in args.rows.split(",")]

    postgres = common.TemporaryPostgres("cf-bench-")
    results: list[Run] = []
    try:
        admin_url = postgres.start()
        postmaster = psutil.Process(postgres.postmaster_pid())
        phones = time_phones()
        for size in sizes:
            csv_path = postgres.directory / f"prospects-{size}.csv"
            started = time.perf_counter()
            write_csv(csv_path, size)
            generated = time.perf_counter() - started
            megabytes = csv_path.stat().st_size / 1e6
            print(f"{size:,} rows: {megabytes:.0f} MB written in {generated:.1f} s", flush=True)
            url = asyncio.run(fresh_database(admin_url, f"bench_import_{size}"))
            modes = ["skip"] if args.no_again else ["skip", "update"]
            for mode in modes:
                result = run_import(csv_path, url, size, mode, postmaster)
                results.append(result)
                print(
                    f"  {mode:6} {result.seconds_import:6.1f} s import "
                    f"({result.seconds_total:.1f} s process), "
                    f"{result.rows_per_second:>9,} rows/s, peak RSS {result.peak_rss_mb} MB, "
                    f"CPU {result.cpu_import} s import-csv + {result.cpu_postgres} s PostgreSQL; "
                    f"inserted {result.inserted:,}, updated {result.updated:,}, "
                    f"skipped {result.skipped:,}, duplicates {result.duplicates_in_file:,}, "
                    f"errors {result.errors:,}",
                    flush=True,
                )
            csv_path.unlink()
    finally:
        postgres.remove()
    print(
        f"phones: phonenumbers {phones['phonenumbers_us']} µs/number (E.164 and zones), "
        f"fast path {phones['fast_path_us']} µs/number"
    )
    # Other work on the machine slows every figure; say how busy it was.
    print("load average (1, 5, 15 min): {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
    if args.json:
        print(
            json.dumps(
                {
                    "machine": common.cores_note(),
                    "phones": phones,
                    "runs": [asdict(r) for r in results],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
