"""The decision endpoint asked directly: the proxy mode's decision, as a proxy asks.

Each case is asked twice of one gateway: through the proxy mode, and of the
decision endpoint the way nginx (``X-Original-*``), Traefik/Caddy
(``X-Forwarded-*``) and Envoy (``path_prefix``) ask. A refusal must be the
same answer byte for byte; an allowed request a 200 with the identity.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping

import aiohttp
import pytest

from patgate.web.keys import GATE
from tests.gateway_harness import Gateway, RecordingUpstream

AUTH = "/_patgate/auth"
TRUSTED = "trusted_proxies: [127.0.0.1/32]\nforward_auth: {}\n"
# The endpoint on a listener of its own: the same answers, from its own server.
OWN_LISTENER = "trusted_proxies: [127.0.0.1/32]\nforward_auth: {listen: 127.0.0.1:0}\n"


def routes(upstream: RecordingUpstream) -> str:
    return (
        "  - name: api\n"
        "    prefix: /api/\n"
        f"    upstream: {upstream.url}\n"
        "    methods: {GET: api:read, HEAD: api:read, '*': api:write}\n"
        "  - name: files\n"
        "    prefix: /dav/\n"
        f"    upstream: {upstream.url}\n"
        "    host: files.example\n"
        "    credentials: [basic, bearer]\n"
        "    methods: {GET: files:read, PROPFIND: files:read, '*': files:write}\n"
        "  - name: public\n"
        "    prefix: /public/\n"
        f"    upstream: {upstream.url}\n"
        "    auth: none\n"
    )


@pytest.fixture(params=["main listener", "own listener"])
async def gateway(request, make_gateway, upstream, store_url) -> Gateway:
    extra = TRUSTED if request.param == "main listener" else OWN_LISTENER
    return await make_gateway(store_url, routes(upstream), extra=extra)


def basic(login: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()


def nginx(method: str, uri: str, host: str = "gw.example") -> dict[str, str]:
    return {
        "X-Original-Method": method,
        "X-Original-URI": uri,
        "X-Forwarded-Host": host,
        "X-Forwarded-Proto": "https",
    }


def traefik(method: str, uri: str, host: str = "gw.example") -> dict[str, str]:
    return {
        "X-Forwarded-Method": method,
        "X-Forwarded-Uri": uri,
        "X-Forwarded-Host": host,
        "X-Forwarded-Proto": "https",
    }


async def ask(
    client: aiohttp.ClientSession,
    gateway: Gateway,
    headers: Mapping[str, str],
    *,
    method: str = "GET",
    path: str = AUTH,
) -> tuple[int, dict[str, str], bytes, list[str]]:
    async with client.request(
        method, gateway.decisions_url + path, headers=headers, allow_redirects=False
    ) as response:
        body = await response.read()
        challenges = response.headers.getall("WWW-Authenticate", [])
        return response.status, dict(response.headers), body, challenges


async def proxied(
    client: aiohttp.ClientSession,
    gateway: Gateway,
    method: str,
    uri: str,
    headers: Mapping[str, str],
    host: str = "gw.example",
) -> tuple[int, bytes, list[str]]:
    async with client.request(
        method,
        gateway.url + uri,
        headers={**headers, "Host": host},
        allow_redirects=False,
    ) as response:
        body = await response.read()
        return response.status, body, response.headers.getall("WWW-Authenticate", [])


async def test_allowed_is_200_with_the_identity_and_no_body(gateway, client):
    token = await gateway.token("alice", scopes=["api:read"])
    bearer = {"Authorization": f"Bearer {token}"}
    for style in (nginx, traefik):
        status, headers, body, _ = await ask(
            client, gateway, {**bearer, **style("GET", "/api/x?a=1")}
        )
        assert (status, body) == (200, b"")
        assert headers["X-Patgate-User"] == "alice"
        assert headers["X-Patgate-Token-Id"] == token[4:12]
        assert headers["X-Patgate-Scopes"] == "api:read"
        assert headers["X-Patgate-Uri"] == "/api/x?a=1"
    # Envoy: its own method and the path after the endpoint's.
    status, headers, body, _ = await ask(
        client, gateway, {**bearer, "Host": "gw.example"}, path=AUTH + "/api/x?a=1"
    )
    assert (status, body, headers["X-Patgate-User"]) == (200, b"", "alice")


async def test_the_query_credential_is_read_from_the_original_uri_and_cut(
    gateway, client
):
    token = await gateway.token("alice", scopes=["api:read"])
    status, headers, _, _ = await ask(
        client, gateway, nginx("GET", f"/api/x?access_token={token}&b=2")
    )
    assert status == 200
    assert headers["X-Patgate-Uri"] == "/api/x?b=2"
    assert token not in str(headers)


async def test_the_access_line_is_about_the_original_request(gateway, client):
    token = await gateway.token("alice", scopes=["api:read"])
    with gateway.access_log.capture() as lines:
        await ask(client, gateway, nginx("GET", f"/api/x?access_token={token}"))
        await ask(client, gateway, nginx("DELETE", "/api/y"))
        await ask(client, gateway, {})  # no original request: the endpoint's own
    assert [(line["method"], line["path"], line["status"]) for line in lines] == [
        ("GET", "/api/x", 200),
        ("DELETE", "/api/y", 401),
        ("GET", AUTH, 400),
    ]
    assert lines[0]["token_id"] == token[4:12]
    assert token not in str(lines)


@pytest.mark.parametrize(
    ("method", "uri", "auth"),
    [
        ("GET", "/api/x", None),  # no credential: 401 with the Bearer challenge
        ("GET", "/api/x", "Bearer pgt_nonsense"),  # malformed
        ("PUT", "/api/x", "read"),  # insufficient scope: 403
        ("GET", "/dav/a", None),  # wrong host: no route, 404
        ("GET", "/nowhere", "read"),  # no route
        ("GET", "/api/a%2fb", "read"),  # encoded slash: 400
        ("GET", "/api/%2e%2e/x", "read"),  # resolved, no route there: 404
        ("GET", "/api/%252e%252e/x", "read"),  # double-encoded dots: 400
        ("GET", "/api/a%00b", "read"),  # NUL: 400
        ("GET", "/api/a;b", "read"),  # path parameter: 400
    ],
)
async def test_a_refusal_is_the_proxy_modes_answer(gateway, client, method, uri, auth):
    token = await gateway.token("alice", scopes=["api:read"])
    headers = {}
    if auth == "read":
        headers["Authorization"] = f"Bearer {token}"
    elif auth:
        headers["Authorization"] = auth
    expected = await proxied(client, gateway, method, uri, headers)
    assert expected[0] >= 400
    for style in (nginx, traefik):
        status, _, body, challenges = await ask(
            client, gateway, {**headers, **style(method, uri)}
        )
        assert (status, body, challenges) == expected, style.__name__


async def test_the_basic_challenge_of_a_webdav_route(gateway, client):
    expected = await proxied(client, gateway, "PROPFIND", "/dav/", {}, "files.example")
    assert expected[0] == 401
    assert any(value.startswith("Basic ") for value in expected[2])
    status, _, body, challenges = await ask(
        client, gateway, nginx("PROPFIND", "/dav/", "files.example")
    )
    assert (status, body, challenges) == expected
    token = await gateway.token("alice", scopes=["files:read"])
    status, headers, _, _ = await ask(
        client,
        gateway,
        {
            "Authorization": basic("alice", token),
            **nginx("PROPFIND", "/dav/", "files.example"),
        },
    )
    assert (status, headers["X-Patgate-User"]) == (200, "alice")
    status, *_ = await ask(
        client,
        gateway,
        {
            "Authorization": basic("bob", token),
            **nginx("GET", "/dav/", "files.example"),
        },
    )
    assert status == 401  # the owner check: the login must be the token's owner


async def test_auth_none_routes_are_200_without_identity(gateway, client):
    status, headers, body, _ = await ask(client, gateway, nginx("GET", "/public/x"))
    assert (status, body) == (200, b"")
    assert headers["X-Patgate-User"] == headers["X-Patgate-Scopes"] == ""
    assert headers["X-Patgate-Uri"] == "/public/x"


async def test_a_webdav_destination_needs_the_token_there_too(gateway, client):
    token = await gateway.token("alice", scopes=["node:/dav/a:rw"])
    headers = {
        "Authorization": basic("alice", token),
        **nginx("MOVE", "/dav/a/x", "files.example"),
    }
    inside = {"Destination": "https://files.example/dav/a/y"}
    status, *_ = await ask(client, gateway, {**headers, **inside})
    assert status == 200
    outside = {"Destination": "https://files.example/dav/b/y"}
    status, *_ = await ask(client, gateway, {**headers, **outside})
    assert status == 403
    foreign = {"Destination": "https://elsewhere.example/dav/a/y"}
    status, *_ = await ask(client, gateway, {**headers, **foreign})
    assert status == 502


@pytest.mark.parametrize(
    ("headers", "path"),
    [
        ({}, AUTH),  # nothing at all
        ({"X-Original-URI": "/public/x"}, AUTH),  # no method
        ({"X-Original-Method": "GET"}, AUTH),  # no URI
        (
            {
                "X-Original-Method": "GET",
                "X-Original-URI": "/api/x",
                "X-Forwarded-Uri": "/public/x",
            },
            AUTH,
        ),  # two spellings that differ
        (
            {
                "X-Original-Method": "GET",
                "X-Forwarded-Method": "PUT",
                "X-Original-URI": "/public/x",
            },
            AUTH,
        ),
        ({"X-Original-Method": "GET", "X-Original-URI": "public/x"}, AUTH),
        ({"X-Original-Method": "GET", "X-Original-URI": "*"}, AUTH),
        ({"X-Original-Method": "GE T", "X-Original-URI": "/public/x"}, AUTH),
        (
            {"X-Original-Method": "GET", "X-Original-URI": "http://gw/public/x"},
            AUTH,
        ),
        ({"X-Original-URI": "/public/x"}, AUTH + "/public/x"),  # Envoy, and a header
        (
            {"X-Original-Method": "GET", "X-Original-URI": "/public/x"}
            | {"X-Forwarded-Host": "a.example, b.example"},
            AUTH,
        ),
    ],
)
async def test_no_or_a_conflicting_original_request_is_400(
    gateway, client, headers, path
):
    status, _, body, _ = await ask(client, gateway, headers, path=path)
    assert status == 400
    assert b"invalid_request" in body


async def test_an_untrusted_peer_gets_403_whatever_it_sends(
    make_gateway, upstream, store_url, client
):
    gateway = await make_gateway(
        store_url,
        routes(upstream),
        extra="trusted_proxies: [10.0.0.0/8]\nforward_auth: {}\n",
    )
    for headers, path in [
        (nginx("GET", "/public/x"), AUTH),
        (traefik("GET", "/public/x"), AUTH),
        ({}, AUTH + "/public/x"),
        ({}, AUTH),
    ]:
        status, response_headers, body, _ = await ask(
            client, gateway, headers, path=path
        )
        assert status == 403
        assert "X-Patgate-Uri" not in response_headers
        assert b"trusted_proxies" in body


async def test_without_the_section_the_path_is_not_served(
    make_gateway, upstream, store_url, client
):
    gateway = await make_gateway(
        store_url, routes(upstream), extra="trusted_proxies: [127.0.0.1/32]\n"
    )
    status, *_ = await ask(client, gateway, nginx("GET", "/public/x"))
    assert status == 404


async def test_usage_cidrs_and_the_rate_limit_are_the_proxy_modes(gateway, client):
    token = await gateway.token("alice", scopes=["api:read"], rate_limit=1)
    bearer = {"Authorization": f"Bearer {token}"}
    forwarded = {"X-Forwarded-For": "203.0.113.9"}
    status, *_ = await ask(
        client, gateway, {**bearer, **forwarded, **nginx("GET", "/api/x")}
    )
    assert status == 200
    usage = gateway.app[GATE].usage.pending(token[4:12])
    assert usage is not None
    assert (usage.count, usage.ip) == (1, "203.0.113.9")
    status, headers, body, _ = await ask(
        client, gateway, {**bearer, **nginx("GET", "/api/x")}
    )
    assert status == 429
    assert b"rate_limited" in body
    assert int(headers["Retry-After"]) >= 1
    fenced = await gateway.token("alice", allowed_cidrs=["198.51.100.0/24"])
    status, *_ = await ask(
        client,
        gateway,
        {"Authorization": f"Bearer {fenced}", **forwarded, **nginx("GET", "/api/x")},
    )
    assert status == 403
