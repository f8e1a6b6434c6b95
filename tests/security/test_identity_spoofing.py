"""Spoofed identity: the upstream trusts X-Patgate-*, so only the gateway sets it.

SPEC §3 "Forwarding" and §8 "Connection-named headers", "Spoofed identity
with other spellings". Stopped in ``patgate.web.headers.upstream_headers``
(hop-by-hop and Connection-named headers first, identity headers in every
``-``/``_``/case spelling, X-Forwarded-* from untrusted peers) and in
``web.gateway.proxy`` which adds the gateway's identity headers last.
"""

from __future__ import annotations

import pytest

from patgate.web.gateway.headers import header_key
from tests.gateway_harness import Gateway, RecordingUpstream
from tests.security.conftest import (
    NO_THROTTLE,
    ROUTES,
    StartGateway,
    bearer,
    request,
    send_raw,
)

IDENTITY = ("x-patgate-user", "x-patgate-token-id", "x-patgate-scopes")
SPOOFED_SPELLINGS = [
    "X-Patgate-User",
    "x-patgate-user",
    "X_Patgate_User",
    "x_PATGATE-user",
    "X-PATGATE-SCOPES",
    "X_Patgate_Scopes",
    "X-Patgate-Token-Id",
    "x_patgate_token_id",
]


def identity_headers(upstream: RecordingUpstream) -> list[tuple[str, str]]:
    """Every header the upstream got that a WSGI/CGI app reads as an identity."""
    return [
        (name, value)
        for name, value in upstream.last.headers.items()
        if header_key(name) in IDENTITY
    ]


async def token_id_of(gateway: Gateway, token: str) -> str:
    return token.split("_", 1)[1][:8]


@pytest.mark.parametrize("spelling", SPOOFED_SPELLINGS)
async def test_spoofed_identity_header_is_replaced_on_token_route(
    gateway: Gateway, upstream: RecordingUpstream, spelling: str
) -> None:
    token = await gateway.token("alice", scopes=["api:read"])
    (response,) = await send_raw(
        gateway, request("/api/x", bearer(token), f"{spelling}: root")
    )
    assert response.status == 200
    assert sorted(identity_headers(upstream)) == sorted(
        [
            ("X-Patgate-User", "alice"),
            ("X-Patgate-Token-Id", await token_id_of(gateway, token)),
            ("X-Patgate-Scopes", "api:read"),
        ]
    )


@pytest.mark.parametrize("spelling", SPOOFED_SPELLINGS)
async def test_spoofed_identity_header_never_reaches_public_route(
    gateway: Gateway, upstream: RecordingUpstream, spelling: str
) -> None:
    # A public route has no identity to add; the spoof must still go.
    (response,) = await send_raw(
        gateway, request("/public/x", f"{spelling}: root", f"{spelling}: admin")
    )
    assert response.status == 200
    assert identity_headers(upstream) == []


