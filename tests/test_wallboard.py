"""The wallboard in a real headless Chromium, against a real server.

Without Chromium or Playwright these tests skip, saying why in pytest's summary, except
in CI (CI set, as .ci/run sets it), where they fail: a green CI run opened the page (the
`page` fixture, conftest.py).
"""

from __future__ import annotations

from typing import Any

import asyncpg
from helpers import (
    PASSWORD,
    Api,
    add_prospect,
    add_user,
    end,
    free_port,
    next_phone,
    running_server,
    start,
)

from settings import Settings


async def sign_in(page: Any, api: Api, email: str, password: str) -> None:
    await page.goto(api.base_url + "/wallboard")
    await page.fill("#email", email)
    await page.fill("#password", password)
    await page.click("button[type=submit]")
    await page.wait_for_selector("#status[data-state=live]", timeout=10_000)


async def test_calls_appear_and_disappear_live(
    page: Any, settings: Settings, pool: asyncpg.Pool
) -> None:
    port = free_port()
    async with running_server(settings, port=port) as api:
        agent = await add_user(pool, api, "wall@test.example", "agent")
        await add_user(pool, api, "boss@test.example", "manager")
        prospect = await add_prospect(api, agent["token"], next_phone(), name="Wally Prospect")
        await sign_in(page, api, "boss@test.example", PASSWORD)
        assert await page.text_content("#count") == "0 calls"

        call = await start(api, agent["token"], prospect["id"])
        row = f"tr[data-call-log-id='{call['callLogId']}']"
        await page.wait_for_selector(row, timeout=5_000)
        cells = await page.locator(f"{row} td").all_text_contents()
        assert cells[:3] == ["wall", "Wally Prospect", prospect["phone"]]
        assert cells[3].count(":") == 1  # a ticking m:ss duration
        assert await page.text_content("#agents tr[data-agent='wall'] td:last-child") == "1"
        assert await page.text_content("#count") == "1 call"

        await end(api, agent["token"], prospect["id"], call["callLogId"])
        await page.wait_for_selector(row, state="detached", timeout=5_000)
        assert await page.text_content("#count") == "0 calls"

        second = await add_prospect(api, agent["token"], next_phone(), name="During Outage")

    # The server is gone: the page says so and keeps trying.
    await page.wait_for_selector("#status[data-state=reconnecting]", timeout=10_000)
    async with running_server(settings, port=port) as api:
        token = await api.login("wall@test.example")
        call = await start(api, token, second["id"])
        # Back by itself, with what happened meanwhile.
        await page.wait_for_selector("#status[data-state=live]", timeout=20_000)
        row = f"tr[data-call-log-id='{call['callLogId']}']"
        await page.wait_for_selector(row, timeout=5_000)
        cells = await page.locator(f"{row} td").all_text_contents()
        assert cells[:3] == ["wall", "During Outage", second["phone"]]
        assert await page.text_content("#count") == "1 call"


async def test_bad_password_shows_an_error(page: Any, api: Api) -> None:
    await page.goto(api.base_url + "/wallboard")
    await page.fill("#email", "nobody@test.example")
    await page.fill("#password", "wrong password")
    await page.click("button[type=submit]")
    await page.wait_for_function(
        "document.getElementById('sign-in-error').textContent.length > 0", timeout=5_000
    )
    assert await page.text_content("#sign-in-error") == "Invalid email or password"
    assert await page.get_attribute("#status", "data-state") == "signed-out"
