"""server.py as operators use it: real processes on a real embedded database."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "operator-password"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def environment(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_URL", "DB_", "TEST_DATABASE_URL"))
    }
    env.update(DATA_DIR=str(data_dir), BCRYPT_ROUNDS="4", **extra)
    return env


def run(
    data_dir: Path, *args: str, stdin: str = "", **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "server.py"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=environment(data_dir, **extra),
        cwd=ROOT,
        timeout=120,
        check=False,
    )


class Served:
    """What a `serve` process printed and its exit status, filled in once it has stopped."""

    output = ""
    status: int | None = None


@contextmanager
def serving(
    data_dir: Path, stop: signal.Signals = signal.SIGINT, **extra: str
) -> Iterator[tuple[httpx.Client, Served]]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "server.py"), "serve"],
        env=environment(data_dir, PORT=str(port), **extra),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    served = Served()
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail("server exited: " + process.communicate()[0])
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.2)
        yield client, served
    finally:
        client.close()
        process.send_signal(stop)
        served.output = process.communicate(timeout=30)[0]
        served.status = process.returncode


def graphql(
    client: httpx.Client, query: str, token: str | None = None, **variables: object
) -> dict:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    response = client.post(
        "/graphql", json={"query": query, "variables": variables}, headers=headers
    )
    assert response.status_code == 200
    body: dict = response.json()
    assert not body.get("errors"), body
    return body["data"]


LOGIN = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }"


@pytest.fixture
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Short path: the embedded server's socket lives under it.
    return Path(tmp_path_factory.mktemp("cli"))


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
        token = graphql(client, LOGIN, e="boss@example.com", p=PASSWORD)["login"]["token"]
        graphql(
            client,
            'mutation { createProspect(input: {name: "Kept", phone: "212-555-0188"}) { id } }',
            token,
        )
        # A command beside the running server shares its embedded database.
        seeded = run(data_dir, "seed-demo")
        assert seeded.returncode == 0, seeded.stderr
        assert "agent1@demo.test" in seeded.stdout

    with serving(data_dir) as (client, _):
        token = graphql(client, LOGIN, e="boss@example.com", p=PASSWORD)["login"]["token"]
        data = graphql(
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
        token = graphql(client, LOGIN, e="agent1@demo.test", p="demo-password")["login"]["token"]
        data = graphql(client, "{ prospects(first: 100) { edges { node { id } } } }", token)
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
