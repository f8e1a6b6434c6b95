"""The token page sharing its origin with proxied content (issue 11, finding 13).

The attack: an HTML file served through an ``auth: none`` route (or any
route) comes from the same origin as ``/_patgate/``, so its scripts may read
whatever the page may: with the user logged in, ``fetch("/_patgate/api/v1/
session")`` returned the CSRF token and then the token list.

The fix is a deployment choice the gateway now offers: ``manage: {listen:
...}`` serves the page and the API on a listener of their own (another port
is another origin, so the same-origin policy keeps proxied pages from
reading it), and ``ops: {listen: ...}`` does the same for the health and
metrics endpoints. Then the main listener answers 404 under ``/_patgate/``
itself (nothing there is proxied, so the session cookie, which browsers send
to every port of the host, never reaches an upstream), and the separate
listeners never proxy anything. The cookie stays ``Path=/_patgate/`` for
that reason, and is ``__Secure-`` prefixed over HTTPS so that a plain-http
page on the same host cannot plant one. ``tests/browser/test_browser_attacks
.py`` runs the attack in Chromium.
"""

from __future__ import annotations

import base64
import re
import signal
from pathlib import Path

import aiohttp
import pytest

from patgate.web.manage.endpoint import SECURE_SESSION_COOKIE, SESSION_COOKIE
from patgate.web.manage.tokens import API_PREFIX
from tests.conftest import free_port
from tests.gateway_harness import (
    ADMIN,
    Gateway,
    RecordingUpstream,
    gateway_yaml,
    route_yaml,
)
from tests.processes import ProcessGroup, StoreAdmin, run_cli
from tests.security.conftest import (
    ROUTES,
    Listening,
    RawResponse,
    StartGateway,
    request,
    send_raw,
)

PASSWORD = "alice-password-for-isolation"
SEPARATE = "manage: {listen: 127.0.0.1:0}\nops: {listen: 127.0.0.1:0}"
# Anything the gateway does not answer itself goes to this upstream.
CATCH_ALL = "  - name: site\n    prefix: /\n    upstream: {upstream}\n    auth: none\n"
OPS_PATHS = ("/_patgate/healthz", "/_patgate/readyz", "/_patgate/metrics")
PAGE_PATHS = ("/_patgate/", "/_patgate", "/_patgate/static/app.js")


class Address:
    """A listener by its URL, for send_raw."""

    def __init__(self, url: str) -> None:
        self.host = url.removeprefix("http://")


async def start(
    make_gateway: StartGateway, upstream: RecordingUpstream, store_url: str
) -> Gateway:
    routes = ROUTES.format(upstream=upstream.url) + CATCH_ALL.format(
        upstream=upstream.url
    )
    gateway = await make_gateway(store_url, routes, extra=SEPARATE)
    await gateway.service.add_user(ADMIN, "alice", password=PASSWORD)
    return gateway


async def log_in(url: str) -> tuple[str, str]:
    """A session on the listener at ``url``: its cookie and CSRF token."""
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client,
        client.post(
            url + API_PREFIX + "/session",
            json={"login": "alice", "password": PASSWORD},
        ) as response,
    ):
        assert response.status == 200
        return response.cookies[SESSION_COOKIE].value, (await response.json())["csrf"]


async def get(listener: Listening, target: str, *headers: str) -> RawResponse:
    (response,) = await send_raw(listener, request(target, *headers))
    return response


def is_not_the_api(response: RawResponse) -> bool:
    return (
        b"csrf" not in response.body
        and b'"login"' not in response.body
        and "Set-Cookie" not in response.headers
    )


@pytest.fixture
async def gateway(
    make_gateway: StartGateway, upstream: RecordingUpstream, sqlite_url: str
) -> Gateway:
    return await start(make_gateway, upstream, sqlite_url)


