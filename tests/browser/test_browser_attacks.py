"""The management attacks of issue 11, run in real headless Chromium.

- CSRF through cached Basic credentials (finding 5): a page on another site
  auto-submits a bodiless ``enctype=text/plain`` form to the API while the
  browser holds the user's Basic credentials; and a lured navigation to the
  API must not make the browser ask for (and keep) them.
- The page sharing its origin with proxied content (finding 13): an HTML
  file served through an ``auth: none`` route reads the API with the
  logged-in user's session, unless the page has a listener of its own.
- Logout (finding 15): the cookie the page had is dead on the server after
  the page's "Log out".

The raw-HTTP class tests are in ``tests/security/test_api_csrf.py``,
``test_page_origin_isolation.py`` and ``test_logout.py``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from patgate.web.manage.endpoint import SESSION_COOKIE
from patgate.web.manage.tokens import API_PREFIX
from tests.gateway_harness import ADMIN, Gateway, bound_socket

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

PASSWORD = "alice-browser-attack-pw"
TIMEOUT_MS = 10_000

# Reads the API from wherever it is served, and says what it got.
STEAL = """<!doctype html><title>cat pictures</title><script>
(async () => {
  const results = {};
  const targets = {
    ping: "/public/ping",
    here: "/_patgate/api/v1/session",
    manage: MANAGE + "/_patgate/api/v1/session",
  };
  for (const [name, url] of Object.entries(targets)) {
    try {
      const response = await fetch(url, { credentials: "include" });
      results[name] = { status: response.status, body: await response.text() };
    } catch (err) {
      results[name] = { error: String(err) };
    }
  }
  window.stolen = results;
})();
</script>"""

# Auto-submits a bodiless form: no field, so the text/plain body is empty.
FORGE = """<!doctype html><title>win a prize</title>
<form id="f" method="POST" enctype="text/plain" action="TARGET"></form>
<script>document.getElementById("f").submit();</script>"""


class Site:
    """A plain web server of the attacker's (or behind an ``auth: none`` route)."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}
        self.url = ""
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{name:.*}", self.serve)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.SockSite(self.runner, bound_socket())
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        # "localhost" is another site than 127.0.0.1, where the gateway is.
        self.url = f"http://localhost:{port}"
        self.port = port

    async def serve(self, request: web.Request) -> web.Response:
        name = request.match_info["name"].rpartition("/")[2]
        if name == "ping":
            return web.Response(text="pong")
        if name not in self.pages:
            raise web.HTTPNotFound()
        return web.Response(text=self.pages[name], content_type="text/html")


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    server = Site()
    await server.start()
    try:
        yield server
    finally:
        assert server.runner is not None
        await server.runner.cleanup()


def routes(site: Site) -> str:
    return (
        "  - name: public\n"
        "    prefix: /public/\n"
        f"    upstream: http://127.0.0.1:{site.port}\n"
        "    auth: none\n"
    )


async def start(
    make_gateway: Any, sqlite_url: str, site: Site, extra: str = ""
) -> Gateway:
    gateway: Gateway = await make_gateway(sqlite_url, routes(site), extra=extra)
    await gateway.service.add_user(ADMIN, "alice", password=PASSWORD)
    return gateway


async def open_page(browser_context: Any, url: str) -> Any:
    page = await browser_context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    await page.goto(url)
    return page


async def log_in(page: Any) -> None:
    await page.get_by_label("Login").fill("alice")
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await page.locator("#tokens-view").wait_for(state="visible")


async def test_cross_site_form_with_cached_basic_credentials_changes_nothing(
    browser_context, make_gateway, sqlite_url, site
):
    gateway = await start(make_gateway, sqlite_url, site)
    record, _ = await gateway.service.create_token(ADMIN, "alice", name="ci")
    basic = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    # What a browser does once the user answered the API's Basic prompt: it
    # sends the credentials with every request to the API, whoever asks.
    await browser_context.set_extra_http_headers({"Authorization": f"Basic {basic}"})
    answers: list[tuple[str, int]] = []
    for target in (f"/tokens/{record.id}/regenerate", "/tokens"):
        site.pages["forge.html"] = FORGE.replace(
            "TARGET", gateway.url + API_PREFIX + target
        )
        page = await browser_context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        async with page.expect_response(
            lambda r: r.url.startswith(gateway.url)
        ) as response_info:
            await page.goto(site.url + "/forge.html")
        response = await response_info.value
        answers.append((target, response.status))
        await page.close()
    assert [status for _, status in answers] == [403, 403], answers
    after = await gateway.store.get_token(record.id)
    assert after is not None
    assert after.token_hash == record.token_hash
    assert len(await gateway.store.list_tokens("alice")) == 1


