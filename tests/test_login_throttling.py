"""Failed logins slow down the client that makes them, never the account's owner.

Throttling counts failures per (email, client address) and per client address across
emails, with a wait that doubles after each further failure; the client address is the
socket peer (tests connect from 127.0.0.2, 127.0.0.3, ... as real peers), or what a
trusted proxy forwarded. A login for an unknown email costs a bcrypt check of the
configured cost, like a known one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from helpers import (
    PASSWORD,
    Api,
    client_from,
    running_server,
    serving,
)

from resolvers import auth
from resolvers.users import create_user
from settings import Settings

LOGIN = (
    "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token user { id } } }"
)
OWNER = "owner@test.example"
OTHER = "other@test.example"


@pytest.fixture
def throttling(settings: Settings) -> Settings:
    """Waits long enough that no test outruns one by accident (a slow machine)."""
    return replace(
        settings,
        login_max_failures=5,
        login_max_address_failures=20,
        login_backoff_seconds=60,
        login_backoff_max_seconds=900,
        login_failure_window_seconds=3600,
    )


@pytest.fixture
async def api(throttling: Settings) -> AsyncIterator[Api]:
    async with running_server(throttling) as client:
        yield client


@pytest.fixture
async def users(pool: asyncpg.Pool, throttling: Settings) -> dict[str, str]:
    """An admin (the owner the attacker is after) and another user: email -> id."""
    made = {}
    for email, role in ((OWNER, "admin"), (OTHER, "agent")):
        record = await create_user(
            pool,
            email=email,
            name=email.split("@")[0],
            password=PASSWORD,
            role=role,
            bcrypt_rounds=throttling.bcrypt_rounds,
        )
        made[email] = str(record["id"])
    return made


async def graphql_login(
    client: httpx.AsyncClient, email: str, password: str, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """The login mutation's whole response body."""
    response = await client.post(
        "/graphql", json={"query": LOGIN, "variables": {"e": email, "p": password}}, headers=headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def code(body: dict[str, Any]) -> str | None:
    """The one error's code, or None when the login succeeded."""
    if not body.get("errors"):
        assert body["data"]["login"]["token"]
        return None
    assert len(body["errors"]) == 1, body
    assert body["data"] is None, body
    value: str = body["errors"][0]["extensions"]["code"]
    return value


def retry_after(body: dict[str, Any]) -> int:
    """retryAfterSeconds of a TOO_MANY_REQUESTS answer."""
    assert code(body) == "TOO_MANY_REQUESTS", body
    value: int = body["errors"][0]["extensions"]["retryAfterSeconds"]
    return value


async def failures(pool: asyncpg.Pool) -> list[tuple[str, str]]:
    """(address, email) of every failure the database holds, sorted."""
    rows = await pool.fetch("SELECT address::text, email FROM login_failures")
    return sorted((row["address"], row["email"]) for row in rows)


async def sessions_of(pool: asyncpg.Pool, user_id: str) -> int:
    count: int = await pool.fetchval("SELECT count(*) FROM sessions WHERE user_id = $1", user_id)
    return count


async def test_an_attacker_is_throttled_while_the_owner_signs_in_from_elsewhere(
    api: Api, users: dict[str, str], pool: asyncpg.Pool
) -> None:
    async with (
        client_from(api.base_url, "127.0.0.3") as attacker,
        client_from(api.base_url, "127.0.0.2") as owner,
    ):
        for attempt in range(5):
            # Case and spaces do not give an attacker fresh attempts.
            written = OWNER.upper() if attempt % 2 else f"  {OWNER} "
            body = await graphql_login(attacker, written, f"wrong-{attempt}")
            assert code(body) == "UNAUTHENTICATED", attempt

        # Now the attacker waits, even with the right password; neither path checks it.
        assert 0 < retry_after(await graphql_login(attacker, OWNER, PASSWORD)) <= 60
        right = {"email": OWNER, "password": PASSWORD}
        refused = await attacker.post("/api/auth/login", json=right)
        assert refused.status_code == 429
        assert refused.json()["code"] == "TOO_MANY_REQUESTS"
        assert 0 < refused.json()["retryAfterSeconds"] <= 60
        assert refused.headers["retry-after"] == str(refused.json()["retryAfterSeconds"])
        assert "token" not in refused.json()
        assert await sessions_of(pool, users[OWNER]) == 0

        # The owner, from another address, gets in by GraphQL and REST.
        assert code(await graphql_login(owner, OWNER, PASSWORD)) is None
        signed_in = await owner.post("/api/auth/login", json=right)
        assert signed_in.status_code == 200, signed_in.text
        assert signed_in.json()["user"]["id"] == users[OWNER]
        assert await sessions_of(pool, users[OWNER]) == 2

        # The attacker's address is throttled for that email only, so far.
        assert code(await graphql_login(attacker, OTHER, PASSWORD)) is None
        assert 0 < retry_after(await graphql_login(attacker, OWNER, "wrong-again")) <= 60

    assert await failures(pool) == [("127.0.0.3/32", OWNER)] * 5


async def test_each_further_failure_doubles_the_wait_up_to_the_longest(
    settings: Settings, users: dict[str, str], pool: asyncpg.Pool
) -> None:
    limits = replace(
        settings,
        login_max_failures=3,
        login_backoff_seconds=10,
        login_backoff_max_seconds=40,
        login_failure_window_seconds=3600,
    )
    async with running_server(limits) as api, client_from(api.base_url, "127.0.0.6") as client:
        for _ in range(3):
            assert code(await graphql_login(client, OWNER, "wrong")) == "UNAUTHENTICATED"
        waits = []
        for _ in range(4):
            wait = retry_after(await graphql_login(client, OWNER, "wrong"))
            rest = await client.post("/api/auth/login", json={"email": OWNER, "password": "x" * 8})
            assert rest.status_code == 429
            waits.append(wait)
            # Time passes: the last failure is as old as the wait.
            await pool.execute(
                "UPDATE login_failures SET failed_at = failed_at - make_interval(secs => $1)",
                wait,
            )
            assert code(await graphql_login(client, OWNER, "wrong")) == "UNAUTHENTICATED"
        assert waits == [10, 20, 40, 40]
        assert len(await failures(pool)) == 7

        # Failures older than the window no longer count: the owner's password works.
        await pool.execute("UPDATE login_failures SET failed_at = failed_at - interval '1 hour'")
        assert code(await graphql_login(client, OWNER, PASSWORD)) is None
    assert await failures(pool) == []
    assert await sessions_of(pool, users[OWNER]) == 1


async def test_thirty_emails_at_once_from_one_address_are_throttled(
    api: Api, users: dict[str, str], pool: asyncpg.Pool
) -> None:
    emails = [f"guess{n}@test.example" for n in range(30)]
    async with (
        client_from(api.base_url, "127.0.0.4") as sprayer,
        client_from(api.base_url, "127.0.0.2") as owner,
    ):

        async def guess(n: int, email: str) -> str | None:
            if n % 2:
                response = await sprayer.post(
                    "/api/auth/login", json={"email": email, "password": "Summer2024!"}
                )
                status = {401: "UNAUTHENTICATED", 429: "TOO_MANY_REQUESTS"}
                assert status[response.status_code] == response.json()["code"]
                return status[response.status_code]
            return code(await graphql_login(sprayer, email, "Summer2024!"))

        # All at once: attempts being checked count against each other.
        answers = await asyncio.gather(*(guess(n, email) for n, email in enumerate(emails)))
        assert sorted(answers, key=str) == ["TOO_MANY_REQUESTS"] * 10 + ["UNAUTHENTICATED"] * 20
        # Once over the limit, even a real user's right password waits at that address.
        assert 0 < retry_after(await graphql_login(sprayer, OTHER, PASSWORD)) <= 60
        assert code(await graphql_login(owner, OTHER, PASSWORD)) is None

    recorded = await failures(pool)
    assert len(recorded) == 20
    assert {address for address, _ in recorded} == {"127.0.0.4/32"}
    assert {email for _, email in recorded} < set(emails)
    assert await sessions_of(pool, users[OTHER]) == 1


async def test_a_crowd_signing_in_at_once_from_one_address_gets_in(
    api: Api, pool: asyncpg.Pool
) -> None:
    """Fifty people behind one address (an office's NAT) at the start of a shift: attempts
    being checked make the others queue, not fail, when they prove right."""
    crowd = [f"floor{n}@test.example" for n in range(50)]
    for email in crowd:
        await create_user(
            pool, email=email, name="floor", password=PASSWORD, role="agent", bcrypt_rounds=4
        )
    async with client_from(api.base_url, "127.0.0.8") as office:
        answers = await asyncio.gather(*(graphql_login(office, email, PASSWORD) for email in crowd))
    assert [code(answer) for answer in answers] == [None] * len(crowd)
    assert await pool.fetchval("SELECT count(DISTINCT user_id) FROM sessions") == len(crowd)
    assert await failures(pool) == []


async def test_a_right_password_forgives_only_that_emails_failures(
    api: Api, users: dict[str, str], pool: asyncpg.Pool
) -> None:
    async with client_from(api.base_url, "127.0.0.7") as client:
        for _ in range(2):
            for _ in range(4):
                assert code(await graphql_login(client, OWNER, "mistyped")) == "UNAUTHENTICATED"
            unknown = await graphql_login(client, "nobody@test.example", "x" * 8)
            assert code(unknown) == "UNAUTHENTICATED"
            # The owner mistyped four times and then got it right: those four are forgiven,
            # so the next round starts afresh; the unknown email's failures stay.
            assert code(await graphql_login(client, OWNER, PASSWORD)) is None
            assert {email for _, email in await failures(pool)} == {"nobody@test.example"}
    assert await failures(pool) == [("127.0.0.7/32", "nobody@test.example")] * 2
    assert await sessions_of(pool, users[OWNER]) == 2


async def test_forwarded_for_is_believed_only_from_trusted_proxies(
    api: Api, users: dict[str, str], pool: asyncpg.Pool
) -> None:
    # api.client connects from 127.0.0.1, a trusted proxy by default (uvicorn's default).
    proxy = api.client
    for n in range(5):
        forwarded = {"x-forwarded-for": f"2001:db8::{n + 1}"}
        assert code(await graphql_login(proxy, OWNER, "wrong", forwarded)) == "UNAUTHENTICATED"
    # Another address within the same IPv6 /64 is the same client.
    same_network = {"x-forwarded-for": "2001:db8::ffff"}
    assert 0 < retry_after(await graphql_login(proxy, OWNER, PASSWORD, same_network)) <= 60
    # The owner behind the same proxy, from elsewhere, gets in; so does a v4 client.
    owner = {"x-forwarded-for": "198.51.100.7, 127.0.0.1"}
    assert code(await graphql_login(proxy, OWNER, PASSWORD, owner)) is None
    other_network = {"x-forwarded-for": "2001:db9::1"}
    assert code(await graphql_login(proxy, OWNER, PASSWORD, other_network)) is None

    # A client that is not a trusted proxy cannot pose as others: its own address counts.
    async with client_from(api.base_url, "127.0.0.5") as liar:
        for n in range(5):
            forwarded = {"x-forwarded-for": f"203.0.113.{n + 1}"}
            assert code(await graphql_login(liar, OTHER, "wrong", forwarded)) == "UNAUTHENTICATED"
        forwarded = {"x-forwarded-for": "203.0.113.99"}
        assert 0 < retry_after(await graphql_login(liar, OTHER, PASSWORD, forwarded)) <= 60

    assert await failures(pool) == sorted(
        [("127.0.0.5/32", OTHER)] * 5 + [("2001:db8::/64", OWNER)] * 5
    )
    assert await sessions_of(pool, users[OWNER]) == 2
    assert await sessions_of(pool, users[OTHER]) == 0


async def test_an_unknown_email_costs_a_bcrypt_check_of_the_configured_cost(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    # A cost other than the tests' usual 4, which the old dummy hash had whatever the setting.
    costly = replace(settings, bcrypt_rounds=6, login_max_failures=5, login_backoff_seconds=60)
    await create_user(
        pool, email=OWNER, name="owner", password=PASSWORD, role="admin", bcrypt_rounds=6
    )
    await create_user(
        pool, email=OTHER, name="other", password=PASSWORD, role="agent", bcrypt_rounds=6
    )
    await pool.execute("UPDATE users SET active = false WHERE email = $1", OTHER)
    stored = await pool.fetchval("SELECT password_hash FROM users WHERE email = $1", OWNER)
    assert stored.startswith("$2b$06$")

    async with running_server(costly) as api:

        async def checks_made_by(email: str, password: str) -> dict[int, int]:
            before = auth.password_checks.copy()
            body = await graphql_login(api.client, email, password)
            assert code(body) in {"UNAUTHENTICATED", "TOO_MANY_REQUESTS"}
            return dict(auth.password_checks - before)

        # Unknown email, wrong password, deactivated user: one check each, of cost 6.
        assert await checks_made_by("nobody@test.example", PASSWORD) == {6: 1}
        assert await checks_made_by(OWNER, "wrong password") == {6: 1}
        assert await checks_made_by(OTHER, PASSWORD) == {6: 1}
        for _ in range(4):
            assert await checks_made_by("nobody@test.example", PASSWORD) == {6: 1}
        # A client told to wait costs no check at all.
        assert await checks_made_by("nobody@test.example", PASSWORD) == {}

    assert auth.hash_cost(auth.dummy_hash(12)) == 12
    assert auth.hash_cost(auth.dummy_hash(6)) == 6
    assert await pool.fetchval("SELECT count(*) FROM login_failures") == 7
    assert await pool.fetchval("SELECT count(*) FROM sessions") == 0


async def test_serve_follows_forwarded_allow_ips(
    database_url: str, data_dir: Path, users: dict[str, str], pool: asyncpg.Pool
) -> None:
    """`server.py serve` believes X-Forwarded-For from FORWARDED_ALLOW_IPS only: here
    127.0.0.2, and not uvicorn's default 127.0.0.1."""
    answers = []
    forwarded = {"x-forwarded-for": "198.51.100.20"}
    with serving(data_dir, DATABASE_URL=database_url, FORWARDED_ALLOW_IPS="127.0.0.2") as (
        client,
        _,
    ):
        base_url = str(client.base_url).rstrip("/")
        async with client_from(base_url, "127.0.0.2") as proxy:
            for n in range(6):
                answers.append(code(await graphql_login(proxy, OWNER, f"wrong{n}", forwarded)))
        async with client_from(base_url, "127.0.0.1") as direct:
            for _ in range(2):
                answers.append(code(await graphql_login(direct, OWNER, "wrong", forwarded)))
            assert code(await graphql_login(direct, OTHER, PASSWORD, forwarded)) is None

    assert answers == ["UNAUTHENTICATED"] * 5 + ["TOO_MANY_REQUESTS"] + ["UNAUTHENTICATED"] * 2
    assert await failures(pool) == [("127.0.0.1/32", OWNER)] * 2 + [("198.51.100.20/32", OWNER)] * 5
    assert await sessions_of(pool, users[OTHER]) == 1
