"""GraphQL over HTTP: application/graphql-response+json for clients that accept it (a
request that never ran is then a 400 without data), application/json as ever for the
rest, and graphql-http's own audit of the server, run with Node.

Without Node and npm the audit skips, saying why, except in CI (CI set, as .ci/run sets
it, and .ci/run installs them), where it fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from typing import Any

import asyncpg
import pytest
from helpers import IN_CI, ROOT, Api, Team, bearer, table_rows

SCRIPT = ROOT / "tests" / "graphql_http_audit.js"
NODE_DIR = ROOT / "tests" / ".node"
# Pinned, so a new release of the audit cannot turn the suite red by itself.
PACKAGES = {"graphql-http": "1.23.1", "graphql": "16.15.0"}
GRAPHQL_RESPONSE = "application/graphql-response+json"
BOTH = f"{GRAPHQL_RESPONSE}, application/json"
# Tables a request could write: the audit and the refusals below must write nothing.
TABLES = ("users", "sessions", "login_failures", "prospects", "call_logs")


def installed_version(package: str) -> str | None:
    manifest = NODE_DIR / "node_modules" / package / "package.json"
    if not manifest.exists():
        return None
    version: str = json.loads(manifest.read_text())["version"]
    return version


def install_audit() -> str | None:
    """Install the audit's packages into tests/.node (ignored by git) from the npm
    registry unless they are there; why the audit cannot run, or None when it can."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return "no Node.js and npm (apt-get install nodejs npm, or run .ci/run)"
    if all(installed_version(name) == version for name, version in PACKAGES.items()):
        return None
    NODE_DIR.mkdir(exist_ok=True)
    specs = [f"{name}@{version}" for name, version in PACKAGES.items()]
    command = [npm, "install", "--prefix", str(NODE_DIR), "--no-save", "--no-package-lock"]
    command += ["--no-audit", "--no-fund", "--loglevel=error", *specs]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    except subprocess.TimeoutExpired:
        return "npm install of the audit timed out"
    if done.returncode != 0:
        return f"npm install of the audit failed: {done.stderr.strip()[-500:]}"
    return None


@pytest.fixture(scope="session")
def audit_node() -> str:
    """Node, with graphql-http installed where the audit script finds it."""
    missing = install_audit()
    if missing is not None:
        if IN_CI:
            pytest.fail(f"graphql-http audit: {missing}; CI must run it", pytrace=False)
        pytest.skip(f"graphql-http audit: {missing}")
    node = shutil.which("node")
    assert node is not None
    return node


