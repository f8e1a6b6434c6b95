"""Hostile credentials: duplicates, conflicts, garbage, forged checksums.

SPEC §1 ("a value with a bad shape or checksum is refused before any store
lookup"), §3 ("two different tokens in one request → 400") and §8
"Duplicate credentials". Stopped in ``patgate.extract.extract_credential``
(one credential or a 400, never "the first"), ``patgate.tokens.parse_token``
with ``patgate.gate.Gate.authorize`` (shape and checksum before cache and
store) and ``patgate.policy.decide`` (Basic login must be the owner).

"No store lookup" is measured, not mocked: the gateway's own cache-miss
counter (every store lookup follows a miss) on both stores, and on Redis the
server's ``INFO commandstats`` as well.
"""

from __future__ import annotations

import asyncio
import base64
import re
from dataclasses import dataclass

import aiohttp
import pytest
from yarl import URL

from patgate.tokens import BASE62, format_token
from tests.conftest import RedisServer
from tests.gateway_harness import Gateway, RecordingUpstream
from tests.security.conftest import (
    ROUTES,
    StartGateway,
    bearer,
    request,
    send_raw,
)

# Commands a healthy idle gateway (or this test's own connection) sends by
# itself: handshakes, liveness pings, the INFO that reads these counters.
_BACKGROUND_COMMANDS = frozenset(
    {"info", "ping", "select", "hello", "subscribe", "client"}
)


def basic(login: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()


def bad_checksum(token: str) -> str:
    """``token`` with its last checksum character changed: right shape, wrong sum."""
    last = token[-1]
    return token[:-1] + BASE62[(BASE62.index(last) + 1) % len(BASE62)]


@dataclass
class StoreLookups:
    """Counts what could only happen if the gateway asked its store."""

    gateway: Gateway
    redis: RedisServer | None

    async def snapshot(self) -> tuple[int, int]:
        return await self._cache_misses(), await self._redis_calls()

    async def _cache_misses(self) -> int:
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.gateway.url + "/_patgate/metrics") as response,
        ):
            text = await response.text()
        match = re.search(r"^patgate_cache_misses_total ([0-9.e+]+)$", text, re.M)
        assert match, "patgate_cache_misses_total is missing from /_patgate/metrics"
        return int(float(match.group(1)))

    async def _redis_calls(self) -> int:
        if self.redis is None:
            return 0
        server = self.redis

        def count() -> int:
            with server.client_sync() as client:
                stats = client.info("commandstats")
            return sum(
                int(value["calls"])
                for name, value in stats.items()
                if name.removeprefix("cmdstat_").split("|")[0]
                not in _BACKGROUND_COMMANDS
            )

        return await asyncio.to_thread(count)


@pytest.fixture
async def any_store_gateway(
    make_gateway: StartGateway, upstream: RecordingUpstream, store_url: str
) -> Gateway:
    return await make_gateway(store_url, ROUTES.format(upstream=upstream.url))


@pytest.fixture
def lookups(
    any_store_gateway: Gateway, store_url: str, request: pytest.FixtureRequest
) -> StoreLookups:
    redis = (
        request.getfixturevalue("redis_server")
        if store_url.startswith("redis")
        else None
    )
    return StoreLookups(any_store_gateway, redis)


async def get(
    gateway: Gateway,
    target: str,
    *headers: tuple[str, str],
) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(URL(gateway.url + target, encoded=True), headers=headers) as resp,
    ):
        return resp.status, await resp.json()


# --------------------------------------------------------------------------
# Duplicates and conflicts


