"""A wheel built from the tree (not an editable install) carries everything the server
needs to run, the SQL files above all, and builds without warnings."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import sysconfig
import tomllib
import uuid
import zipfile
from pathlib import Path

import httpx
import pytest
from helpers import ROOT, drop_database, environment, free_port, wait_until_blocking

from sql import database

# What the wheel is built from: the project's own files, as a clean clone has them.
SOURCES = ("pyproject.toml", "README.md", "graph", "resolvers", "sql")
# The top-level modules as pyproject.toml lists them, so a new one cannot be forgotten here.
MODULES = tuple(
    f"{name}.py"
    for name in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "py-modules"
    ]
)


def build_wheel(destination: Path) -> tuple[Path, str]:
    """Build the wheel offline with this environment's setuptools; (wheel, build output)."""
    source = destination / "src"
    source.mkdir()
    for name in (*SOURCES, *MODULES):
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    offline = ("--no-build-isolation", "--no-deps", "--no-index")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", *offline, "-w", str(destination / "dist"), source],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (destination / "dist").glob("callfloor-*.whl")
    return wheel, built.stdout + built.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def test_the_wheel_carries_every_sql_file_and_builds_quietly(wheel: tuple[Path, str]) -> None:
    path, output = wheel
    assert "Warning" not in output, output  # e.g. "Package 'sql.migrations' ... ignored"
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
    for directory in ("migrations", "functions", "queries"):
        expected = {
            f"sql/{directory}/{file.name}" for file in (ROOT / "sql" / directory).glob("*.sql")
        }
        assert expected, directory
        assert expected <= names, expected - names
    assert {f"{module}" for module in MODULES} <= names
    assert "graph/wallboard.html" in names


def test_a_server_installed_from_the_wheel_migrates_and_serves(
    wheel: tuple[Path, str], tmp_path: Path, admin_url: str
) -> None:
    """Installed into a fresh virtual environment (the dependencies are this one's, so
    nothing is downloaded) and started away from the checkout: it migrates an empty
    database from its own SQL files, then answers GraphQL."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # This environment's dependencies, by path: a plain path entry, so the editable
    # install of the checkout (a .pth hook of this environment) does not come along.
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel[0])],
        check=True,
        timeout=300,
    )
    where = subprocess.run(
        [python, "-c", "import server, sql.migrator; print(server.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    ).stdout
    assert where.startswith(site), where

    name = f"wheel_{uuid.uuid4().hex[:12]}"
    asyncio.run(database.ensure_database(admin_url, name))
    try:
        env = environment(tmp_path / "data", DATABASE_URL=database.with_database(admin_url, name))
        migrated = subprocess.run(
            [python, "-m", "server", "migrate"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=120,
            check=False,
        )
        assert migrated.returncode == 0, migrated.stderr
        applied = migrated.stdout
        for file in (ROOT / "sql" / "migrations").glob("*.sql"):
            assert file.stem in applied
        for file in (ROOT / "sql" / "functions").glob("*.sql"):
            assert f"functions/{file.name}" in applied
        assert "Warning" not in migrated.stderr, migrated.stderr

        port = free_port()
        served = subprocess.Popen(
            [python, "-m", "server", "serve"],
            cwd=tmp_path,
            env={**env, "PORT": str(port)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:

                def healthy() -> bool:
                    assert served.poll() is None, served.communicate()[0]
                    try:
                        return client.get("/healthz").status_code == 200
                    except httpx.TransportError:
                        return False

                wait_until_blocking(healthy, 60, "the installed server did not come up")
                answer = client.post("/graphql", json={"query": "{ dispositions { name } }"})
                assert answer.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
                page = client.get("/wallboard")
                assert page.status_code == 200
                assert "activeCallEvents" in page.text
        finally:
            served.send_signal(signal.SIGINT)
            output = served.communicate(timeout=30)[0]
        assert "Warning" not in output, output
    finally:
        asyncio.run(drop_database(admin_url, name))
