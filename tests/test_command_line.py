"""server.py as operators use it: real processes on a real embedded database."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import bcrypt
import pytest
from helpers import LOGIN, post_graphql, query_database, run, serving

PASSWORD = "operator-password"


def test_operator_workflow_and_data_survive_restart(data_dir: Path) -> None:
    created = run(
        data_dir,
        "create-user",
        "--email",
        "boss@example.com",
        "--role",
        "admin",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert created.returncode == 0, created.stderr
    assert "created admin boss@example.com" in created.stdout

    duplicate = run(
        data_dir,
        "create-user",
        "--email",
        "BOSS@example.com",
        "--role",
        "agent",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert duplicate.returncode == 2
    assert "already exists" in duplicate.stderr

    refused = run(data_dir, "reset-db")
    assert refused.returncode == 2
    assert "--yes" in refused.stderr

    with serving(data_dir) as (client, _):
        token = post_graphql(client, LOGIN, e="boss@example.com", p=PASSWORD)["login"]["token"]
        post_graphql(
            client,
            'mutation { createProspect(input: {name: "Kept", phone: "212-555-0188"}) { id } }',
            token,
        )
        # A command beside the running server shares its embedded database.
        seeded = run(data_dir, "seed-demo")
        assert seeded.returncode == 0, seeded.stderr
        assert "agent1@demo.test" in seeded.stdout

    with serving(data_dir) as (client, _):
        token = post_graphql(client, LOGIN, e="boss@example.com", p=PASSWORD)["login"]["token"]
        data = post_graphql(
            client,
            '{ prospects(first: 100, filter: {search: "Kept"}) { edges { node { phone } } } }',
            token,
        )
        assert data["prospects"]["edges"] == [{"node": {"phone": "+12125550188"}}]

    reset = run(data_dir, "reset-db", "--yes")
    assert reset.returncode == 0, reset.stderr
    migrated = run(data_dir, "migrate")
    assert "schema is up to date" in migrated.stdout


def test_first_run_on_the_embedded_database_loads_the_demo(data_dir: Path) -> None:
    with serving(data_dir) as (client, served):
        token = post_graphql(client, LOGIN, e="agent1@demo.test", p="demo-password")["login"][
            "token"
        ]
        data = post_graphql(client, "{ prospects(first: 100) { edges { node { id } } } }", token)
        assert len(data["prospects"]["edges"]) == 100
    assert "Demo logins" in served.output
    assert "agent1@demo.test" in served.output
    # A clean start is quiet: no Python warning (platformdirs' RuntimeDirWarning was one).
    assert "Warning" not in served.output, served.output


def test_commands_print_no_warnings(data_dir: Path) -> None:
    migrated = run(data_dir, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "applied: 001_create_core_schema" in migrated.stdout
    again = run(data_dir, "migrate")
    assert "schema is up to date" in again.stdout
    for done in (migrated, again):
        assert "Warning" not in done.stdout + done.stderr, done.stderr


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stopping_the_server_stops_its_embedded_database(
    data_dir: Path, stop: signal.Signals
) -> None:
    """Ctrl-C, or SIGTERM from a service manager: the server shuts down gracefully and
    the embedded PostgreSQL it started stops with it (SIGTERM used to leave it running)."""
    pid_file = data_dir / "postgres" / "postmaster.pid"
    with serving(data_dir, stop=stop) as (client, served):
        assert client.get("/healthz").status_code == 200
        assert pid_file.exists()
    assert "Application shutdown complete" in served.output
    assert served.status == 0
    assert not pid_file.exists(), served.output
    assert json.loads((data_dir / "postgres" / ".handle_pids.json").read_text()) == []


def test_an_external_database_is_never_seeded(data_dir: Path, database_url: str) -> None:
    with serving(data_dir, DATABASE_URL=database_url) as (client, served):
        response = client.post(
            "/graphql",
            json={"query": LOGIN, "variables": {"e": "agent1@demo.test", "p": "demo-password"}},
        )
        assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert "Demo logins" not in served.output


def test_create_user_takes_a_batch_from_csv_or_json_lines(
    data_dir: Path, database_url: str, tmp_path: Path
) -> None:
    csv_batch = (
        "email,role,name,password\n"
        "ann@example.com,agent,Ann,ann-password-1\n"
        "bob@example.com,manager,,bob-password-2\n"
    )
    made = run(
        data_dir, "create-user", "--from-file", "-", stdin=csv_batch, DATABASE_URL=database_url
    )
    assert made.returncode == 0, made.stderr
    assert "created 2 users" in made.stdout
    lines = tmp_path / "users.jsonl"
    lines.write_text('{"email": "cy@example.com", "role": "admin", "password": "cy-password-3"}\n')
    one = run(data_dir, "create-user", "--from-file", str(lines), DATABASE_URL=database_url)
    assert one.returncode == 0, one.stderr
    assert "created 1 user\n" in one.stdout
    rows = query_database(
        database_url, "SELECT email, role, name, password_hash FROM users ORDER BY email"
    )
    assert [(r["email"], r["role"], r["name"]) for r in rows] == [
        ("ann@example.com", "agent", "Ann"),
        ("bob@example.com", "manager", ""),
        ("cy@example.com", "admin", ""),
    ]
    # Hashed at the configured cost (BCRYPT_ROUNDS=4 here), each its own password.
    assert all(r["password_hash"].startswith("$2b$04$") for r in rows)
    assert bcrypt.checkpw(b"bob-password-2", rows[1]["password_hash"].encode())


def test_a_batch_with_bad_rows_creates_nobody_and_names_every_row(
    data_dir: Path, database_url: str
) -> None:
    taken = run(
        data_dir,
        "create-user",
        "--email",
        "taken@example.com",
        "--role",
        "agent",
        "--password-stdin",
        stdin="taken-password\n",
        DATABASE_URL=database_url,
    )
    assert taken.returncode == 0, taken.stderr
    batch = "\n".join(
        [
            '{"email": "fine@example.com", "role": "agent", "password": "fine-password"}',
            '{"email": "boss@example.com", "role": "owner", "password": "boss-password"}',
            '{"email": "short@example.com", "role": "agent", "password": "short"}',
            '{"email": "TAKEN@example.com", "role": "agent", "password": "taken-password"}',
            '{"email": "Fine@example.com", "role": "agent", "password": "fine-password"}',
            '{"email": "not-an-email", "role": "agent", "password": "fine-password"}',
        ]
    )
    refused = run(
        data_dir, "create-user", "--from-file", "-", stdin=batch, DATABASE_URL=database_url
    )
    assert refused.returncode == 2
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error: line")]
    assert [line.split(":")[1].strip() for line in errors] == [
        "line 2",
        "line 3",
        "line 4",
        "line 5",
        "line 6",
    ], refused.stderr
    assert "must be agent, manager or admin" in errors[0]
    assert "already exists" in errors[2]
    assert "also on line 1" in errors[3]
    assert "nothing was created: 5 rows cannot be used" in refused.stderr
    emails = query_database(database_url, "SELECT email FROM users")
    assert [row["email"] for row in emails] == ["taken@example.com"]
