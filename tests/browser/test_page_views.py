"""The token page with real data, on a phone and a desktop, for an admin too
(issue 16): renew, the People panel, sorting, filtering, relative times, the
new-token form's default expiry. Real Chromium, a real gateway and upstream;
screenshots go to artifacts/ (see tests/browser/conftest.py)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from patgate.models import ExpiryModel, TokenStatus, Usage
from tests.browser.conftest import ARTIFACTS, DESKTOP, PHONE
from tests.browser.test_token_page import (
    PASSWORD,
    TIMEOUT_MS,
    confirm_password,
    through_gateway,
)
from tests.factories import make_token
from tests.gateway_harness import ADMIN, Gateway
from tests.integration.test_api import routes as api_routes

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

DAY = 86400.0
ROOT_PASSWORD = "root-browser-pw"
LONG_NAME = "deploy-" + "x" * 150 + " for the very long project name"


@pytest.fixture
async def gateway(make_gateway, upstream, sqlite_url) -> Gateway:
    gateway: Gateway = await make_gateway(sqlite_url, api_routes(upstream))
    await gateway.add_user("alice", ["api:read", "files:read"], password=PASSWORD)
    await gateway.add_user("bob", ["api:read", "api:write"])
    await gateway.add_user("root", admin=True, password=ROOT_PASSWORD)
    return gateway


async def open_page(context: Any, gateway: Gateway, viewport: dict[str, int]) -> Any:
    page = await context.new_page()
    await page.set_viewport_size(viewport)
    page.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda msg: (
            problems.append(msg.text)
            if msg.type == "error" and "401" not in msg.text
            else None
        ),
    )
    page.problems = problems
    await page.goto(gateway.url + "/_patgate/")
    return page


async def log_in(page: Any, login: str, password: str) -> None:
    await page.get_by_label("Login").fill(login)
    await page.get_by_label("Password", exact=True).fill(password)
    await page.get_by_role("button", name="Log in").click()
    await page.locator("#tokens-view").wait_for(state="visible")


async def seed(gateway: Gateway, now: float) -> dict[str, str]:
    """Tokens as a real user collects them: old and new, used and not, every
    status, a long name, a project; their ids by role."""
    ids: dict[str, str] = {}
    specs: list[tuple[str, dict[str, Any]]] = [
        ("old", {"name": "nightly CI", "created_at": now - 3 * DAY}),
        (
            "long",
            {"name": LONG_NAME, "project": "eu-west-1", "created_at": now - 40 * DAY},
        ),
        (
            "expired",
            {
                "name": "laptop WebDAV",
                "created_at": now - 60 * DAY,
                "expiry": ExpiryModel.HARD,
                "expires_at": now - 2 * DAY,
            },
        ),
        (
            "revoked",
            {
                "name": "old script",
                "status": TokenStatus.REVOKED,
                "created_at": now - 100 * DAY,
            },
        ),
    ]
    specs += [
        (f"bulk{i}", {"name": f"job {i:02}", "created_at": now - i * 3600})
        for i in range(12)
    ]
    for role, fields in specs:
        fields.setdefault("updated_at", fields["created_at"])
        record, _ = make_token("alice", now=fields.pop("created_at"), **fields)
        record = record.with_changes(scopes=("api:read",))
        await gateway.store.create_token(record)
        ids[role] = record.id
    await gateway.store.record_usage(
        [Usage(ids["old"], now - 2 * 3600, "192.0.2.7", 41)]
    )
    return ids


async def no_sideways_scroll(page: Any) -> None:
    """Nothing on the page is wider than the window (less its scrollbar)."""
    wide = await page.evaluate(
        """() => {
          const limit = document.documentElement.clientWidth;
          return [...document.querySelectorAll("body *")]
            .filter((e) => e.getClientRects().length)
            .filter((e) => !e.closest("dialog:not([open])"))
            .map((e) => [e.tagName + (e.id ? "#" + e.id : "") + "." + e.className,
                         Math.round(e.getBoundingClientRect().right), limit])
            .filter(([, right, limit]) => right > limit + 0.5);
        }"""
    )
    assert wide == [], f"wider than the window: {wide[:8]}"


async def test_phone_and_desktop_with_real_data(browser_context, gateway):
    now = time.time()
    ids = await seed(gateway, now)
    page = await open_page(browser_context, gateway, PHONE)
    await log_in(page, "alice", PASSWORD)
    rows = page.locator("#token-rows tr")
    await rows.nth(15).wait_for()
    assert await rows.count() == 16
    assert await page.locator("#people").is_hidden()  # not an admin
    await no_sideways_scroll(page)
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "phone-token-list.png"), full_page=True)

    # The long name wraps inside the card instead of widening the page.
    long_row = page.locator(f'#token-rows tr[data-id="{ids["long"]}"]')
    name_box = await long_row.locator("td.name").bounding_box()
    assert name_box["x"] + name_box["width"] <= PHONE["width"]
    assert name_box["height"] > 40  # several lines
    assert "project eu-west-1" in await long_row.inner_text()

    # Relative times, the absolute date on hover.
    old_row = page.locator(f'#token-rows tr[data-id="{ids["old"]}"]')
    created = old_row.locator("td.created time")
    assert await created.inner_text() == "3 days ago"
    title = await created.get_attribute("title")
    assert time.strftime("%Y-%m-%d", time.gmtime(now - 3 * DAY)) in title
    assert await old_row.locator("td.last-used time").inner_text() == "2 hours ago"
    expired_row = page.locator(f'#token-rows tr[data-id="{ids["expired"]}"]')
    assert await expired_row.locator("td.expires time").inner_text() == "2 days ago"

    # Filter by text and by status; sort.
    await page.get_by_label("Filter tokens").fill("job")
    assert await rows.count() == 12
    assert await page.locator("#list-count").inner_text() == "12 of 16 shown"
    await page.get_by_label("Filter tokens").fill("CI nightly")
    assert await rows.count() == 1
    await page.get_by_label("Filter tokens").fill("")
    await page.get_by_label("Show").select_option("revoked")
    assert await rows.count() == 1
    assert "old script" in await rows.first.inner_text()
    await page.get_by_label("Show").select_option("")
    await page.get_by_label("Filter tokens").fill("zzz-nothing")
    await page.get_by_text("No token matches the filter.").wait_for()
    await page.get_by_label("Filter tokens").fill("")
    await page.get_by_label("Sort by").select_option("name:asc")
    assert (await rows.first.locator("td.name").inner_text()).startswith("deploy-")
    await page.get_by_label("Sort by").select_option("created:asc")
    assert await rows.first.get_attribute("data-id") == ids["revoked"]

    # The new-token form: 30 days unless told otherwise; never is one click.
    await page.get_by_role("button", name="Generate new token").click()
    form = page.locator("#token-dialog")
    assert await form.get_by_label("Expires on").is_checked()
    in_30 = await form.get_by_label("Expiry date").input_value()
    assert in_30 == await page.evaluate(
        "(() => { const d = new Date(Date.now() + 30 * 86400000);"
        " return d.toISOString().slice(0, 10).length === 10 &&"
        " `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-"
        "${String(d.getDate()).padStart(2, '0')}`; })()"
    )
    assert "in 30 days" in await form.locator("#f-date-in").inner_text()
    await no_sideways_scroll(page)
    dialog = await form.evaluate(
        "(f) => [f.parentElement.scrollWidth, f.parentElement.clientWidth]"
    )
    assert dialog[0] <= dialog[1], f"the form scrolls sideways: {dialog}"
    await page.screenshot(path=str(ARTIFACTS / "phone-token-form.png"))
    await form.get_by_label("Description").fill("made on a phone")
    await form.get_by_role("button", name="Generate").click()
    await confirm_password(page)
    shown = page.locator("#value-dialog")
    await shown.wait_for(state="visible")
    value = await shown.get_by_label("Token value").input_value()
    await shown.get_by_role("button", name="Done").click()
    record = await gateway.store.get_token(value[4:12])
    assert record is not None
    assert record.expires_at == pytest.approx(now + 31 * DAY, abs=DAY)

    await page.get_by_role("button", name="Generate new token").click()
    await form.get_by_label("Never expires").check()
    await form.get_by_role("button", name="Generate").click()
    await confirm_password(page)
    await shown.wait_for(state="visible")
    never = await shown.get_by_label("Token value").input_value()
    await shown.get_by_role("button", name="Done").click()
    record = await gateway.store.get_token(never[4:12])
    assert record is not None
    assert record.expiry is ExpiryModel.NEVER

    # The same list on a desktop: a table, sortable by its headers.
    await page.set_viewport_size(DESKTOP)
    await rows.nth(17).wait_for()
    header = page.locator("#token-table th", has_text="Name")
    await header.get_by_role("button").click()
    assert await header.get_attribute("aria-sort") == "ascending"
    assert (await rows.first.locator("td.name").inner_text()).startswith("deploy-")
    await header.get_by_role("button").click()
    assert await header.get_attribute("aria-sort") == "descending"
    await no_sideways_scroll(page)
    await page.screenshot(
        path=str(ARTIFACTS / "desktop-token-list.png"), full_page=True
    )

    # Purge: 30 days by default (the revoked one, dead for 100 days), or any age.
    await page.get_by_role("button", name="Purge…").click()
    purge = page.locator("#purge-dialog")
    count = purge.locator("#purge-count")
    assert await count.inner_text() == "1 token in the list matches."
    await purge.get_by_label("Days dead").fill("0")
    await count.get_by_text("2 tokens in the list match.").wait_for()
    await purge.get_by_role("button", name="Purge").click()
    await confirm_password(page)
    await page.get_by_text("Purged 2 tokens.").wait_for()
    await rows.nth(16).wait_for(state="detached")  # 18 - 2 rows
    assert await gateway.store.get_token(ids["revoked"]) is None
    assert await gateway.store.get_token(ids["expired"]) is None
    assert page.problems == []


async def test_renew_an_expired_token(browser_context, gateway):
    record, value = await gateway.service.create_token(
        ADMIN, "alice", name="laptop", scopes=["api:read"], expires_at=time.time() + 60
    )
    await gateway.store.update_token(record.with_changes(expires_at=time.time() - 5))
    page = await open_page(browser_context, gateway, PHONE)
    await log_in(page, "alice", PASSWORD)
    row = page.locator(f'#token-rows tr[data-id="{record.id}"]')
    await row.locator(".status.expired").wait_for()
    assert await through_gateway(gateway, value) == 401

    await row.get_by_role("button", name="Renew").click()
    form = page.locator("#token-dialog")
    assert "Renew “laptop”" in await form.locator("h2").inner_text()
    assert await form.get_by_label("Description").is_hidden()
    assert await form.locator("#scope-fields").is_hidden()
    assert await form.get_by_label("Expires on").is_checked()
    await no_sideways_scroll(page)
    await page.screenshot(path=str(ARTIFACTS / "phone-token-renew.png"))
    await form.get_by_role("button", name="Renew").click()
    await confirm_password(page)
    shown = page.locator("#value-dialog")
    await shown.wait_for(state="visible")
    assert "Renewed “laptop”" in await shown.locator("#value-about").inner_text()
    renewed = await shown.get_by_label("Token value").input_value()
    assert renewed[4:12] == record.id
    await shown.get_by_role("button", name="Done").click()
    await row.locator(".status.active").wait_for()
    assert await through_gateway(gateway, renewed) == 200
    assert await through_gateway(gateway, value) == 401
    assert page.problems == []


async def test_admin_people_panel(browser_context, gateway, upstream):
    bobs, _ = await gateway.service.create_token(ADMIN, "bob", name="bob's CI")
    await gateway.service.create_token(ADMIN, "alice", name="alice's laptop")
    page = await open_page(browser_context, gateway, PHONE)
    await log_in(page, "root", ROOT_PASSWORD)
    people = page.get_by_label("People")
    await page.locator("#people").wait_for(state="visible")
    assert await page.locator("#list-title").inner_text() == "Your tokens"
    await page.get_by_text("You have no tokens yet.").wait_for()

    await people.select_option("bob")
    await page.locator("#list-title").get_by_text("Tokens of bob").wait_for()
    row = page.locator(f'#token-rows tr[data-id="{bobs.id}"]')
    await row.wait_for()
    assert await page.locator("#token-rows tr").count() == 1

    # Create for bob: bob's scopes decide what may be granted.
    await page.get_by_role("button", name="Generate new token").click()
    form = page.locator("#token-dialog")
    assert await form.locator("#form-owner").inner_text() == "For bob."
    await form.get_by_label("Description").fill("made by root")
    await form.get_by_label("Search scopes").fill("api:")
    await form.locator('#scope-list input[value="api:read"]').check()
    assert await form.locator('#scope-list input[value="files:read"]').is_disabled()
    await form.get_by_role("button", name="Generate").click()
    await confirm_password(page, ROOT_PASSWORD)
    shown = page.locator("#value-dialog")
    await shown.wait_for(state="visible")
    value = await shown.get_by_label("Token value").input_value()
    await shown.get_by_role("button", name="Done").click()
    assert await through_gateway(gateway, value) == 200
    assert upstream.last.headers["X-Patgate-User"] == "bob"
    made = await gateway.store.get_token(value[4:12])
    assert made is not None
    assert (made.owner, made.created_by, made.scopes) == ("bob", "root", ("api:read",))
    await page.locator("#token-rows tr").nth(1).wait_for()

    # On a phone too, "Select all" selects every card shown.
    await page.get_by_text("Select all", exact=True).click()
    assert await page.locator("#token-rows .select:checked").count() == 2
    await page.get_by_text("Select all", exact=True).click()
    # Remove bob's CI token: gone.
    await row.get_by_role("checkbox").check()
    await page.get_by_role("button", name="Remove selected").click()
    await confirm_password(page, ROOT_PASSWORD)
    await page.get_by_text("Removed 1 token.").wait_for()
    await row.wait_for(state="detached")
    assert await gateway.store.get_token(bobs.id) is None

    # Everyone's, with an owner on each card.
    await people.select_option("")
    await page.locator("#list-title").get_by_text("Everyone’s tokens").wait_for()
    rows = page.locator("#token-rows tr")
    await rows.nth(1).wait_for()
    owners = await page.locator("#token-rows td.owner-col").all_inner_texts()
    assert sorted(o.split()[-1] for o in owners) == ["alice", "bob"]
    await no_sideways_scroll(page)
    await page.screenshot(path=str(ARTIFACTS / "phone-people.png"), full_page=True)
    # Editing alice's token offers what alice may grant, not what root may.
    alices = page.locator("#token-rows tr", has_text="alice's laptop")
    await alices.get_by_role("button", name="Edit").click()
    form = page.locator("#token-dialog")
    await form.wait_for(state="visible")  # after it asked for alice's scopes
    assert await form.locator("#form-owner").inner_text() == "For alice."
    assert await form.locator('#scope-list input[value="files:read"]').is_enabled()
    assert await form.locator('#scope-list input[value="api:write"]').is_disabled()
    await form.get_by_role("button", name="Cancel").click()
    assert page.problems == []