async def test_every_spoofed_spelling_at_once_is_stripped(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    token = await gateway.token("alice")
    spoofs = [f"{name}: root" for name in SPOOFED_SPELLINGS]
    (response,) = await send_raw(gateway, request("/api/x", bearer(token), *spoofs))
    assert response.status == 200
    values = dict(
        (header_key(name), value) for name, value in identity_headers(upstream)
    )
    assert len(identity_headers(upstream)) == 3
    assert values["x-patgate-user"] == "alice"
    assert "root" not in values.values()


@pytest.mark.parametrize(
    "connection",
    [
        "Connection: close, X-Patgate-User, X-Patgate-Token-Id, X-Patgate-Scopes",
        "Connection: close, x_patgate_user",
        "Connection: close, X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host",
    ],
)
async def test_connection_header_cannot_remove_gateway_set_headers(
    gateway: Gateway, upstream: RecordingUpstream, connection: str
) -> None:
    token = await gateway.token("alice")
    raw = request("/api/x", bearer(token), connection, close=False)
    (response,) = await send_raw(gateway, raw)
    assert response.status == 200
    seen = upstream.last.headers
    assert seen["X-Patgate-User"] == "alice"
    assert seen["X-Patgate-Token-Id"] == await token_id_of(gateway, token)
    assert seen["X-Patgate-Scopes"] == "*"
    assert seen["X-Forwarded-For"] == "127.0.0.1"
    assert seen["X-Forwarded-Proto"] == "http"
    assert seen["X-Forwarded-Host"] == "gateway.test"


async def test_connection_named_and_hop_by_hop_headers_are_not_forwarded(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    (response,) = await send_raw(
        gateway,
        request(
            "/public/x",
            "Connection: close, X-Hop-Secret, Keep-Alive",
            "X-Hop-Secret: 1",
            "Keep-Alive: timeout=5",
            "Proxy-Authorization: Basic YWRtaW46YWRtaW4=",
            "Proxy-Connection: keep-alive",
            "TE: trailers",
            "X-End-To-End: kept",
            close=False,
        ),
    )
    assert response.status == 200
    seen = upstream.last.headers
    for name in (
        "X-Hop-Secret",
        "Keep-Alive",
        "Proxy-Authorization",
        "Proxy-Connection",
        "TE",
    ):
        assert name not in seen, name
    assert seen["X-End-To-End"] == "kept"


async def test_h2c_upgrade_is_not_smuggled_to_the_upstream(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    """h2c smuggling: an upgraded tunnel would bypass every later check.

    The C parser keeps the connection "upgraded" and ignores what follows;
    the Python parser reads the next request and checks it. Neither may
    forward an upgrade, nor anything unchecked behind it.
    """
    raw = request(
        "/public/x",
        "Connection: Upgrade, HTTP2-Settings",
        "Upgrade: h2c",
        "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
        close=False,
    ) + request("/api/smuggled", close=False)
    first, *rest = await send_raw(gateway, raw, idle=1.0)
    assert first.status == 200
    assert [response.status for response in rest] in ([], [401])
    assert [seen.raw_path for seen in upstream.requests] == ["/public/x"]
    seen = upstream.last.headers
    assert "Upgrade" not in seen
    assert "HTTP2-Settings" not in seen


SPOOFED_FORWARDING = (
    "X-Forwarded-For: 203.0.113.9",
    "X-Forwarded-Host: evil.example",
    "X-Forwarded-Proto: https",
    "Forwarded: for=203.0.113.9;host=evil.example;proto=https",
    "X_Forwarded_For: 203.0.113.10",
)


async def test_spoofed_forwarding_headers_from_untrusted_client_are_replaced(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    (response,) = await send_raw(gateway, request("/public/x", *SPOOFED_FORWARDING))
    assert response.status == 200
    seen = upstream.last.headers
    assert seen.getall("X-Forwarded-For") == ["127.0.0.1"]
    assert seen.getall("X-Forwarded-Host") == ["gateway.test"]
    assert seen.getall("X-Forwarded-Proto") == ["http"]
    assert "Forwarded" not in seen
    assert "X_Forwarded_For" not in seen


async def test_spoofed_forwarded_for_cannot_satisfy_token_ip_allowlist(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    token = await gateway.token("alice", allowed_cidrs=["203.0.113.0/24"])
    (response,) = await send_raw(
        gateway, request("/api/x", bearer(token), "X-Forwarded-For: 203.0.113.9")
    )
    assert response.status == 403
    assert upstream.requests == []


@pytest.fixture
async def behind_proxy(
    make_gateway: StartGateway, upstream: RecordingUpstream, sqlite_url: str
) -> Gateway:
    """A gateway that trusts loopback as its front proxy."""
    return await make_gateway(
        sqlite_url,
        ROUTES.format(upstream=upstream.url),
        extra=f"trusted_proxies: [127.0.0.1/32]\n{NO_THROTTLE}",
    )


async def test_trusted_proxy_forwarding_headers_are_extended(
    behind_proxy: Gateway, upstream: RecordingUpstream
) -> None:
    token = await behind_proxy.token("alice", allowed_cidrs=["203.0.113.0/24"])
    (response,) = await send_raw(
        behind_proxy,
        request(
            "/api/x",
            bearer(token),
            "X-Forwarded-For: 203.0.113.9",
            "X-Forwarded-Host: files.example.com",
            "X-Forwarded-Proto: https",
        ),
    )
    assert response.status == 200
    seen = upstream.last.headers
    assert seen.getall("X-Forwarded-For") == ["203.0.113.9, 127.0.0.1"]
    assert seen.getall("X-Forwarded-Host") == ["files.example.com"]
    assert seen.getall("X-Forwarded-Proto") == ["https"]


async def test_trusted_proxy_chain_uses_the_last_untrusted_hop(
    behind_proxy: Gateway, upstream: RecordingUpstream
) -> None:
    # The client wrote 203.0.113.9 itself; the proxy appended the real peer.
    token = await behind_proxy.token("alice", allowed_cidrs=["203.0.113.0/24"])
    (response,) = await send_raw(
        behind_proxy,
        request("/api/x", bearer(token), "X-Forwarded-For: 203.0.113.9, 198.51.100.7"),
    )
    assert response.status == 403
    assert upstream.requests == []


async def test_trusted_proxy_cannot_vouch_for_identity_headers(
    behind_proxy: Gateway, upstream: RecordingUpstream
) -> None:
    (response,) = await send_raw(
        behind_proxy,
        request("/public/x", "X-Patgate-User: root", "X_Patgate_Scopes: *"),
    )
    assert response.status == 200
    assert identity_headers(upstream) == []


async def test_injected_upstream_credential_cannot_be_spoofed_or_removed(
    make_gateway: StartGateway, upstream: RecordingUpstream, sqlite_url: str
) -> None:
    routes = (
        "  - name: api\n"
        "    prefix: /api/\n"
        f"    upstream: {upstream.url}\n"
        "    upstream_headers: {X-Upstream-Key: '${UPSTREAM_KEY}'}\n"
    )
    gateway = await make_gateway(
        sqlite_url,
        routes,
        env={"PATGATE_PEPPER": "test-pepper", "UPSTREAM_KEY": "real-key"},
    )
    token = await gateway.token("alice")
    (response,) = await send_raw(
        gateway,
        request(
            "/api/x",
            bearer(token),
            "X-Upstream-Key: forged",
            "x_upstream_key: forged",
            "Connection: close, X-Upstream-Key",
            close=False,
        ),
    )
    assert response.status == 200
    injected = [
        (name, value)
        for name, value in upstream.last.headers.items()
        if header_key(name) == "x-upstream-key"
    ]
    assert injected == [("X-Upstream-Key", "real-key")]
