"""server.py as operators use it: real processes on a real embedded database."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from helpers import LOGIN, post_graphql, run, serving

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
