"""Host header tricks: the route chosen by Host must be the host the upstream serves.

SPEC §3 "Routes": "matched by path prefix (longest wins) and optional host".
The upstream never sees the client's Host (it gets its own) but does see
``X-Forwarded-Host``, which name-based upstreams serve by. Stopped in
``patgate.routing.Router`` / ``_host_name`` (case, trailing dot, port),
in ``client.valid_host`` (anything but ``host[:port]`` is a 400, see
``test_host_list.py``), in ``web.gateway.proxy`` (the request
target must be a path: absolute-form, authority-form and ``*`` are refused)
and in ``web.gateway.headers`` (X-Forwarded-Host from an untrusted client replaced).
"""

from __future__ import annotations

import pytest

from tests.gateway_harness import Gateway, RecordingUpstream
from tests.security.conftest import (
    StartGateway,
    exchange,
    parse_responses,
    request,
    send_raw,
)


@pytest.mark.parametrize(
    "host",
    [
        "public.example.com",
        "PUBLIC.Example.COM",
        "public.example.com.",
        "public.example.com:8443",
        "public.example.com:",
    ],
)
async def test_host_bound_route_is_chosen_by_host_name_alone(
    gateway: Gateway, upstream: RecordingUpstream, host: str
) -> None:
    (response,) = await send_raw(gateway, request("/hosted/x", host=host))
    assert response.status == 200
    assert upstream.last.raw_path == "/hosted/x"
    assert "X-Patgate-User" not in upstream.last.headers
    assert upstream.last.headers["X-Forwarded-Host"] == host


@pytest.mark.parametrize(
    "host",
    [
        "evil.example.com",
        "public.example.com.evil.com",
        "evilpublic.example.com",
        "public-example.com",
        "public.example.co",
        "[::1]",
        "127.0.0.1",
    ],
)
async def test_other_host_falls_to_the_token_route(
    gateway: Gateway, upstream: RecordingUpstream, host: str
) -> None:
    (response,) = await send_raw(gateway, request("/hosted/x", host=host))
    assert response.status == 401
    assert upstream.requests == []


async def test_missing_host_falls_to_the_token_route(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    (response,) = parse_responses(
        await exchange(gateway, b"GET /hosted/x HTTP/1.0\r\n\r\n")
    )
    assert response.status == 401
    assert upstream.requests == []


async def test_spoofed_forwarded_host_does_not_choose_the_route(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    (response,) = await send_raw(
        gateway,
        request(
            "/hosted/x", "X-Forwarded-Host: public.example.com", host="evil.example"
        ),
    )
    assert response.status == 401
    assert upstream.requests == []


@pytest.mark.parametrize(
    "line",
    [
        b"GET http://public.example.com/hosted/x HTTP/1.1",
        b"GET http://gateway.test/public/x HTTP/1.1",
        b"GET https://public.example.com:443/hosted/x HTTP/1.1",
        b"CONNECT public.example.com:443 HTTP/1.1",
        b"OPTIONS * HTTP/1.1",
        b"GET public.example.com/hosted/x HTTP/1.1",
    ],
)
async def test_request_target_that_is_not_a_path_is_refused(
    gateway: Gateway, upstream: RecordingUpstream, line: bytes
) -> None:
    # Absolute-form would let the target name a host other than Host; the
    # gateway is not a forward proxy and refuses every form but a path.
    raw = line + b"\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
    # After CONNECT the pure-Python parser keeps the connection open.
    responses = parse_responses(await exchange(gateway, raw, idle=2.0))
    assert [r.status for r in responses] in ([400], [404])
    assert upstream.requests == []


async def test_path_that_looks_like_an_authority_stays_a_path(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    # "//host/path" is a network-path reference to URL parsers; here it is
    # a path with an empty first segment and is normalised as one.
    (response,) = await send_raw(gateway, request("//public.example.com/hosted/x"))
    assert response.status == 404
    assert upstream.requests == []


# The other way round: a host-bound *token* route and a host-less public
# route on the same prefix and upstream, which serves by X-Forwarded-Host.
SECURE_ROUTES = """\
  - name: secure
    prefix: /files/
    host: secure.example.com
    upstream: {upstream}
  - name: open
    prefix: /files/
    upstream: {upstream}
    auth: none
"""


@pytest.fixture
async def secure(
    make_gateway: StartGateway, upstream: RecordingUpstream, sqlite_url: str
) -> Gateway:
    return await make_gateway(sqlite_url, SECURE_ROUTES.format(upstream=upstream.url))


@pytest.mark.parametrize(
    "host",
    [
        "secure.example.com",
        "SECURE.EXAMPLE.COM",
        "secure.example.com.",
        "secure.example.com:443",
        "secure.example.com:",  # an empty port is valid (RFC 3986)
        " secure.example.com\t",
        # ":443:443", ":https", "evil@..." are refused with 400 before
        # routing now: test_host_list.py.
    ],
)
async def test_host_spelling_cannot_dodge_a_host_bound_token_route(
    secure: Gateway, upstream: RecordingUpstream, host: str
) -> None:
    # Each of these is secure.example.com to some upstream's Host parser;
    # landing on the public route would serve that host without a token.
    (response,) = await send_raw(secure, request("/files/x", host=host))
    assert response.status == 401
    assert upstream.requests == []
    token = await secure.token("alice")
    (response,) = await send_raw(
        secure, request("/files/x", f"Authorization: Bearer {token}", host=host)
    )
    assert response.status == 200
    assert upstream.last.headers["X-Patgate-User"] == "alice"


async def test_other_host_reaches_the_public_route_without_identity(
    secure: Gateway, upstream: RecordingUpstream
) -> None:
    (response,) = await send_raw(
        secure,
        request("/files/x", "X-Patgate-User: alice", host="www.example.com"),
    )
    assert response.status == 200
    assert "X-Patgate-User" not in upstream.last.headers
