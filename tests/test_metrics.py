"""/metrics: Prometheus's text format, scraped from real servers.

The recording tests share one process's counters with every other test of the session, so
they compare a scrape before with one after. The process tests run `server.py serve`, one
worker and two (each worker's figures in every scrape), as operators run it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import asyncpg
import httpx
import pytest
from helpers import (
    LOGIN,
    START_CALL,
    Api,
    Scrape,
    Team,
    add_prospect,
    bearer,
    end,
    next_phone,
    parse_scrape,
    post_graphql,
    running_server,
    serving,
    subscribe,
    wait_until,
    wait_until_blocking,
    wait_until_locked_out,
)

from resolvers.users import create_user
from settings import Settings

TOKEN = "scrape-token"
NEXT_LEAD = "mutation NextLead { nextLead { callLogId nothingCallable } }"


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    """A real server with /metrics on (overrides conftest's)."""
    async with running_server(replace(settings, metrics_token=TOKEN)) as client:
        yield client


async def scrape(api: Api) -> Scrape:
    response = await api.client.get("/metrics", headers=bearer(TOKEN))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse_scrape(response.text)


async def test_metrics_are_off_without_a_token_and_need_it(settings: Settings, api: Api) -> None:
    assert (await api.client.get("/metrics")).status_code == 401
    wrong = await api.client.get("/metrics", headers=bearer("not-" + TOKEN))
    assert (wrong.status_code, wrong.headers["www-authenticate"]) == (401, "Bearer")
    async with running_server(settings) as off:  # METRICS_TOKEN unset
        assert (await off.client.get("/metrics", headers=bearer(TOKEN))).status_code == 404


async def test_requests_errors_and_logins_are_counted(api: Api, team: Team) -> None:
    before = await scrape(api)
    agent = team.agent["token"]
    for _ in range(3):
        await api.data("query Board { activeCalls { id } }", token=agent)
    missing = "00000000-0000-0000-0000-000000000000"
    assert await api.error_code(
        "mutation Dial($p: ID!) { startCall(prospectId: $p) { callLogId } }", {"p": missing}, agent
    ) == ("NOT_FOUND")
    for _ in range(2):  # the second parse comes from the cache
        assert await api.error_code("query Broken {", token=agent) == "GRAPHQL_PARSE_FAILED"
    not_json = await api.client.post(
        "/graphql", content=b"{", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 400
    odd = await api.client.post(
        "/graphql", json={"query": "{ viewer { id } }", "operationName": 5}, headers=bearer(agent)
    )
    assert odd.status_code < 500
    assert await api.error_code(LOGIN, {"e": team.agent["email"], "p": "wrong"}) == (
        "UNAUTHENTICATED"
    )
    rest = await api.client.post(
        "/api/auth/login", json={"email": "nobody@test.example", "password": "wrong"}
    )
    assert rest.status_code == 401
    after = await scrape(api)

    def grew(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    requests = "callfloor_graphql_requests_total"
    assert grew(requests, operation="Board", outcome="OK") == 3
    assert grew(requests, operation="Dial", outcome="NOT_FOUND") == 1
    # A document that does not parse has no operation name to report.
    assert grew(requests, operation="anonymous", outcome="GRAPHQL_PARSE_FAILED") == 2
    # Refused before GraphQL ran (not JSON), or named with something that is not a name.
    assert grew(requests, operation="unknown") == 2
    assert grew(requests, operation="unknown", outcome="HTTP_400") >= 1
    latency = "callfloor_graphql_request_duration_seconds"
    assert grew(latency + "_count", operation="Board", outcome="OK") == 3
    assert grew(latency + "_sum", operation="Board", outcome="OK") > 0
    assert grew(latency + "_bucket", operation="Board", outcome="OK", le="+Inf") == 3
    assert grew("callfloor_graphql_errors_total", code="NOT_FOUND") == 1
    assert grew("callfloor_graphql_errors_total", code="GRAPHQL_PARSE_FAILED") == 2
    assert grew("callfloor_login_failures_total", code="UNAUTHENTICATED") == 2


async def test_calls_events_and_next_lead_are_measured(
    api: Api, team: Team, pool: asyncpg.Pool
) -> None:
    before = await scrape(api)
    agent = team.agent["token"]
    nothing = await api.data(NEXT_LEAD, token=agent)
    assert nothing["nextLead"]["nothingCallable"] is True
    prospect = await add_prospect(api, team.manager["token"], next_phone())
    async with subscribe(api, team.manager["token"]) as stream:
        await stream.next()
        lead = await api.data(NEXT_LEAD, token=agent)
        assert lead["nextLead"]["nothingCallable"] is False
        await stream.next_of("STARTED")
        during = await scrape(api)
        assert during.value("callfloor_active_calls") == 1
        assert during.value("callfloor_subscriptions") >= 1
        assert during.value("callfloor_websockets") >= 1
        await end(api, agent, prospect["id"], lead["nextLead"]["callLogId"])
        await stream.next_of("ENDED")
        # The listener drops and comes back: events wait in call_events, no resync.
        listener = api.app.state.listener
        assert listener.connection is not None
        listener.connection.terminate()

    async def settled() -> bool:
        now = await scrape(api)
        reconnects = "callfloor_listener_reconnects_total"
        return (
            now.value(reconnects) > before.value(reconnects)
            and now.value("callfloor_listener_connected") == 1
            and now.value("callfloor_subscriptions") == before.value("callfloor_subscriptions")
        )

    await wait_until(settled, 20, "the scrape never showed the listener back, alone")
    after = await scrape(api)

    def grew(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert grew("callfloor_next_lead_total", outcome="nothing_callable") == 1
    assert grew("callfloor_next_lead_total", outcome="started") == 1
    assert after.value("callfloor_active_calls") == 0
    # Two events (STARTED, ENDED) sent to one subscriber, each a moment after its commit.
    assert grew("callfloor_event_delay_seconds_count") == 2
    assert 0 < grew("callfloor_event_delay_seconds_sum") < 10
    assert grew("callfloor_event_resyncs_total") == 0
    assert after.value("callfloor_database_pool_max_connections") == 10
    assert await pool.fetchval("SELECT count(*) FROM call_logs") == 1


async def test_requests_waiting_for_a_pool_connection_are_counted(
    settings: Settings, team: Team, pool: asyncpg.Pool
) -> None:
    """The server's only pooled connection is stuck behind a row lock this test holds; a
    second request then waits for it, and the scrape says so."""
    async with running_server(replace(settings, metrics_token=TOKEN, pool_max_size=1)) as one:
        prospect = await add_prospect(one, team.manager["token"], next_phone())
        async with pool.acquire() as holder, holder.transaction():
            await holder.execute("SELECT 1 FROM prospects WHERE id = $1 FOR UPDATE", prospect["id"])
            stuck = asyncio.ensure_future(
                one.graphql(START_CALL, {"p": prospect["id"]}, team.agent["token"])
            )
            # Only then the second request, or it could take the connection first.
            await wait_until_locked_out(pool, "start_call")
            waiting = asyncio.ensure_future(
                one.graphql("{ activeCalls { id } }", token=team.agent["token"])
            )

            async def seen_waiting() -> bool:
                response = await one.client.get("/metrics", headers=bearer(TOKEN), timeout=30)
                return parse_scrape(response.text).value("callfloor_database_pool_waiters") >= 1

            await wait_until(seen_waiting, 20, "no waiter was reported")
        started = await stuck
        assert not started.get("errors"), started
        assert (await waiting).get("errors") is None
    assert await pool.fetchval("SELECT count(*) FROM active_calls") == 1


@pytest.mark.parametrize("workers", [1, 2])
def test_a_served_process_is_scraped_with_every_workers_figures(
    data_dir: Path, database_url: str, tmp_path: Path, workers: int
) -> None:
    """`server.py serve`: with two workers each scrape, whichever worker answers it,
    holds both workers' counts; a restart starts from zero (the directory is emptied)."""
    directory = tmp_path / "metrics"
    extra = {
        "DATABASE_URL": database_url,
        "WEB_CONCURRENCY": str(workers),
        "METRICS_TOKEN": TOKEN,
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
        "LOGIN_MAX_FAILURES": "1000",
        "LOGIN_MAX_FAILURES_PER_ADDRESS": "1000",
    }
    asyncio.run(add_floor_user(database_url))
    failures = 24
    with serving(data_dir, **extra) as (client, served):
        # A new connection for each request, so both workers answer some.
        for _ in range(failures):
            with httpx.Client(base_url=client.base_url, timeout=10) as fresh:
                response = fresh.post(
                    "/graphql",
                    json={"query": LOGIN, "variables": {"e": "floor@test.example", "p": "wrong"}},
                )
                assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        token = post_graphql(client, LOGIN, e="floor@test.example", p="floor-password")["login"][
            "token"
        ]
        post_graphql(client, "query Board { activeCalls { id } }", token)

        def scrape_served() -> Scrape:
            with httpx.Client(base_url=client.base_url, timeout=10) as fresh:
                response = fresh.get("/metrics", headers=bearer(TOKEN))
                assert response.status_code == 200, response.text
                return parse_scrape(response.text)

        def every_worker_sampled() -> bool:
            connected = scrape_served().series("callfloor_listener_connected")
            return len(connected) == workers and all(s.value == 1 for s in connected)

        wait_until_blocking(every_worker_sampled, 20, "not every worker reported its listener")
        for _ in range(8):  # answered by either worker
            scraped = scrape_served()
            failed = scraped.value("callfloor_login_failures_total", code="UNAUTHENTICATED")
            assert failed == failures
            requests = "callfloor_graphql_requests_total"
            assert scraped.value(requests, operation="Board", outcome="OK") == 1
            assert scraped.value(requests, operation="anonymous", outcome="UNAUTHENTICATED") == (
                failures
            )
            assert scraped.value("callfloor_database_pool_max_connections") == 20 * workers
            pids = {s.labels.get("pid") for s in scraped.series("callfloor_listener_connected")}
            assert len(pids) == workers
    assert served.status == 0
    assert "Warning" not in served.output, served.output

    with serving(data_dir, **extra) as (client, _):
        response = client.get("/metrics", headers=bearer(TOKEN))
        scraped = parse_scrape(response.text)
        assert scraped.value("callfloor_login_failures_total") == 0
        assert scraped.value("callfloor_graphql_requests_total") == 0


async def add_floor_user(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    assert pool is not None
    try:
        await create_user(
            pool,
            email="floor@test.example",
            name="Floor",
            password="floor-password",
            role="manager",
            bcrypt_rounds=4,
        )
    finally:
        await pool.close()