async def test_a_lured_navigation_never_asks_for_the_password(
    browser_context, make_gateway, sqlite_url, site
):
    gateway = await start(make_gateway, sqlite_url, site)
    site.pages["lure.html"] = (
        f'<a id="go" href="{gateway.url}{API_PREFIX}/tokens">prize</a>'
    )
    page = await open_page(browser_context, site.url + "/lure.html")
    async with page.expect_response(lambda r: r.url.startswith(gateway.url)) as info:
        await page.click("#go")
    response = await info.value
    assert response.status == 401
    # Without a challenge, the browser shows no login dialog and so never
    # keeps the user's password for later requests.
    assert "www-authenticate" not in await response.all_headers()


@pytest.mark.parametrize("layout", ["shared", "separate"])
async def test_a_proxied_page_reads_the_api_only_when_it_shares_its_origin(
    browser_context, make_gateway, sqlite_url, site, layout
):
    extra = "manage: {listen: 127.0.0.1:0}" if layout == "separate" else ""
    gateway = await start(make_gateway, sqlite_url, site, extra)
    manage = gateway.listeners.get("manage", gateway.url)
    page = await open_page(browser_context, manage + "/_patgate/")
    await log_in(page)
    site.pages["steal.html"] = STEAL.replace("MANAGE", json.dumps(manage))
    attacker = await open_page(browser_context, gateway.url + "/public/steal.html")
    await attacker.wait_for_function("window.stolen !== undefined")
    stolen = await attacker.evaluate("window.stolen")
    assert stolen["ping"] == {"status": 200, "body": "pong"}  # the script ran
    read = [
        name for name in ("here", "manage") if '"csrf"' in stolen[name].get("body", "")
    ]
    if layout == "shared":
        # Why manage.listen exists: on one origin, a proxied page is the page.
        assert read == ["here", "manage"]
    else:
        assert read == [], stolen
        assert stolen["here"]["status"] == 404
        assert "error" in stolen["manage"]  # the same-origin policy: no CORS


async def test_the_page_works_on_its_own_listener_and_logout_ends_the_session(
    browser_context, make_gateway, sqlite_url, site
):
    gateway = await start(
        make_gateway, sqlite_url, site, "manage: {listen: 127.0.0.1:0}"
    )
    manage = gateway.listeners["manage"]
    page = await open_page(browser_context, manage + "/_patgate/")
    await log_in(page)
    await page.get_by_role("button", name="Generate new token").click()
    await page.locator("#token-dialog").get_by_label("Description").fill("own port")
    await page.locator("#token-dialog").get_by_role("button", name="Generate").click()
    dialog = page.locator("#confirm-dialog")
    await dialog.get_by_label("Your password").fill(PASSWORD)
    await dialog.get_by_role("button", name="Confirm").click()
    shown = page.locator("#value-dialog")
    await shown.wait_for(state="visible")
    assert (await shown.get_by_label("Token value").input_value()).startswith("pgt_")
    await shown.get_by_role("button", name="Done").click()

    cookies = await page.context.cookies(manage + "/_patgate/")
    copied = next(c["value"] for c in cookies if c["name"] == SESSION_COOKIE)
    csrf = await page.evaluate(
        "fetch('api/v1/session').then((r) => r.json()).then((s) => s.csrf)"
    )
    await page.get_by_role("button", name="Log out").click()
    await page.get_by_text("You are logged out.").wait_for()
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client,
        client.get(
            manage + API_PREFIX + "/whoami",
            headers={"Cookie": f"{SESSION_COOKIE}={copied}", "X-Patgate-CSRF": csrf},
        ) as response,
    ):
        assert response.status == 401
