"""The page shows an observed token's suggestion and applies it (headless Chromium)."""

from __future__ import annotations

import aiohttp
import pytest

from patgate.web.gateway.sync import flush_usage
from tests.browser.conftest import ARTIFACTS, DESKTOP, PHONE
from tests.browser.test_token_page import PASSWORD, TIMEOUT_MS, confirm_password, log_in
from tests.gateway_harness import Gateway, RecordingUpstream

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]


def routes(upstream: RecordingUpstream) -> str:
    return (
        "  - name: api\n"
        "    prefix: /api/\n"
        f"    upstream: {upstream.url}\n"
        "    methods: {GET: api:read, '*': api:write}\n"
    )


@pytest.fixture
async def observed(make_gateway, upstream, sqlite_url) -> tuple[Gateway, str]:
    gateway: Gateway = await make_gateway(sqlite_url, routes(upstream))
    await gateway.add_user("alice", ["api:read", "api:write"], password=PASSWORD)
    value = await gateway.token(
        "alice", name="observed", scopes=("api:read", "api:write"), observe=3600
    )
    async with aiohttp.ClientSession() as client:
        for path in ("/api/items/42", "/api/items/43/comments"):
            headers = {"Authorization": f"Bearer {value}"}
            async with client.get(gateway.url + path, headers=headers) as response:
                assert response.status == 200
    await flush_usage(gateway.app)
    return gateway, value[4:12]


async def test_the_suggestion_is_shown_next_to_the_token_and_applied(
    browser_context, observed
):
    gateway, token_id = observed
    page = await browser_context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    await page.set_viewport_size(DESKTOP)
    await page.goto(gateway.url + "/_patgate/")
    await log_in(page)
    row = page.locator(f'#token-rows tr[data-id="{token_id}"]').first
    await row.get_by_role("button", name="Suggest").click()
    suggestion = page.locator("#token-rows tr.suggestion")
    await suggestion.wait_for(state="visible")
    assert "api:read" in await suggestion.inner_text()
    assert "api:write" not in await suggestion.inner_text()
    chip = suggestion.locator(".chip", has_text="api:read")
    assert "GET /api/items/*" in (await chip.get_attribute("title") or "")
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "observe-suggestion-1280.png"))
    await page.set_viewport_size(PHONE)
    await suggestion.get_by_role("button", name="Apply").scroll_into_view_if_needed()
    await page.screenshot(path=str(ARTIFACTS / "observe-suggestion-390.png"))

    await suggestion.get_by_role("button", name="Apply").click()
    await confirm_password(page)
    narrowed = page.locator(
        f'#token-rows tr[data-id="{token_id}"] td.scopes .chip', has_text="api:write"
    )
    await narrowed.wait_for(state="detached")
    record = await gateway.store.get_token(token_id)
    assert record is not None
    assert record.scopes == ("api:read", "node:/api/items:r")
    assert problems == []
