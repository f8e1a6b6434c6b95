"""Guessing tokens and escalating with one: throttling, and no minting by token.

SPEC §3 "Limits" (failed-auth throttling per client IP) and §4 "REST API"
("every change needs the user's password — a token alone cannot mint
tokens"). Stopped in ``patgate.throttle.FailureThrottle`` via
``patgate.gate.Gate.authorize`` (keyed by the client address, which a spoofed
X-Forwarded-For cannot change) and in ``web.manage`` (Basic login + password
only; a token is never a management credential).
"""

from __future__ import annotations

import base64

from patgate.tokens import format_token
from tests.gateway_harness import ADMIN, Gateway, RecordingUpstream
from tests.security.conftest import ROUTES, StartGateway, bearer, request, send_raw

LIMIT = 5


async def test_failed_auth_is_throttled_per_client_address(
    make_gateway: StartGateway, upstream: RecordingUpstream, sqlite_url: str
) -> None:
    gateway = await make_gateway(
        sqlite_url,
        ROUTES.format(upstream=upstream.url),
        extra=f"limits: {{failed_auth_per_minute: {LIMIT}}}",
    )
    good = await gateway.token("alice")
    for guess in range(LIMIT):
        value = format_token("pgt", f"Guess{guess:03d}", "G" * 32)
        (response,) = await send_raw(gateway, request("/api/x", bearer(value)))
        assert response.status == 401
    for spoof in ("", "X-Forwarded-For: 198.51.100.1", "X-Real-IP: 198.51.100.2"):
        headers = [bearer(good), *([spoof] if spoof else [])]
        (response,) = await send_raw(gateway, request("/api/x", *headers))
        assert response.status == 429
        assert int(response.headers["Retry-After"]) >= 1
    assert upstream.requests == []
    # Public routes need no authentication and are not throttled.
    (response,) = await send_raw(gateway, request("/public/x"))
    assert response.status == 200


async def test_failed_auth_is_throttled_across_gateways_sharing_a_store(
    make_gateway: StartGateway, upstream: RecordingUpstream, store_url: str
) -> None:
    """Guesses spread over gateways (replicas, workers) share one budget."""
    routes = ROUTES.format(upstream=upstream.url)
    extra = f"limits: {{failed_auth_per_minute: {LIMIT}}}"
    gateways = [await make_gateway(store_url, routes, extra=extra) for _ in range(3)]
    good = await gateways[0].token("alice")
    statuses = []
    for guess in range(LIMIT + 6):
        value = format_token("pgt", f"Guess{guess:03d}", "G" * 32)
        gateway = gateways[guess % 3]
        (response,) = await send_raw(gateway, request("/api/x", bearer(value)))
        statuses.append(response.status)
    # Each gateway alone saw at most 4 failures, under the limit of 5. The
    # shared count runs out after five, wherever they were spent; a gateway
    # learns it on its next failure (one store write per failure, none per
    # success), so at most one guess per gateway gets past the budget.
    assert statuses[:LIMIT] == [401] * LIMIT
    assert statuses.count(401) <= LIMIT + len(gateways)
    assert statuses[-3:] == [429] * 3
    for gateway in gateways:  # even a good token, from that address
        (response,) = await send_raw(gateway, request("/api/x", bearer(good)))
        assert response.status == 429
        assert int(response.headers["Retry-After"]) >= 1
    assert upstream.requests == []


async def test_token_alone_cannot_use_the_management_api(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    await gateway.add_user("alice", password="correct horse battery staple")
    token = await gateway.token("alice")
    as_basic = base64.b64encode(f"alice:{token}".encode()).decode()
    body = b'{"name": "minted"}'
    for auth in (bearer(token), f"Authorization: Basic {as_basic}"):
        for target, method in [
            ("/_patgate/api/v1/tokens", "POST"),
            ("/_patgate/api/v1/tokens", "GET"),
            ("/_patgate/api/v1/whoami", "GET"),
        ]:
            (response,) = await send_raw(
                gateway,
                request(
                    target,
                    auth,
                    "Content-Type: application/json",
                    method=method,
                    body=body if method == "POST" else b"",
                ),
            )
            assert response.status == 401, (auth[:30], target, method)
            assert token.encode() not in response.body
    assert upstream.requests == []
    assert len(await gateway.service.list_tokens(ADMIN, "alice")) == 1


async def test_path_tricks_do_not_reach_the_management_api_from_a_route(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    # The API is not a route: a path that normalises into /_patgate/ from the
    # catch-all is no route at all, never the API answering a route's token.
    token = await gateway.token("alice")
    for target in (
        "/public/%2e%2e/_patgate/api/v1/tokens",
        "/api/../_patgate/api/v1/whoami",
        "//_patgate/api/v1/whoami",
    ):
        (response,) = await send_raw(gateway, request(target, bearer(token)))
        assert response.status in (401, 404), target
    assert upstream.requests == []
