"""A WebDAV Destination or If URL naming another server is never rewritten into ours.

Issue 11, finding 14: a MOVE whose ``Destination`` named a different host
was rewritten to the upstream's origin and executed, so the upstream moved
the file as if the client had named this gateway. RFC 4918, 9.9.4: a
destination on another server is a 502. The class: any absolute URL in
``Destination`` or in an ``If`` tagged list whose scheme, host, port or
userinfo is not how the client reached this gateway (its Host, or a
trusted proxy's X-Forwarded-Host/-Proto). Stopped in
``client.ClientOrigin.names_other_server`` (in ``gate.Gate.check``); paths
and lock tokens name no server.
"""

from __future__ import annotations

import pytest

from tests.gateway_harness import Gateway, RecordingUpstream
from tests.security.conftest import (
    NO_THROTTLE,
    ROUTES,
    StartGateway,
    bearer,
    request,
    send_raw,
)

HOST = "gateway.test"


async def move(
    gateway: Gateway, destination: str, *extra: str, host: str = HOST
) -> int:
    token = await gateway.token("alice")
    (response,) = await send_raw(
        gateway,
        request(
            "/api/dav/a.txt",
            bearer(token),
            f"Destination: {destination}",
            *extra,
            method="MOVE",
            host=host,
        ),
    )
    return response.status


@pytest.mark.parametrize(
    "destination",
    [
        "http://evil.example/api/dav/b.txt",
        "http://gateway.test.evil.example/api/dav/b.txt",
        "http://gateway.test:8080/api/dav/b.txt",
        "http://gateway.test:443/api/dav/b.txt",
        "https://gateway.test/api/dav/b.txt",
        "ftp://gateway.test/api/dav/b.txt",
        "http://alice@gateway.test/api/dav/b.txt",
        "http://gateway.test@evil.example/api/dav/b.txt",
        "//evil.example/api/dav/b.txt",
        "http://127.0.0.1/api/dav/b.txt",
        "http://[::1]/api/dav/b.txt",
    ],
)
async def test_destination_on_another_server_is_a_502(
    gateway: Gateway, upstream: RecordingUpstream, destination: str
) -> None:
    with gateway.access_log.capture() as lines:
        assert await move(gateway, destination) == 502
    assert upstream.requests == []
    assert [line["reason"] for line in lines] == ["foreign_destination"]


@pytest.mark.parametrize(
    "destination",
    [
        "http://gateway.test/api/dav/b.txt",
        "http://GATEWAY.Test./api/dav/b.txt",
        "http://gateway.test:80/api/dav/b.txt",
        "//gateway.test/api/dav/b.txt",
        "/api/dav/b.txt",
    ],
)
async def test_destination_naming_this_gateway_is_rewritten_to_the_upstream(
    gateway: Gateway, upstream: RecordingUpstream, destination: str
) -> None:
    assert await move(gateway, destination) == 200
    assert upstream.last.headers["Destination"] == upstream.url + "/api/dav/b.txt"


async def test_destination_follows_the_host_the_client_used(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    assert (
        await move(gateway, "http://[::1]:8443/api/dav/b.txt", host="[::1]:8443") == 200
    )
    assert await move(gateway, "http://gateway.test/api/dav/b.txt", host="other") == 502
    assert len(upstream.requests) == 1


@pytest.mark.parametrize(
    "if_header",
    [
        "<http://evil.example/api/dav/a.txt> (<opaquelocktoken:1>)",
        "<http://gateway.test/api/dav/a.txt> (<urn:uuid:1>)"
        ' <https://gateway.test/api/dav/c.txt> (["e"])',
        '<http://gateway.test:9/api/dav/a.txt> (["e"])',
    ],
)
async def test_if_url_on_another_server_is_a_502(
    gateway: Gateway, upstream: RecordingUpstream, if_header: str
) -> None:
    token = await gateway.token("alice")
    (response,) = await send_raw(
        gateway,
        request("/api/dav/a.txt", bearer(token), f"If: {if_header}", method="PUT"),
    )
    assert response.status == 502
    assert upstream.requests == []


async def test_if_urls_and_lock_tokens_of_this_gateway_pass(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    token = await gateway.token("alice")
    if_header = '<http://gateway.test/api/dav/a.txt> (<opaquelocktoken:1> ["e"])'
    (response,) = await send_raw(
        gateway,
        request("/api/dav/a.txt", bearer(token), f"If: {if_header}", method="PUT"),
    )
    assert response.status == 200
    assert upstream.last.headers["If"] == (
        f'<{upstream.url}/api/dav/a.txt> (<opaquelocktoken:1> ["e"])'
    )


@pytest.fixture
async def behind_proxy(
    make_gateway: StartGateway, upstream: RecordingUpstream, sqlite_url: str
) -> Gateway:
    return await make_gateway(
        sqlite_url,
        ROUTES.format(upstream=upstream.url),
        extra=f"{NO_THROTTLE}\ntrusted_proxies: [127.0.0.0/8]",
    )


async def test_trusted_proxy_names_the_host_and_scheme_the_client_used(
    behind_proxy: Gateway, upstream: RecordingUpstream
) -> None:
    front = ("X-Forwarded-Host: files.example.com", "X-Forwarded-Proto: https")
    ok = "https://files.example.com/api/dav/b.txt"
    assert await move(behind_proxy, ok, *front) == 200
    assert (
        await move(behind_proxy, "http://files.example.com/api/dav/b.txt", *front)
        == 502
    )
    assert len(upstream.requests) == 1


async def test_untrusted_forwarded_host_names_nothing(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    front = ("X-Forwarded-Host: files.example.com", "X-Forwarded-Proto: https")
    assert await move(gateway, "https://files.example.com/api/dav/b.txt", *front) == 502
    assert upstream.requests == []
