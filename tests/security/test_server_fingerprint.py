"""No answer names the Python or aiohttp version (``Server: patgate``).

Issue 11, finding 15: every answer carried aiohttp's default
``Server: Python/3.11 aiohttp/3.x``, the gateway's own and, passed through,
the upstream's: a fingerprint for looking up known bugs. Stopped in
``web.protocol``: ``name_the_server`` (aiohttp's default for every answer
that names no server; ``web.gateway.headers.copy_response_headers`` drops an
upstream's own) and ``GatewayRequestHandler`` (the answers aiohttp makes
before the app runs).
"""

from __future__ import annotations

import pytest

from tests.gateway_harness import Gateway, RecordingUpstream
from tests.security.conftest import bearer, exchange, parse_responses, request


@pytest.mark.parametrize(
    "raw",
    [
        request("/public/x"),  # proxied; the upstream is aiohttp too
        request("/public/x", method="HEAD"),
        request("/api/x"),  # 401
        request("/nowhere"),  # 404
        request("/api/a%2fb"),  # 400 from the proxy
        request("/public/x", "Expect: other"),  # 417
        request("/_patgate/healthz"),
        request("/_patgate/metrics"),
        request("/_patgate/api/v1/whoami"),  # 401 from the management API
        request("/_patgate/"),
        b"get / HTTP/1.1\r\n\r\n",  # aiohttp's own parse error (C parser)
        b"GET / HTTP/1.1\r\nX: \x01\r\n\r\n",
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n",
    ],
)
async def test_every_answer_says_server_patgate(
    gateway: Gateway, upstream: RecordingUpstream, raw: bytes
) -> None:
    data = await exchange(gateway, raw, idle=2.0)
    (response,) = parse_responses(data)
    assert response.headers.getall("Server") == ["patgate"]
    assert b"Python" not in data
    assert b"aiohttp" not in data


async def test_token_route_answer_says_server_patgate(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    token = await gateway.token("alice")
    (response,) = parse_responses(
        await exchange(gateway, request("/api/download?size=300000", bearer(token)))
    )
    assert response.status == 200  # streamed, headers first
    assert response.headers.getall("Server") == ["patgate"]
