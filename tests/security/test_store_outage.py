"""Store outage: never fail open, and never call a good token bad.

SPEC §3 "Store down" and §8 "Store outage reported as 401": a token the
gateway cannot check is a 503 (clients retry), never a 401 (clients throw
the token away) and never a pass; tokens confirmed recently keep working
from the cache for at most ``cache.max_stale``. Stopped in
``patgate.gate.Gate._fetch`` (``StoreUnavailableError`` → stale grant or
``UNAVAILABLE``) and ``patgate.cache.GrantCache.stale``.

Kills and restarts the test session's own redis-server (never 6379).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiohttp
import pytest

from patgate.tokens import format_token
from tests.conftest import RedisServer
from tests.gateway_harness import Gateway, RecordingUpstream
from tests.security.conftest import ROUTES, StartGateway, bearer, request, send_raw

RECOVERY_TIMEOUT = 15.0


@pytest.fixture
def outage(redis_server: RedisServer) -> Iterator[RedisServer]:
    """The Redis server, restarted after the test whatever happens."""
    try:
        yield redis_server
    finally:
        redis_server.start()


async def test_store_outage_is_503_for_unchecked_tokens_never_401(
    make_gateway: StartGateway,
    upstream: RecordingUpstream,
    redis_url: str,
    outage: RedisServer,
) -> None:
    gateway: Gateway = await make_gateway(
        redis_url, ROUTES.format(upstream=upstream.url)
    )
    cached = await gateway.token("alice")
    unchecked = await gateway.token("alice")
    unknown = format_token("pgt", "Nobody00", "S" * 32)
    forged = cached[:-1] + ("A" if cached[-1] != "A" else "B")
    (response,) = await send_raw(gateway, request("/api/warm", bearer(cached)))
    assert response.status == 200

    await asyncio.to_thread(outage.stop)

    for value in (unchecked, unknown):
        (response,) = await send_raw(gateway, request("/api/x", bearer(value)))
        assert response.status == 503
        assert "WWW-Authenticate" not in response.headers
        assert b"temporarily_unavailable" in response.body
    # Recently confirmed: still served from the cache (within max_stale).
    (response,) = await send_raw(gateway, request("/api/cached", bearer(cached)))
    assert response.status == 200
    # A forged value needs no store to be refused.
    (response,) = await send_raw(gateway, request("/api/x", bearer(forged)))
    assert response.status == 401
    (response,) = await send_raw(gateway, request("/_patgate/readyz"))
    assert response.status == 503
    assert [seen.raw_path for seen in upstream.requests] == ["/api/warm", "/api/cached"]

    await asyncio.to_thread(outage.start)

    # The gateway reconnects by itself. The test server keeps nothing on
    # disk, so the restarted store knows none of the old tokens: now that
    # it answers again, they are refused for what they are, and a token made
    # after the restart passes.
    async with asyncio.timeout(RECOVERY_TIMEOUT):
        while True:
            (response,) = await send_raw(gateway, request("/_patgate/readyz"))
            if response.status == 200:
                break
            await asyncio.sleep(0.1)
    (response,) = await send_raw(gateway, request("/api/x", bearer(unchecked)))
    assert response.status == 401
    fresh = await gateway.token("alice")
    (response,) = await send_raw(gateway, request("/api/after", bearer(fresh)))
    assert response.status == 200
    assert upstream.last.raw_path == "/api/after"


@pytest.mark.parametrize(
    "forward_auth", ["{}", "{listen: 127.0.0.1:0}"], ids=["main", "own listener"]
)
async def test_the_decision_endpoint_is_503_in_an_outage_never_200(
    make_gateway: StartGateway,
    upstream: RecordingUpstream,
    redis_url: str,
    outage: RedisServer,
    client: aiohttp.ClientSession,
    forward_auth: str,
) -> None:
    """A proxy in front passes what the endpoint answers 2xx: a token it
    cannot check is a 503 there too (nginx then refuses), as in proxy mode."""
    extra = f"trusted_proxies: [127.0.0.1/32]\nforward_auth: {forward_auth}\n"
    gateway: Gateway = await make_gateway(
        redis_url, ROUTES.format(upstream=upstream.url), extra=extra
    )
    cached = await gateway.token("alice")
    unchecked = await gateway.token("alice")

    async def decide(value: str) -> tuple[int, dict[str, str], bytes]:
        headers = {
            "Authorization": f"Bearer {value}",
            "X-Original-Method": "GET",
            "X-Original-URI": "/api/x",
        }
        url = gateway.decisions_url + "/_patgate/auth"
        async with client.get(url, headers=headers) as response:
            return response.status, dict(response.headers), await response.read()

    assert (await decide(cached))[0] == 200

    await asyncio.to_thread(outage.stop)

    status, headers, body = await decide(unchecked)
    assert status == 503
    assert "WWW-Authenticate" not in headers
    assert "X-Patgate-User" not in headers
    assert b"temporarily_unavailable" in body
    assert unchecked.encode() not in body
    # Recently confirmed: the cache answers within max_stale, as in proxy mode.
    assert (await decide(cached))[0] == 200
