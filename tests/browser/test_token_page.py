"""The token web page in real headless Chromium, against a real gateway and upstream."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.browser.conftest import ARTIFACTS
from tests.gateway_harness import ADMIN, Gateway, RecordingUpstream

# A real browser on a busy 2-core machine: more than the default 60 s per test.
pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

PASSWORD = "alice-browser-pw"
TIMEOUT_MS = 10_000


def routes(upstream: RecordingUpstream) -> str:
    return (
        "  - name: api\n"
        "    prefix: /api/\n"
        f"    upstream: {upstream.url}\n"
        "    methods: {GET: api:read, '*': api:write}\n"
        "  - name: files\n"
        "    prefix: /dav/\n"
        f"    upstream: {upstream.url}\n"
        "    credentials: [basic, bearer]\n"
        "    methods: {GET: files:read, PROPFIND: files:read, '*': files:write}\n"
    )


@pytest.fixture
async def gateway(make_gateway, upstream, sqlite_url) -> Gateway:
    # rotation_reuse: alert, so that checking that a regenerated-away value is
    # refused does not revoke its token (the default; tests/integration/
    # test_incident.py covers it): these tests go on using the new value.
    gateway: Gateway = await make_gateway(
        sqlite_url, routes(upstream), extra="rotation_reuse: alert\n"
    )
    await gateway.add_user(
        "alice", ["api:read", "api:write", "files:read"], password=PASSWORD
    )
    return gateway


@pytest.fixture
async def page(browser_context, gateway) -> Any:
    """A logged-out page on the gateway; console errors fail the test."""
    await browser_context.grant_permissions(
        ["clipboard-read", "clipboard-write"], origin=gateway.url
    )
    page = await browser_context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console: {msg.text}")
            if msg.type == "error" and "401" not in msg.text
            else None
        ),
    )
    await page.goto(gateway.url + "/_patgate/")
    yield page
    # A CSP violation or a script error shows up here.
    assert problems == []


async def log_in(page: Any, password: str = PASSWORD) -> None:
    await page.get_by_label("Login").fill("alice")
    await page.get_by_label("Password", exact=True).fill(password)
    await page.get_by_role("button", name="Log in").click()
    await page.locator("#tokens-view").wait_for(state="visible")


async def confirm_password(page: Any, password: str = PASSWORD) -> None:
    dialog = page.locator("#confirm-dialog")
    await dialog.wait_for(state="visible")
    await dialog.get_by_label("Your password").fill(password)
    await dialog.get_by_role("button", name="Confirm").click()


async def through_gateway(gateway: Gateway, token: str) -> int:
    async with (
        aiohttp.ClientSession() as client,
        client.get(
            gateway.url + "/api/hello", headers={"Authorization": f"Bearer {token}"}
        ) as response,
    ):
        return response.status


async def refused_soon(gateway: Gateway, token: str) -> bool:
    # SQLite: the gateway polls the store's change counter; allow ~2 s.
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        if await through_gateway(gateway, token) == 401:
            return True
        await asyncio.sleep(0.05)
    return False


async def generate(page: Any, name: str, scope: str) -> str:
    """Generate a token in the page; the value it shows once."""
    await page.get_by_role("button", name="Generate new token").click()
    form = page.locator("#token-dialog")
    await form.get_by_label("Description").fill(name)
    await form.get_by_label("Search scopes").fill(scope)
    await form.locator(f'#scope-list input[value="{scope}"]').check()
    await form.get_by_role("button", name="Generate").click()
    await confirm_password(page)
    shown = page.locator("#value-dialog")
    await shown.wait_for(state="visible")
    value: str = await shown.get_by_label("Token value").input_value()
    return value


async def test_generate_use_revoke(page, gateway, upstream, browser_context):
    await log_in(page)
    await page.get_by_text("You have no tokens yet.").wait_for()

    await page.get_by_role("button", name="Generate new token").click()
    form = page.locator("#token-dialog")
    await form.get_by_label("Description").fill("browser test")
    await form.get_by_label("Expires on").check()
    search = form.get_by_label("Search scopes")
    await search.fill("api:read")
    assert await form.locator("#scope-list li:visible").count() == 1
    await form.locator('#scope-list input[value="api:read"]').check()
    await search.fill("")
    await form.get_by_label("Only checked").check()
    visible = form.locator("#scope-list li:visible")
    assert await visible.count() == 1
    assert "api:read" in await visible.inner_text()
    # files:write is required by a route but alice does not hold it.
    await form.get_by_label("Only checked").uncheck()
    assert await form.locator('#scope-list input[value="files:write"]').is_disabled()
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "token-generate.png"))
    await form.get_by_role("button", name="Generate").click()

    await confirm_password(page, "not-my-password")
    await page.get_by_text("Wrong password. Try again.").wait_for()
    await confirm_password(page)

    shown = page.locator("#value-dialog")
    await shown.wait_for(state="visible")
    value = await shown.get_by_label("Token value").input_value()
    assert value.startswith("pgt_")
    assert value not in page.url
    await shown.get_by_role("button", name="Copy").click()
    await shown.get_by_text("Copied to the clipboard.").wait_for()
    assert await page.evaluate("navigator.clipboard.readText()") == value
    async with page.expect_download() as download_info:
        await shown.get_by_role("button", name="Download").click()
    download = await download_info.value
    saved = Path(await download.path())
    assert (await asyncio.to_thread(saved.read_text)).strip() == value
    await shown.get_by_role("button", name="Done").click()
    await shown.wait_for(state="hidden")
    assert await shown.get_by_label("Token value").input_value() == ""

    assert await through_gateway(gateway, value) == 200
    assert upstream.last.headers["X-Patgate-User"] == "alice"

    row = page.locator("#token-rows tr", has_text="browser test")
    await row.wait_for()
    assert "api:read" in await row.inner_text()
    assert "active" in await row.inner_text()
    await add_more_tokens(gateway)
    await page.get_by_role("button", name="Refresh").click()
    await page.locator("#token-rows tr").nth(3).wait_for()
    assert "Never" not in await row.locator("td.last-used").inner_text()
    await page.screenshot(path=str(ARTIFACTS / "token-list.png"), full_page=True)

    await row.get_by_role("checkbox").check()
    await page.get_by_role("button", name="Remove selected").click()
    assert "browser test" in await page.locator("#confirm-text").inner_text()
    await confirm_password(page)
    await page.get_by_text("Removed 1 token.").wait_for()
    # Remove means gone: the row leaves the list, the token the store.
    await row.wait_for(state="detached")
    assert await gateway.store.get_token(value[4:12]) is None

    assert await refused_soon(gateway, value)


async def add_more_tokens(gateway: Gateway) -> None:
    """Tokens of every kind, so the list (and its screenshot) shows them all."""
    _, laptop = await gateway.service.create_token(
        ADMIN, "alice", name="laptop WebDAV", scopes=["files:read"], sliding=3600
    )
    await gateway.service.create_token(
        ADMIN, "alice", name="nightly CI", scopes=["api:read", "api:write"]
    )
    record, _ = await gateway.service.create_token(ADMIN, "alice", name="old script")
    await gateway.service.revoke_tokens(ADMIN, [record.id])
    async with (
        aiohttp.ClientSession() as client,
        client.get(
            gateway.url + "/dav/notes.txt",
            headers={"Authorization": f"Bearer {laptop}"},
        ) as response,
    ):
        assert response.status == 200
    # Uses are written in coalesced batches (usage_flush_interval, 1 s).
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        tokens = await gateway.store.list_tokens("alice")
        if all(
            t.last_used_at
            for t in tokens
            if t.name in ("laptop WebDAV", "browser test")
        ):
            return
        await asyncio.sleep(0.1)
    pytest.fail("the gateway did not record the tokens' last use")


async def test_edit_regenerate_copy_and_remove_many(page, gateway):
    await log_in(page)
    first = await generate(page, "deploy", "api:read")
    await page.get_by_role("button", name="Done").click()

    row = page.locator("#token-rows tr", has_text="deploy")
    await row.get_by_role("button", name="Edit").click()
    form = page.locator("#token-dialog")
    assert await form.get_by_label("Description").input_value() == "deploy"
    assert await form.locator('#scope-list input[value="api:read"]').is_checked()
    await form.get_by_label("Description").fill("deploy (prod)")
    await form.locator('#scope-list input[value="api:write"]').check()
    await form.get_by_label("Expires after").check()
    await form.get_by_label("Sliding window length").fill("2")
    await form.get_by_label("Sliding window unit").select_option("h")
    await form.get_by_role("button", name="Save changes").click()
    await confirm_password(page)
    await page.get_by_text("Saved “deploy (prod)”").wait_for()
    row = page.locator("#token-rows tr", has_text="deploy (prod)")
    text = await row.inner_text()
    assert "api:write" in text
    assert "2h after last use" in text

    await row.get_by_role("button", name="Regenerate").click()
    await confirm_password(page)
    shown = page.locator("#value-dialog")
    await shown.wait_for(state="visible")
    second = await shown.get_by_label("Token value").input_value()
    assert second != first
    assert second[4:12] == first[4:12]  # same id
    await shown.get_by_role("button", name="Done").click()
    assert await refused_soon(gateway, first)
    assert await through_gateway(gateway, second) == 200

    await row.get_by_role("button", name="Copy").click()
    await confirm_password(page)
    await shown.wait_for(state="visible")
    third = await shown.get_by_label("Token value").input_value()
    assert third[4:12] != first[4:12]
    await shown.get_by_role("button", name="Done").click()
    await page.locator("#token-rows tr").nth(1).wait_for()

    await page.get_by_label("Select all tokens").check()
    remove = page.get_by_role("button", name="Remove selected (2)")
    await remove.click()
    assert "these 2 tokens" in await page.locator("#confirm-text").inner_text()
    await page.get_by_role("button", name="Cancel").click()
    assert await through_gateway(gateway, second) == 200
    await remove.click()
    await confirm_password(page)
    await page.get_by_text("Removed 2 tokens.").wait_for()
    assert await refused_soon(gateway, second)
    assert await refused_soon(gateway, third)


async def test_login_errors_and_logout(page, gateway):
    await log_in_failing(page, "wrong-password")
    await page.get_by_text("Wrong login or password.").wait_for()
    await log_in(page)
    await page.get_by_text("Logged in as").wait_for()
    await page.reload()
    await page.locator("#tokens-view").wait_for(state="visible")
    # Scoped to /_patgate/: never sent to the upstreams behind the gateway.
    assert await page.context.cookies(gateway.url + "/api/x") == []
    cookies = await page.context.cookies(gateway.url + "/_patgate/")
    session = next(c for c in cookies if c["name"] == "patgate_session")
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    assert await page.evaluate("document.cookie") == ""
    await page.get_by_role("button", name="Log out").click()
    await page.get_by_text("You are logged out.").wait_for()
    await page.reload()
    await page.locator("#login-view").wait_for(state="visible")


async def log_in_failing(page: Any, password: str) -> None:
    await page.get_by_label("Login").fill("alice")
    await page.get_by_label("Password", exact=True).fill(password)
    await page.get_by_role("button", name="Log in").click()


async def test_canary_rotate_and_revoke_everything_until_now(page, gateway):
    await log_in(page)
    # A canary from the form: refused like any unknown value, marked in the list.
    await page.get_by_role("button", name="Generate new token").click()
    form = page.locator("#token-dialog")
    await form.get_by_label("Description").fill("trap in .env")
    await form.get_by_label("Canary", exact=False).check()
    await form.get_by_role("button", name="Generate").click()
    await confirm_password(page)
    shown = page.locator("#value-dialog")
    await shown.wait_for(state="visible")
    canary = await shown.get_by_label("Token value").input_value()
    await shown.get_by_role("button", name="Done").click()
    trap = page.locator("#token-rows tr", has_text="trap in .env")
    await trap.locator(".chip.canary").wait_for()
    assert await through_gateway(gateway, canary) == 401

    # Rotate: the old value keeps working until the new one is used.
    old = await generate(page, "ci secret", "api:read")
    await shown.get_by_role("button", name="Done").click()
    row = page.locator("#token-rows tr", has_text="ci secret")
    await row.get_by_role("button", name="Rotate").click()
    await confirm_password(page)
    await shown.wait_for(state="visible")
    new = await shown.get_by_label("Token value").input_value()
    await shown.get_by_role("button", name="Done").click()
    assert await through_gateway(gateway, old) == 200
    assert await through_gateway(gateway, new) == 200
    assert await refused_soon(gateway, old)

    # After a stolen laptop: everything made until now stops.
    await page.get_by_role("button", name="Revoke all until now").click()
    await confirm_password(page)
    await page.get_by_text("Revoked 2 tokens.").wait_for()
    assert await refused_soon(gateway, new)
