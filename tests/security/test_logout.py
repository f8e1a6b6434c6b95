"""A stolen page session outliving its logout (issue 11, finding 15).

The attack: the page's session cookie was a stateless HMAC, so logging out
only asked the browser to forget it; a copy taken before (from a shared
machine, a proxy log, a backup of the profile) stayed valid for its eight
hours, on every worker and replica.

Stopped in ``web.manage.login.close_session`` and
``web.manage.caller.session_user``: a logout records the session's id in
the store until the cookie would have expired
(``Store.revoke_session``), and every use of a session asks the store
(``Store.session_revoked``). Checked on both stores, on a second gateway
sharing the store, and on real ``patgate serve`` processes with workers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from patgate.web.manage.endpoint import SESSION_COOKIE
from patgate.web.manage.tokens import API_PREFIX
from tests.gateway_harness import (
    ADMIN,
    Gateway,
    RecordingUpstream,
    gateway_yaml,
    route_yaml,
)
from tests.processes import ProcessGroup, StoreAdmin
from tests.security.conftest import ROUTES, StartGateway

PASSWORD = "alice-password-for-logout"


@dataclass(frozen=True)
class Session:
    cookie: str
    csrf: str

    def headers(self) -> dict[str, str]:
        return {
            "Cookie": f"{SESSION_COOKIE}={self.cookie}",
            "X-Patgate-CSRF": self.csrf,
        }


async def log_in(url: str) -> Session:
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client,
        client.post(
            url + API_PREFIX + "/session",
            json={"login": "alice", "password": PASSWORD},
        ) as response,
    ):
        assert response.status == 200
        cookie = response.cookies[SESSION_COOKIE].value
        return Session(cookie, (await response.json())["csrf"])


async def status(url: str, method: str, path: str, session: Session) -> int:
    """What ``url`` answers a request carrying ``session`` (a fresh connection)."""
    body = None if method == "GET" else {}
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client,
        client.request(
            method, url + API_PREFIX + path, json=body, headers=session.headers()
        ) as response,
    ):
        await response.read()
        return response.status


async def log_out(url: str, session: Session) -> aiohttp.ClientResponse:
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client,
        client.delete(
            url + API_PREFIX + "/session", json={}, headers=session.headers()
        ) as response,
    ):
        await response.read()
        return response


@pytest.fixture
async def pair(
    make_gateway: StartGateway, upstream: RecordingUpstream, store_url: str
) -> tuple[Gateway, Gateway]:
    """Two gateways (replicas) on one store, SQLite or Redis."""
    routes = ROUTES.format(upstream=upstream.url)
    first = await make_gateway(store_url, routes)
    second = await make_gateway(store_url, routes)
    await first.service.add_user(ADMIN, "alice", password=PASSWORD)
    return first, second


async def test_a_logged_out_session_is_refused_by_every_replica(
    pair: tuple[Gateway, Gateway],
) -> None:
    first, _ = pair
    stolen = await log_in(first.url)
    for gateway in pair:
        assert await status(gateway.url, "GET", "/whoami", stolen) == 200
    out = await log_out(first.url, stolen)
    assert out.status == 200
    assert SESSION_COOKIE in out.cookies  # told to forget it, Max-Age=0
    for gateway in pair:
        for method, path in (
            ("GET", "/whoami"),
            ("GET", "/tokens"),
            ("GET", "/session"),
            ("POST", "/tokens"),
        ):
            assert await status(gateway.url, method, path, stolen) == 401, (
                gateway.url,
                path,
            )


async def test_logout_ends_that_session_only(pair: tuple[Gateway, Gateway]) -> None:
    first, second = pair
    laptop = await log_in(first.url)
    phone = await log_in(second.url)
    assert (await log_out(second.url, phone)).status == 200
    assert await status(first.url, "GET", "/whoami", phone) == 401
    assert await status(second.url, "GET", "/whoami", laptop) == 200


async def test_logout_of_a_dead_or_forged_session_is_harmless(
    pair: tuple[Gateway, Gateway],
) -> None:
    first, _ = pair
    live = await log_in(first.url)
    forged = Session(live.cookie[:-4] + "AAAA", live.csrf)
    for session in (forged, Session("v1.garbage", "x"), live, live):
        assert (await log_out(first.url, session)).status == 200
    assert await status(first.url, "GET", "/whoami", live) == 401


async def test_a_logged_out_session_is_refused_by_every_worker(
    tmp_path: Path,
    store_url: str,
    upstream: RecordingUpstream,
    gateways: ProcessGroup,
) -> None:
    admin = StoreAdmin(store_url)
    try:
        await admin.service.add_user(ADMIN, "alice", password=PASSWORD)
    finally:
        await admin.close()
    config = gateway_yaml(
        store_url, route_yaml("api", "/api/", upstream.url), "workers: 2"
    )
    replica = await gateways.start(config)
    other = await gateways.start(config)
    stolen = await log_in(replica.url)
    assert (await log_out(replica.url, stolen)).status == 200
    # Fresh connections: the kernel spreads them over both workers of each.
    answers = [
        await status(gateway.url, "GET", "/whoami", stolen)
        for gateway in (replica, other)
        for _ in range(12)
    ]
    assert set(answers) == {401}
    closed = [json.dumps(e) for e in replica.events("session_closed")]
    assert len(closed) == 1
    assert stolen.cookie not in "".join(closed)