async def test_main_listener_serves_no_page_api_or_ops_of_its_own(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    cookie, csrf = await log_in(gateway.listeners["manage"])
    session = (f"Cookie: {SESSION_COOKIE}={cookie}", f"X-Patgate-CSRF: {csrf}")
    for target in (
        *PAGE_PATHS,
        *OPS_PATHS,
        f"{API_PREFIX}/session",
        f"{API_PREFIX}/tokens",
        f"{API_PREFIX}/whoami",
        f"{API_PREFIX}/openapi.json",
        "/_patgate/anything",
    ):
        response = await get(gateway, target, *session)
        assert response.status == 404, target
        assert is_not_the_api(response), target
    (login,) = await send_raw(
        gateway,
        request(
            f"{API_PREFIX}/session",
            "Content-Type: application/json",
            method="POST",
            body=f'{{"login": "alice", "password": "{PASSWORD}"}}'.encode(),
        ),
    )
    assert login.status == 404
    assert is_not_the_api(login)
    assert upstream.requests == []
    # Other spellings of the same paths are never the API either (the
    # browser would not send the cookie with them, /_patgate/ being its path).
    for target in (
        "/%5Fpatgate/api/v1/session",
        "/_patgate/./api/v1/session",
        "//_patgate/api/v1/session",
        "/_PATGATE/api/v1/session",
        "/x/../_patgate/api/v1/session",
    ):
        assert is_not_the_api(await get(gateway, target, *session)), target


async def test_manage_listener_serves_the_page_and_api_and_proxies_nothing(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    manage = Address(gateway.listeners["manage"])
    page = await get(manage, "/_patgate/")
    assert page.status == 200
    assert page.headers["Content-Type"].startswith("text/html")
    cookie, csrf = await log_in(gateway.listeners["manage"])
    session = (f"Cookie: {SESSION_COOKIE}={cookie}", f"X-Patgate-CSRF: {csrf}")
    whoami = await get(manage, f"{API_PREFIX}/whoami", *session)
    assert whoami.status == 200
    for target in ("/", "/api/x", "/public/x", "/hosted/x", *OPS_PATHS):
        assert (await get(manage, target, *session)).status == 404, target
    assert upstream.requests == []
    # A page of the main listener is same-site but another origin: it cannot
    # read the API (no CORS), and its changes are refused.
    (change,) = await send_raw(
        manage,
        request(
            f"{API_PREFIX}/tokens",
            *session,
            "Content-Type: application/json",
            f"Origin: {gateway.url}",
            "Sec-Fetch-Site: same-site",
            method="POST",
            body=f'{{"password": "{PASSWORD}"}}'.encode(),
            host=manage.host,
        ),
    )
    assert change.status == 403
    assert "Access-Control-Allow-Origin" not in whoami.headers


async def test_ops_listener_serves_only_the_ops_endpoints(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    ops = Address(gateway.listeners["ops"])
    for target in OPS_PATHS:
        assert (await get(ops, target)).status == 200, target
    for target in (*PAGE_PATHS, f"{API_PREFIX}/openapi.json", "/public/x", "/"):
        assert (await get(ops, target)).status == 404, target
    assert upstream.requests == []


async def test_without_separate_listeners_everything_stays_on_the_main_one(
    make_gateway: StartGateway, upstream: RecordingUpstream, sqlite_url: str
) -> None:
    gateway = await make_gateway(sqlite_url, ROUTES.format(upstream=upstream.url))
    assert gateway.listeners == {}
    for target in (*OPS_PATHS, "/_patgate/", f"{API_PREFIX}/openapi.json"):
        assert (await get(gateway, target)).status == 200, target


async def test_session_cookie_stays_under_the_gateways_own_path(
    make_gateway: StartGateway, upstream: RecordingUpstream, sqlite_url: str
) -> None:
    gateway = await make_gateway(
        sqlite_url,
        ROUTES.format(upstream=upstream.url),
        extra=f"{SEPARATE}\ntrusted_proxies: [127.0.0.0/8]",
    )
    await gateway.service.add_user(ADMIN, "alice", password=PASSWORD)
    manage = Address(gateway.listeners["manage"])
    login_body = f'{{"login": "alice", "password": "{PASSWORD}"}}'.encode()

    async def log_in_raw(*headers: str) -> RawResponse:
        (response,) = await send_raw(
            manage,
            request(
                f"{API_PREFIX}/session",
                "Content-Type: application/json",
                *headers,
                method="POST",
                body=login_body,
            ),
        )
        assert response.status == 200
        return response

    plain = (await log_in_raw()).headers["Set-Cookie"]
    assert plain.startswith(f"{SESSION_COOKIE}=")
    for attribute in ("HttpOnly", "Path=/_patgate/", "SameSite=Strict"):
        assert attribute in plain
    assert "Secure" not in plain
    # Behind a trusted TLS proxy: a name only a secure origin may set.
    secure = (await log_in_raw("X-Forwarded-Proto: https")).headers["Set-Cookie"]
    assert secure.startswith(f"{SECURE_SESSION_COOKIE}=")
    for attribute in ("HttpOnly", "Path=/_patgate/", "SameSite=Strict", "Secure"):
        assert attribute in secure
    # A cookie under the plain name, as a plain-http page of this host could
    # plant it, is not a session over HTTPS.
    value = re.match(r"[^=]+=([^;]+)", plain)
    assert value is not None
    planted = await get(
        manage,
        f"{API_PREFIX}/session",
        f"Cookie: {SESSION_COOKIE}={value.group(1)}",
        "X-Forwarded-Proto: https",
    )
    assert planted.status == 401


async def test_every_worker_serves_every_listener(
    tmp_path: Path,
    sqlite_url: str,
    upstream: RecordingUpstream,
    gateways: ProcessGroup,
) -> None:
    routes = route_yaml("site", "/", upstream.url, "auth: none")
    process = await gateways.start(
        gateway_yaml(sqlite_url, routes, f"workers: 2\n{SEPARATE}")
    )
    found = dict(
        re.findall(
            r"patgate serves the (management page and API|ops endpoints) on"
            r" (http://\S+?)/_patgate/",
            process.stdout(),
        )
    )
    manage = Address(found["management page and API"])
    ops = Address(found["ops endpoints"])
    # Fresh connections each: the kernel spreads them over both workers.
    for _ in range(8):
        assert (await get(manage, "/_patgate/")).status == 200
        assert (await get(manage, "/x")).status == 404
        assert (await get(ops, "/_patgate/healthz")).status == 200
        assert (await get(process, "/_patgate/")).status == 404
        assert (await get(process, "/_patgate/healthz")).status == 404
        assert (await get(process, "/x")).status == 200
    assert [seen.raw_path for seen in upstream.requests] == ["/x"] * 8


async def test_a_reload_reaches_the_separate_listeners(
    tmp_path: Path,
    sqlite_url: str,
    upstream: RecordingUpstream,
    gateways: ProcessGroup,
) -> None:
    admin = StoreAdmin(sqlite_url)
    try:
        await admin.service.add_user(ADMIN, "alice", password=PASSWORD)
    finally:
        await admin.close()
    site = route_yaml("site", "/", upstream.url, "auth: none")
    process = await gateways.start(gateway_yaml(sqlite_url, site, SEPARATE))
    manage = re.search(
        r"management page and API on (http://\S+?)/_patgate/", process.stdout()
    )
    assert manage is not None
    credentials = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    basic = {"Authorization": f"Basic {credentials}"}

    async def scopes() -> set[str]:
        async with (
            aiohttp.ClientSession() as client,
            client.get(
                manage.group(1) + API_PREFIX + "/scopes", headers=basic
            ) as answer,
        ):
            assert answer.status == 200
            return {entry["scope"] for entry in (await answer.json())["scopes"]}

    assert "reload:test" not in await scopes()
    added = route_yaml("more", "/more/", upstream.url, "scope: reload:test")
    process.write_config(gateway_yaml(sqlite_url, site + added, SEPARATE))
    process.send(signal.SIGHUP)
    await process.wait_for_event("config_reloaded")
    assert "reload:test" in await scopes()


async def test_healthcheck_asks_the_ops_listener(
    gateways: ProcessGroup, sqlite_url: str, upstream: RecordingUpstream
) -> None:
    # The container's HEALTHCHECK: with ops: on a port of its own, the main
    # listener answers 404 for healthz, so the command must ask the ops one.
    port = free_port()
    process = await gateways.start(
        gateway_yaml(
            sqlite_url,
            route_yaml("site", "/", upstream.url, "auth: none"),
            f"ops: {{listen: '127.0.0.1:{port}'}}",
        )
    )
    healthy = run_cli(process.directory, "healthcheck")
    assert (healthy.returncode, healthy.stderr) == (0, "")
    await process.stop()
    sick = run_cli(process.directory, "healthcheck", "--timeout", "1")
    assert sick.returncode == 1
    assert f"http://127.0.0.1:{port}/_patgate/healthz" in sick.stderr
