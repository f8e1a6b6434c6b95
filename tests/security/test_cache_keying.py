"""Caches keyed too loosely: a cached grant must not decide another request.

SPEC §8 "Caches keyed too loosely": the cache key is the token hash; the
decision is taken per request from the cached record, the route and the
method, never cached by path. Stopped in ``patgate.cache.GrantCache`` (keyed
by ``sha256(pepper || value)``) and ``patgate.gate.Gate.authorize_now`` (calls
``policy.decide`` on every request, cached or not).

Revocation reaching cached grants and open streams within the SPEC's bound
is covered with real processes in ``tests/integration/test_revocation.py``.
"""

from __future__ import annotations

import base64

from patgate.tokens import format_token
from tests.gateway_harness import Gateway, RecordingUpstream
from tests.security.conftest import bearer, request, send_raw


async def status(
    gateway: Gateway, target: str, *headers: str, method: str = "GET"
) -> int:
    (response,) = await send_raw(gateway, request(target, *headers, method=method))
    return response.status


async def test_cached_grant_is_checked_again_for_each_path_and_method(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    token = await gateway.token("alice", scopes=["node:/api/alpha:r"])
    auth = bearer(token)
    assert await status(gateway, "/api/alpha/x", auth) == 200  # now cached
    assert await status(gateway, "/api/beta/x", auth) == 403
    assert await status(gateway, "/api/alpha/x", auth, method="PUT") == 403
    assert await status(gateway, "/admin/x", auth) == 403
    assert await status(gateway, "/api/alpha/x", auth) == 200
    assert [seen.raw_path for seen in upstream.requests] == [
        "/api/alpha/x",
        "/api/alpha/x",
    ]


async def test_cached_grant_is_checked_again_for_each_route_scope(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    token = await gateway.token("alice", scopes=["api:read"])
    auth = bearer(token)
    assert await status(gateway, "/api/x", auth) == 200
    assert await status(gateway, "/api/x", auth, method="DELETE") == 403
    assert await status(gateway, "/admin/x", auth) == 403
    assert [seen.method for seen in upstream.requests] == ["GET"]


async def test_cached_token_id_does_not_vouch_for_another_secret(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    token = await gateway.token("alice")
    token_id = token[4:12]
    assert await status(gateway, "/api/x", bearer(token)) == 200  # cached
    impostor = format_token("pgt", token_id, "I" * 32)
    assert await status(gateway, "/api/x", bearer(impostor)) == 401
    assert await status(gateway, "/api/x", bearer(token)) == 200
    assert len(upstream.requests) == 2


async def test_cached_basic_grant_still_checks_the_login(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    token = await gateway.token("alice")

    def basic(login: str) -> str:
        pair = base64.b64encode(f"{login}:{token}".encode()).decode()
        return f"Authorization: Basic {pair}"

    assert await status(gateway, "/api/x", basic("alice")) == 200  # cached
    assert await status(gateway, "/api/x", basic("mallory")) == 401
    assert len(upstream.requests) == 1