async def test_two_authorization_headers_are_refused_even_if_equal(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    alice = await gateway.token("alice")
    bob = await gateway.token("bob")
    for pair in [
        (bearer(alice), bearer(alice)),
        (bearer(alice), bearer(bob)),
        (bearer(alice), "Authorization: " + basic("alice", alice)),
        (bearer(alice), "authorization: Bearer garbage"),
    ]:
        (response,) = await send_raw(gateway, request("/api/x", *pair))
        assert response.status == 400, pair
    assert upstream.requests == []


@pytest.mark.parametrize(
    "shape",
    [
        "header+query",
        "query+header",
        "access_token+session",
        "query twice",
        "api key+bearer",
        "basic+query",
        "header+garbage query",
    ],
)
async def test_two_different_tokens_in_one_request_are_refused(
    gateway: Gateway, upstream: RecordingUpstream, shape: str
) -> None:
    alice = await gateway.token("alice")
    bob = await gateway.token("bob")
    target, headers = {
        "header+query": (f"/api/x?access_token={bob}", [bearer(alice)]),
        "query+header": (f"/api/x?session={alice}", [bearer(bob)]),
        "access_token+session": (f"/api/x?access_token={alice}&session={bob}", []),
        "query twice": (f"/api/x?session={alice}&session={bob}", []),
        "api key+bearer": ("/api/x", [bearer(alice), f"X-API-Key: {bob}"]),
        "basic+query": (
            f"/api/x?access_token={bob}",
            ["Authorization: " + basic("alice", alice)],
        ),
        "header+garbage query": ("/api/x?access_token=nonsense", [bearer(alice)]),
    }[shape]
    (response,) = await send_raw(gateway, request(target, *headers))
    assert response.status == 400
    assert b"conflicting" in response.body or b"two different" in response.body
    assert upstream.requests == []


async def test_encoded_query_parameter_name_is_still_a_credential(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    # "access%5Ftoken" is "access_token" to the upstream's query parser: a
    # second token hidden there must conflict, not ride along unchecked.
    alice = await gateway.token("alice")
    bob = await gateway.token("bob")
    (response,) = await send_raw(
        gateway, request(f"/api/x?access%5Ftoken={bob}", bearer(alice))
    )
    assert response.status == 400
    assert upstream.requests == []


async def test_same_token_in_header_and_query_is_one_credential(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    alice = await gateway.token("alice")
    (response,) = await send_raw(
        gateway,
        request(
            f"/api/x?a=1&access_token={alice}&b=2", bearer(alice), f"X-API-Key: {alice}"
        ),
    )
    assert response.status == 200
    assert upstream.last.raw_path == "/api/x?a=1&b=2"
    assert upstream.last.headers["X-Patgate-User"] == "alice"


# --------------------------------------------------------------------------
# Garbage never reaches the store


MALFORMED_HEADERS: list[bytes] = [
    b"Authorization: Bearer",
    b"Authorization: Bearer ",
    b"Authorization: Bearer  a b",
    b"Authorization: Bearer a\tb",
    b"Authorization: Bearer a,b",
    b'Authorization: Bearer "quoted"',
    b"Authorization: Basic !!!",
    b"Authorization: Basic YWxpY2U6dG9rZW4",  # missing padding
    b"Authorization: Basic YWxp Y2U6",
    b"Authorization: Basic " + base64.b64encode(b"no-colon-here"),
    b"Authorization: Basic " + base64.b64encode(b"alice:\xff\xfe\xfd"),
    b"Authorization: Bearer \xff\xfe\xfd",
    b"Authorization: Bearer pgt_\xc3\xa9\xc3\xa9",
    b"Authorization: Basic \xff\xfe",
]


@pytest.mark.parametrize("header", MALFORMED_HEADERS)
async def test_malformed_authorization_is_400_without_store_lookup(
    any_store_gateway: Gateway,
    upstream: RecordingUpstream,
    lookups: StoreLookups,
    header: bytes,
) -> None:
    before = await lookups.snapshot()
    (response,) = await send_raw(any_store_gateway, request("/api/x", header))
    assert response.status == 400
    assert response.headers["Content-Type"].startswith("application/json")
    assert await lookups.snapshot() == before
    assert upstream.requests == []


def _bad_tokens(good: str) -> dict[str, str]:
    token_id = good.split("_", 1)[1][:8]
    return {
        "bad checksum": bad_checksum(good),
        "checksum of another prefix": format_token("xyz", token_id, "A" * 32)[3:],
        "wrong prefix": "ghp" + good[3:],
        "too short": good[:-1],
        "too long": good + "A",
        "lower-case prefix swap": good.upper(),
        "non-base62 body": good[:10] + "-" + good[11:],
        "empty secret": f"pgt_{token_id}",
    }


@pytest.mark.parametrize(
    "kind",
    [
        "bad checksum",
        "checksum of another prefix",
        "wrong prefix",
        "too short",
        "too long",
        "lower-case prefix swap",
        "non-base62 body",
        "empty secret",
    ],
)
@pytest.mark.parametrize("where", ["bearer", "basic", "query", "api key"])
async def test_badly_formed_token_is_401_without_store_lookup(
    any_store_gateway: Gateway,
    upstream: RecordingUpstream,
    lookups: StoreLookups,
    kind: str,
    where: str,
) -> None:
    gateway = any_store_gateway
    good = await gateway.token("alice")
    value = _bad_tokens(good)[kind]
    target, headers = {
        "bearer": ("/api/x", [bearer(value)]),
        "basic": ("/api/x", ["Authorization: " + basic("alice", value)]),
        "query": (f"/api/x?access_token={value}", []),
        "api key": ("/api/x", [f"X-API-Key: {value}"]),
    }[where]
    before = await lookups.snapshot()
    (response,) = await send_raw(gateway, request(target, *headers))
    assert response.status == 401
    assert 'error="invalid_token"' in ",".join(
        response.headers.getall("WWW-Authenticate")
    )
    assert await lookups.snapshot() == before
    assert upstream.requests == []


async def test_well_formed_unknown_token_is_looked_up_once(
    any_store_gateway: Gateway, upstream: RecordingUpstream, lookups: StoreLookups
) -> None:
    """The control for the two tests above: the measurement does see lookups."""
    gateway = any_store_gateway
    await gateway.token("alice")
    unknown = format_token("pgt", "Unknown1", "S" * 32)
    misses, calls = await lookups.snapshot()
    (response,) = await send_raw(gateway, request("/api/x", bearer(unknown)))
    assert response.status == 401
    after_misses, after_calls = await lookups.snapshot()
    assert after_misses == misses + 1
    if lookups.redis is not None:
        assert after_calls > calls
    # The negative cache answers a repeat without the store.
    (response,) = await send_raw(gateway, request("/api/x", bearer(unknown)))
    assert response.status == 401
    assert (await lookups.snapshot())[1] == after_calls
    assert upstream.requests == []


# --------------------------------------------------------------------------
# Basic: the login is the owner


@pytest.mark.parametrize("login", ["bob", "Alice", "alice ", " alice", "", "admin"])
async def test_basic_login_other_than_owner_is_refused(
    gateway: Gateway, upstream: RecordingUpstream, login: str
) -> None:
    await gateway.add_user("bob")
    token = await gateway.token("alice")
    (response,) = await send_raw(
        gateway, request("/api/x", "Authorization: " + basic(login, token))
    )
    assert response.status == 401
    assert upstream.requests == []
    (response,) = await send_raw(
        gateway, request("/api/x", "Authorization: " + basic("alice", token))
    )
    assert response.status == 200
    assert upstream.last.headers["X-Patgate-User"] == "alice"
    assert "Authorization" not in upstream.last.headers


async def test_basic_probe_without_password_gets_the_basic_challenge(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    (response,) = await send_raw(
        gateway, request("/api/x", "Authorization: " + basic("alice", ""))
    )
    assert response.status == 401
    assert any(
        value.startswith('Basic realm="api"')
        for value in response.headers.getall("WWW-Authenticate")
    )
    assert upstream.requests == []


async def test_credential_from_a_source_the_route_refuses_is_not_honoured(
    make_gateway: StartGateway, upstream: RecordingUpstream, sqlite_url: str
) -> None:
    routes = (
        "  - name: api\n"
        "    prefix: /api/\n"
        f"    upstream: {upstream.url}\n"
        "    credentials: [bearer]\n"
    )
    gateway = await make_gateway(sqlite_url, routes)
    token = await gateway.token("alice")
    for target, headers in [
        (f"/api/x?access_token={token}", []),
        ("/api/x", [f"X-API-Key: {token}"]),
        ("/api/x", ["Authorization: " + basic("alice", token)]),
    ]:
        (response,) = await send_raw(gateway, request(target, *headers))
        assert response.status == 401, (target, headers)
    assert upstream.requests == []
