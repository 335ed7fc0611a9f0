"""Pages on other origins (CORS): a page served from an origin in ALLOWED_ORIGINS may call
the API from a browser, with its bearer token; a page on any other origin is stopped by
the browser itself, before its request is sent.

The browser test serves a tiny page from a second (and a third) loopback port, opens it in
a real headless Chromium and has it fetch() the API on the first port.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import asyncpg
import pytest
from helpers import Api, Team, add_user, running_server, serve_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from settings import Settings

# The single-page app: one function the test calls in the page, as the page's own code.
PAGE = """<!doctype html>
<title>Another origin</title>
<script>
window.callApi = async (url, token, body) => {
  try {
    const response = await fetch(url, {
      method: 'POST',
      headers: {'Content-Type': 'application/json', 'Authorization': 'Bearer ' + token},
      body: JSON.stringify(body),
    });
    return {status: response.status, body: await response.json()};
  } catch (error) {
    return {blocked: String(error)};
  }
};
</script>
"""
VIEWER = {"query": "{ viewer { id email } }"}


def create(phone: str) -> dict[str, Any]:
    return {
        "query": 'mutation($p: String!) { createProspect(input: {name: "Spa", phone: $p}) '
        "{ id phone } }",
        "variables": {"p": phone},
    }


async def page_site(request: Request) -> Response:
    return HTMLResponse(PAGE)


SITE = Starlette(routes=[Route("/", page_site)])


async def call_from(page: Any, site: str, url: str, token: str, body: dict[str, Any]) -> Any:
    """fetch() in a page loaded from site: what the page's own code would get."""
    if page.url != site + "/":
        await page.goto(site + "/")
    return await page.evaluate(
        "([url, token, body]) => window.callApi(url, token, body)", [url, token, body]
    )


async def test_a_page_on_an_allowed_origin_calls_the_api_and_others_are_blocked(
    page: Any, settings: Settings, pool: asyncpg.Pool
) -> None:
    async with serve_app(SITE) as allowed_site, serve_app(SITE) as other_site:
        # Written as an operator might: the browser sends it lower-case, without a slash.
        listed = allowed_site.replace("http://", "HTTP://") + "/"
        async with running_server(replace(settings, allowed_origins=(listed,))) as api:
            agent = await add_user(pool, api, "spa@test.example", "agent")
            graphql = f"{api.base_url}/graphql"

            answer = await call_from(page, allowed_site, graphql, agent["token"], VIEWER)
            assert answer == {
                "status": 200,
                "body": {"data": {"viewer": {"id": agent["id"], "email": "spa@test.example"}}},
            }
            answer = await call_from(
                page, allowed_site, graphql, agent["token"], create("212-555-0171")
            )
            assert answer["status"] == 200
            assert answer["body"]["data"]["createProspect"]["phone"] == "+12125550171"

            # Another origin: the browser refuses the preflight, so nothing is even sent.
            answer = await call_from(page, other_site, graphql, agent["token"], VIEWER)
            assert "Failed to fetch" in answer["blocked"]
            answer = await call_from(
                page, other_site, graphql, agent["token"], create("212-555-0172")
            )
            assert "Failed to fetch" in answer["blocked"]

    phones = [row["phone"] for row in await pool.fetch("SELECT phone FROM prospects")]
    assert phones == ["+12125550171"]


@pytest.fixture
async def cors_api(settings: Settings) -> Any:
    async with running_server(
        replace(settings, allowed_origins=("https://app.example.com",))
    ) as api:
        yield api


def preflight(origin: str) -> dict[str, str]:
    return {
        "origin": origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
    }


async def test_preflights_allow_the_listed_origins_only(cors_api: Api) -> None:
    for path in ("/graphql", "/api/auth/login", "/api/active-calls"):
        response = await cors_api.client.options(path, headers=preflight("https://app.example.com"))
        assert response.status_code == 200, (path, response.text)
        assert response.headers["access-control-allow-origin"] == "https://app.example.com"
        allowed_headers = response.headers["access-control-allow-headers"].lower()
        assert {"authorization", "content-type"} <= set(allowed_headers.split(", "))
        assert "POST" in response.headers["access-control-allow-methods"]
        # Bearer tokens are a header, not a cookie: no credentials mode.
        assert "access-control-allow-credentials" not in response.headers

        response = await cors_api.client.options(path, headers=preflight("https://evil.example"))
        assert response.status_code == 400
        assert "access-control-allow-origin" not in response.headers


async def test_answers_name_the_allowed_origin_only(cors_api: Api, team: Team) -> None:
    headers = {"authorization": f"Bearer {team.agent['token']}"}
    allowed = await cors_api.client.post(
        "/graphql", json=VIEWER, headers={**headers, "origin": "https://app.example.com"}
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "origin" in allowed.headers["vary"].lower()
    # A client's Retry-After on a throttled login is readable by the page.
    assert "retry-after" in allowed.headers["access-control-expose-headers"].lower()
    other = await cors_api.client.post(
        "/graphql", json=VIEWER, headers={**headers, "origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in other.headers


async def test_without_allowed_origins_no_other_origin_is_allowed(api: Api) -> None:
    response = await api.client.options("/graphql", headers=preflight("https://app.example.com"))
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers
