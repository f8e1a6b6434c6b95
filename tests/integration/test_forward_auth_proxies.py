"""Real nginx and Caddy in front of patgate's decision endpoint and an upstream.

The proxies run the shipped ``deploy/forward-auth/`` files
(:mod:`tests.front_proxies`); patgate decides, the proxy carries the bytes.
What the client and the upstream see must be what the proxy mode gives:
the identity reaches the upstream and no credential does; refusals keep
their status and challenge; ambiguous paths never pass; a revocation on Redis
holds through nginx within 100 ms.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests import front_proxies
from tests.conftest import free_port
from tests.gateway_harness import Gateway, RecordingUpstream
from tests.processes import PEPPER, StoreAdmin

FRONTS = ["nginx", "caddy"]
# The decision endpoint on its own listener, as deploy/forward-auth has it.
EXTRA = "trusted_proxies: [127.0.0.1/32]\nforward_auth: {listen: 127.0.0.1:0}\n"


def routes(upstream: str) -> str:
    return (
        "  - name: api\n"
        "    prefix: /api/\n"
        f"    upstream: {upstream}\n"
        "    methods: {GET: api:read, HEAD: api:read, '*': api:write}\n"
        "  - name: files\n"
        "    prefix: /dav/\n"
        f"    upstream: {upstream}\n"
        "    credentials: [basic, bearer]\n"
        "    realm: files\n"
        "    methods: {GET: files:read, PROPFIND: files:read, '*': files:write}\n"
        "  - name: public\n"
        "    prefix: /public/\n"
        f"    upstream: {upstream}\n"
        "    auth: none\n"
    )


def basic(login: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()


@pytest.fixture
async def gateway(make_gateway, upstream: RecordingUpstream, sqlite_url) -> Gateway:
    gateway: Gateway = await make_gateway(sqlite_url, routes(upstream.url), extra=EXTRA)
    return gateway


@pytest.fixture(params=FRONTS)
async def front(
    request: pytest.FixtureRequest,
    gateway: Gateway,
    upstream: RecordingUpstream,
    tmp_path: Path,
) -> AsyncIterator[str]:
    start = getattr(front_proxies, request.param)
    async with start(
        tmp_path / request.param, gateway.decisions_url, upstream.url
    ) as url:
        yield url


async def get(
    client: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str] | None = None,
    method: str = "GET",
) -> tuple[int, aiohttp.typedefs.LooseHeaders, bytes]:
    async with client.request(
        method, url, headers=headers or {}, allow_redirects=False
    ) as response:
        return response.status, response.headers, await response.read()


async def test_allowed_with_the_identity_and_no_credential_upstream(
    gateway, upstream, front, client
):
    token = await gateway.token("alice", scopes=["api:read"])
    spoofed = {
        "X-Patgate-User": "root",
        "X_Patgate_User": "root",
        "X-Patgate-Scopes": "*",
    }
    status, _, _ = await get(
        client,
        front + "/api/hello?x=1",
        {"Authorization": f"Bearer {token}", **spoofed},
    )
    assert status == 200
    seen = upstream.last
    assert seen.raw_path == "/api/hello?x=1"
    assert seen.headers["X-Patgate-User"] == "alice"
    assert seen.headers["X-Patgate-Token-Id"] == token[4:12]
    assert seen.headers.getall("X-Patgate-Scopes") == ["api:read"]
    assert "Authorization" not in seen.headers
    assert "X-API-Key" not in seen.headers
    assert not [name for name in seen.headers if "_" in name or "." in name]


async def test_missing_bad_and_insufficient_tokens_are_refused(
    gateway, upstream, front, client
):
    token = await gateway.token("alice", scopes=["api:read"])
    cases = [
        ({}, "GET", 401, 'Basic realm="api"'),
        ({"Authorization": "Bearer pgt_nonsense"}, "GET", 401, 'Basic realm="api"'),
        ({"Authorization": f"Bearer {token}x"}, "GET", 401, 'Basic realm="api"'),
        (
            {"Authorization": f"Bearer {token}"},
            "PUT",
            403,
            'Bearer realm="api", error="insufficient_scope", scope="api:write"',
        ),
    ]
    for headers, method, expected, challenge in cases:
        status, response_headers, _ = await get(
            client, front + "/api/x", headers, method
        )
        assert status == expected, (headers, method)
        # nginx passes the first challenge of several; Caddy every one.
        assert response_headers["WWW-Authenticate"].startswith(challenge)
    assert upstream.requests == []


async def test_the_basic_challenge_and_basic_credentials(
    gateway, upstream, front, client
):
    status, headers, _ = await get(client, front + "/dav/", method="PROPFIND")
    assert status == 401
    assert headers["WWW-Authenticate"].startswith('Basic realm="files"')
    token = await gateway.token("alice", scopes=["files:read"])
    status, _, _ = await get(
        client, front + "/dav/", {"Authorization": basic("alice", token)}, "PROPFIND"
    )
    assert status == 200
    assert upstream.last.headers["X-Patgate-User"] == "alice"
    assert "Authorization" not in upstream.last.headers


async def test_auth_none_routes_pass_without_identity(gateway, upstream, front, client):
    status, _, _ = await get(client, front + "/public/x", {"X-Patgate-User": "root"})
    assert status == 200
    assert not upstream.last.headers.get("X-Patgate-User")


@pytest.mark.parametrize(
    "path",
    [
        "/public/a%2fb",
        "/public/a%2Fb",
        "/public/%2e%2e/api/x",
        "/public/%2E%2E%2Fapi/x",
        "/public/%252e%252e/api/x",
        "/public/a%00b",
        "/public/a%5cb",
    ],
)
async def test_encoded_dots_and_slashes_never_pass(
    gateway, upstream, front, client, path
):
    await gateway.token("alice", scopes=["api:read"])
    status, _, _ = await get(client, front + path)
    assert status in (400, 401, 404), path
    assert upstream.requests == []


async def test_a_query_credential_never_reaches_the_upstream_through_nginx(
    gateway, upstream, tmp_path, client
):
    token = await gateway.token("alice", scopes=["api:read"])
    directory = tmp_path / "nginx"
    async with front_proxies.nginx(
        directory, gateway.decisions_url, upstream.url
    ) as url:
        status, _, _ = await get(client, url + f"/api/x?access_token={token}&b=2")
    assert status == 200
    assert upstream.last.raw_path == "/api/x?b=2"
    assert upstream.last.headers["X-Patgate-User"] == "alice"


@pytest.mark.timing
async def test_revocation_holds_through_nginx_within_100_ms_on_redis(
    make_gateway, upstream, redis_url, tmp_path, client
):
    gateway = await make_gateway(
        redis_url,
        routes(upstream.url),
        extra=EXTRA + "cache: {ttl: 60s, max_stale: 120s}\n",
        env={"PATGATE_PEPPER": PEPPER},
    )
    admin = StoreAdmin(redis_url)
    try:
        await admin.user("alice", ["api:read"])
        token_id, token = await admin.token("alice", scopes=["api:read"])
        bearer = {"Authorization": f"Bearer {token}"}
        async with front_proxies.nginx(
            tmp_path / "nginx", gateway.decisions_url, upstream.url
        ) as url:
            status, _, _ = await get(client, url + "/api/x", bearer)
            assert status == 200  # cached in patgate from now on
            revoked_at = time.monotonic()
            await admin.revoke(token_id)
            while True:
                status, _, _ = await get(client, url + "/api/x", bearer)
                elapsed = time.monotonic() - revoked_at
                if status == 401:
                    break
                assert status == 200
                assert elapsed < 0.1, "still allowed 100 ms after the revocation"
                await asyncio.sleep(0.005)
        assert elapsed < 0.1
    finally:
        await admin.close()


async def test_nginx_keeps_a_429_and_its_retry_after(gateway, upstream, front, client):
    token = await gateway.token("alice", scopes=["api:read"], rate_limit=1)
    bearer = {"Authorization": f"Bearer {token}"}
    status, _, _ = await get(client, front + "/api/x", bearer)
    assert status == 200
    status, headers, body = await get(client, front + "/api/x", bearer)
    assert status == 429
    assert int(headers["Retry-After"]) >= 1
    assert b"error" in body
    assert len(upstream.requests) == 1


async def test_patgate_unreachable_never_passes(upstream, tmp_path, client):
    nowhere = f"http://127.0.0.1:{free_port()}"
    for name in FRONTS:
        start = getattr(front_proxies, name)
        async with start(tmp_path / name, nowhere, upstream.url) as url:
            status, _, _ = await get(client, url + "/public/x")
            assert status >= 500, name
    assert upstream.requests == []


async def test_the_nginx_decision_cache_holds_a_revoked_token_under_two_seconds(
    make_gateway, upstream, redis_url, tmp_path, client
):
    gateway = await make_gateway(
        redis_url, routes(upstream.url), extra=EXTRA, env={"PATGATE_PEPPER": PEPPER}
    )
    admin = StoreAdmin(redis_url)
    try:
        await admin.user("alice", ["api:read"])
        token_id, token = await admin.token("alice", scopes=["api:read"])
        bearer = {"Authorization": f"Bearer {token}"}
        async with front_proxies.nginx(
            tmp_path / "nginx", gateway.decisions_url, upstream.url, cached=True
        ) as url:
            with gateway.access_log.capture() as decisions:
                for _ in range(3):
                    status, _, _ = await get(client, url + "/api/x", bearer)
                    assert status == 200
                    assert upstream.last.headers["X-Patgate-User"] == "alice"
                    assert "Authorization" not in upstream.last.headers
            # The first asked patgate; the others were answered from the cache
            # (unless a whole second passed in between).
            assert 1 <= len(decisions) < 3
            status, _, _ = await get(client, url + "/api/y", bearer)
            assert status == 200  # another key: asked again
            revoked_at = time.monotonic()
            await admin.revoke(token_id)
            while True:
                status, _, _ = await get(client, url + "/api/x", bearer)
                elapsed = time.monotonic() - revoked_at
                if status == 401:
                    break
                assert status == 200
                # nginx counts validity in whole seconds: a "1s" entry lives
                # to the end of the next second, so under 2 s, plus patgate's
                # own 100 ms for the first ask after it.
                assert elapsed < 2.1, "a cached decision outlived 2 s + 100 ms"
                await asyncio.sleep(0.02)
    finally:
        await admin.close()