async def test_the_graphql_http_audit_passes_every_check(
    audit_node: str, api: Api, pool: asyncpg.Pool
) -> None:
    before = await table_rows(pool, TABLES)
    # Asynchronously: the server under audit runs in this event loop.
    process = await asyncio.create_subprocess_exec(
        audit_node,
        str(SCRIPT),
        f"{api.base_url}/graphql",
        env={**os.environ, "NODE_PATH": str(NODE_DIR / "node_modules")},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, stderr.decode()
    summary = json.loads(stdout)
    assert summary["notOk"] == []
    assert (summary["ok"], summary["warn"], summary["error"]) == (61, 0, 0)
    assert await table_rows(pool, TABLES) == before


async def post(
    api: Api, accept: str | None, payload: dict[str, Any], token: str | None = None
) -> tuple[int, str, dict[str, Any]]:
    """POST /graphql with this Accept header (None: none at all); status, media type, body."""
    request = api.client.build_request(
        "POST", "/graphql", json=payload, headers=bearer(token) if token else {}
    )
    if accept is None:
        del request.headers["accept"]  # httpx's default, */*
    else:
        request.headers["accept"] = accept
    response = await api.client.send(request)
    media_type = response.headers["content-type"].split(";")[0]
    assert response.headers["vary"].lower().startswith("accept")
    body: dict[str, Any] = response.json()
    return response.status_code, media_type, body


REQUEST_ERRORS = {
    "GRAPHQL_PARSE_FAILED": {"query": "{ viewer { id "},
    "GRAPHQL_VALIDATION_FAILED": {"query": "{ noSuchField }"},
    "BAD_USER_INPUT": {
        "query": "query($id: ID!) { prospect(id: $id) { id } }",
        "variables": {"id": {"not": "an id"}},
    },
}


async def test_a_request_that_never_ran_is_a_400_for_graphql_response_clients(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    before = await table_rows(pool, TABLES)
    for accept in (GRAPHQL_RESPONSE, BOTH, f"application/json;q=0.5, {GRAPHQL_RESPONSE}"):
        for expected, payload in REQUEST_ERRORS.items():
            status, media_type, body = await post(api, accept, payload, team.agent["token"])
            assert (status, media_type) == (400, GRAPHQL_RESPONSE), (accept, expected)
            assert "data" not in body
            assert [error["extensions"]["code"] for error in body["errors"]] == [expected]
    assert await table_rows(pool, TABLES) == before


async def test_a_malformed_request_is_a_400_whatever_the_client_accepts(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    """Parameters of the wrong JSON type are not a GraphQL request at all: 400 for every
    client, application/json or none included, and nothing runs."""
    before = await table_rows(pool, TABLES)
    malformed = [
        {"query": "{ viewer { id } }", "operationName": invalid}
        for invalid in ({"obj": "ect"}, 0, False, ["array"])
    ]
    malformed += [{"query": 1}, {"query": "{ viewer { id } }", "variables": []}]
    for payload in malformed:
        for accept in (None, "application/json", GRAPHQL_RESPONSE):
            headers = {**bearer(team.agent["token"]), **({"accept": accept} if accept else {})}
            response = await api.client.post("/graphql", json=payload, headers=headers)
            assert response.status_code == 400, (payload, accept, response.text)
    assert await table_rows(pool, TABLES) == before


async def test_graphql_response_clients_get_200_when_the_operation_ran(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    status, media_type, body = await post(api, GRAPHQL_RESPONSE, {"query": "{ viewer { id } }"})
    # A field's error (here no token) is not a request error: 200, data null, a path.
    assert (status, media_type) == (200, GRAPHQL_RESPONSE)
    assert body["data"] is None
    assert body["errors"][0]["path"] == ["viewer"]
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"

    create = {
        "query": 'mutation { createProspect(input: {name: "Ada", phone: "212-555-0142"}) { id } }'
    }
    status, media_type, body = await post(api, GRAPHQL_RESPONSE, create, team.agent["token"])
    assert (status, media_type) == (200, GRAPHQL_RESPONSE)
    assert (
        await pool.fetchval("SELECT id::text FROM prospects")
        == body["data"]["createProspect"]["id"]
    )


async def test_json_clients_keep_200_with_errors(api: Api, team: Team, pool: asyncpg.Pool) -> None:
    before = await table_rows(pool, TABLES)
    for accept in (
        None,
        "*/*",
        "application/json",
        "application/*",
        f"application/json, {GRAPHQL_RESPONSE};q=0.9",
        f"{GRAPHQL_RESPONSE};q=0, application/json",
    ):
        for expected, payload in REQUEST_ERRORS.items():
            status, media_type, body = await post(api, accept, payload, team.agent["token"])
            assert (status, media_type) == (200, "application/json"), (accept, expected)
            assert body["data"] is None
            assert [error["extensions"]["code"] for error in body["errors"]] == [expected]
    status, media_type, body = await post(api, "application/json", {"query": "{ viewer { id } }"})
    assert (status, media_type) == (200, "application/json")
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert await table_rows(pool, TABLES) == before


async def test_get_requests_negotiate_the_same_way(api: Api, team: Team) -> None:
    for accept, expected in (
        (GRAPHQL_RESPONSE, (400, GRAPHQL_RESPONSE)),
        ("application/json", (200, "application/json")),
    ):
        response = await api.client.get(
            "/graphql", params={"query": "{ viewer { id "}, headers={"accept": accept}
        )
        media_type = response.headers["content-type"].split(";")[0]
        assert (response.status_code, media_type) == expected
        assert response.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
    response = await api.client.get(
        "/graphql",
        params={"query": "{ viewer { id } }"},
        headers={"accept": GRAPHQL_RESPONSE, **bearer(team.agent["token"])},
    )
    assert response.status_code == 200
    assert response.json() == {"data": {"viewer": {"id": team.agent["id"]}}}
