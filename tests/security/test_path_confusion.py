"""Path tricks: what the gateway checks must be exactly what the upstream gets.

SPEC §3 and §8 "Checked path ≠ forwarded path" / "Query or fragment taking
part in route matching". Stopped in ``patgate.paths.normalise_path`` (one
canonical form, ambiguous encodings refused) and ``patgate.routing.Router``
(matches that form, never the query); ``web.gateway.proxy`` forwards the same string
with ``URL(..., encoded=True)``.

Every test asserts the status and what reached the upstream.
"""

from __future__ import annotations

import aiohttp
import pytest
from yarl import URL

from patgate.paths import normalise_path
from tests.gateway_harness import Gateway, RecordingUpstream
from tests.security.conftest import bearer, request, send_raw, upstream_paths


async def fetch(
    client: aiohttp.ClientSession,
    gateway: Gateway,
    target: str,
    token: str | None = None,
    method: str = "GET",
) -> int:
    """``target`` sent exactly as written (no normalising, no re-encoding)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with client.request(
        method, URL(gateway.url + target, encoded=True), headers=headers
    ) as response:
        await response.read()
        return response.status


# Each of these climbs out of /public/ into /api/x once dot segments are
# resolved, however they are spelt.
ESCAPES_INTO_API = [
    "/public/%2e%2e/api/x",
    "/public/%2E%2E/api/x",
    "/public/.%2e/api/x",
    "/public/%2e./api/x",
    "/public/../api/x",
    "/public/./../api/x",
    "/public/deep/../../api/x",
    "/public//../api/x",
    "/public/%2e/%2e%2e/api/x",
    "//api//x",
    "/%61pi/x",  # an escaped unreserved letter is that letter
]


@pytest.mark.parametrize("target", ESCAPES_INTO_API)
async def test_dot_segments_cannot_climb_from_public_into_token_route(
    gateway: Gateway,
    upstream: RecordingUpstream,
    client: aiohttp.ClientSession,
    target: str,
) -> None:
    assert await fetch(client, gateway, target) == 401
    assert upstream.requests == []
    token = await gateway.token("alice", scopes=["api:read"])
    assert await fetch(client, gateway, target, token) == 200
    # The path that was authorised is the path that was sent.
    assert upstream_paths(upstream) == ["/api/x"]
    assert upstream.last.headers["X-Patgate-User"] == "alice"


@pytest.mark.parametrize(
    "target",
    [
        "/public/%252e%252e/api/x",
        "/public/%252E%252E/api/x",
        "/public/%25252e%25252e/api/x",
        "/public/%25%32e%25%32e/api/x",  # "%2e" once decoded
        "/public/..%252fapi/x",
        "/public/..%255capi/x",
        "/public/x%2500.json",
    ],
)
async def test_double_encoded_dots_and_separators_are_refused(
    gateway: Gateway,
    upstream: RecordingUpstream,
    client: aiohttp.ClientSession,
    target: str,
) -> None:
    # An upstream that decodes twice would see "../" or a separator here.
    assert await fetch(client, gateway, target) == 400
    assert upstream.requests == []


@pytest.mark.parametrize(
    "target",
    [
        "/public/..%2fapi/x",
        "/public/..%2Fapi/x",
        "/api%2fx",
        "/public/..%5capi/x",
        "/public/..%5Capi/x",
        "/public/x%00.json",
        "/public/x%09",
        "/public/x%7f",
    ],
)
async def test_encoded_separators_and_control_bytes_are_refused(
    gateway: Gateway,
    upstream: RecordingUpstream,
    client: aiohttp.ClientSession,
    target: str,
) -> None:
    assert await fetch(client, gateway, target) == 400
    assert upstream.requests == []


@pytest.mark.parametrize(
    "target", ["/public/x%0a", "/public/x%0d%0aX-Patgate-User:%20root", "/api/%0a"]
)
async def test_encoded_line_breaks_never_reach_the_upstream(
    gateway: Gateway,
    upstream: RecordingUpstream,
    client: aiohttp.ClientSession,
    target: str,
) -> None:
    # Header injection through a decoded path: refused one way or another.
    assert await fetch(client, gateway, target) in (400, 404)
    assert upstream.requests == []


async def test_encoded_line_break_is_refused_by_the_gateway_with_400(
    gateway: Gateway, upstream: RecordingUpstream, client: aiohttp.ClientSession
) -> None:
    async with client.get(URL(gateway.url + "/public/x%0a", encoded=True)) as response:
        assert response.status == 400
        assert (await response.json())["error"] == "invalid_request"
    assert upstream.requests == []


@pytest.mark.parametrize(
    "target",
    [b"/public/..\\api/x", b"/public\\..\\api\\x", b"/api\\x", b"/public/x\\"],
)
async def test_raw_backslash_is_refused(
    gateway: Gateway, upstream: RecordingUpstream, target: bytes
) -> None:
    # "\" is "/" to Windows and some Java upstreams.
    (response,) = await send_raw(gateway, request(target))
    assert response.status == 400
    assert upstream.requests == []


@pytest.mark.parametrize(
    "target",
    [
        "/public/..;/api/x",
        "/public/..;jsessionid=1/api/x",
        "/public/..%3b/api/x",
        "/public/..%3B/api/x",
        "/public/.;/x",
    ],
)
async def test_dot_segment_with_parameters_is_refused(
    gateway: Gateway,
    upstream: RecordingUpstream,
    client: aiohttp.ClientSession,
    target: str,
) -> None:
    # Tomcat-style upstreams drop ";params" and then resolve "..".
    assert await fetch(client, gateway, target) == 400
    assert upstream.requests == []


@pytest.mark.parametrize(
    "target", ["/../api/x", "/public/../../api/x", "/%2e%2e/api/x", "/.."]
)
async def test_dot_segments_above_root_are_refused(
    gateway: Gateway,
    upstream: RecordingUpstream,
    client: aiohttp.ClientSession,
    target: str,
) -> None:
    assert await fetch(client, gateway, target) == 400
    assert upstream.requests == []


@pytest.mark.parametrize("target", ["/API/x", "/Api/x", "/%41PI/x", "/ADMIN/x"])
async def test_mixed_case_prefix_takes_its_own_route(
    gateway: Gateway,
    upstream: RecordingUpstream,
    client: aiohttp.ClientSession,
    target: str,
) -> None:
    # A case-insensitive upstream serves /API/x as /api/x: the prefix matches
    # every case of itself, so the request meets that route's checks. (It
    # used to match no route; test_path_spelling.py has the class.)
    assert await fetch(client, gateway, target) == 401
    assert upstream.requests == []
    token = await gateway.token("alice", scopes=["api:read"])
    assert await fetch(client, gateway, target, token) == (
        403 if "DMIN" in target else 200
    )
    forwarded = [] if "DMIN" in target else [normalise_path(target)]
    assert upstream_paths(upstream) == forwarded


async def test_node_scope_checks_the_forwarded_path(
    gateway: Gateway, upstream: RecordingUpstream, client: aiohttp.ClientSession
) -> None:
    """A token confined to /api/alpha stays there, however the path is spelt."""
    token = await gateway.token("alice", scopes=["node:/api/alpha:rw"])
    assert await fetch(client, gateway, "/api/alpha/%2e%2e/beta/x", token) == 403
    assert await fetch(client, gateway, "/api/alpha/../beta/x", token) == 403
    assert await fetch(client, gateway, "/api//alpha/../beta/x", token) == 403
    assert await fetch(client, gateway, "/api/alpha/..%2fbeta/x", token) == 400
    assert await fetch(client, gateway, "/api/alphabet/x", token) == 403
    assert upstream.requests == []
    assert await fetch(client, gateway, "/api/alpha/./x", token) == 200
    assert await fetch(client, gateway, "/api/beta/../alpha/y", token) == 200
    assert upstream_paths(upstream) == ["/api/alpha/x", "/api/alpha/y"]


@pytest.mark.parametrize(
    "target",
    [
        "/public/a%2Cb%3F/../c",
        "/public/%7euser/./x",
        "/public/caf%c3%a9",
        "/public/a%3Bb/%5B1%5D",
        "/public/x/",
        "/public",
    ],
)
async def test_forwarded_path_is_the_canonical_path(
    gateway: Gateway,
    upstream: RecordingUpstream,
    client: aiohttp.ClientSession,
    target: str,
) -> None:
    expected = normalise_path(target)
    assert await fetch(client, gateway, target) == 200
    assert upstream_paths(upstream) == [expected]
    # Canonical means stable: the upstream, normalising again, finds the same.
    assert normalise_path(expected) == expected


async def test_raw_hash_is_forwarded_encoded_and_keeps_the_rest_of_the_path(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    (response,) = await send_raw(gateway, request(b"/public/a#b/c?q=1"))
    assert response.status == 200
    assert upstream_paths(upstream) == ["/public/a%23b/c?q=1"]


async def test_raw_hash_cannot_hide_dot_segments_from_the_check(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    # Were "#..." dropped as a fragment, this would be checked as /public/a
    # and an upstream that resolves the rest would serve /api/x.
    target = b"/public/a#/../../api/x"
    (response,) = await send_raw(gateway, request(target))
    assert response.status == 401
    assert upstream.requests == []
    token = await gateway.token("alice")
    (response,) = await send_raw(gateway, request(target, bearer(token)))
    assert response.status == 200
    assert upstream_paths(upstream) == ["/api/x"]


@pytest.mark.parametrize(
    ("target", "status", "forwarded"),
    [
        ("/public/x?/api/", 200, "/public/x?/api/"),
        ("/public/x?/../../api/x", 200, "/public/x?/../../api/x"),
        ("/public/x?a=%2e%2e%2fapi&b=/api/x", 200, "/public/x?a=%2e%2e%2fapi&b=/api/x"),
        ("/api/x?/public/", 401, None),
        ("/api/x?r=/../../public/x", 401, None),
        ("/public/x%3F/../../api/x", 401, None),  # an escaped "?" is not a query
    ],
)
async def test_query_never_takes_part_in_route_matching(
    gateway: Gateway,
    upstream: RecordingUpstream,
    client: aiohttp.ClientSession,
    target: str,
    status: int,
    forwarded: str | None,
) -> None:
    assert await fetch(client, gateway, target) == status
    assert upstream_paths(upstream) == ([forwarded] if forwarded else [])


async def test_prefix_is_matched_segment_wise(
    gateway: Gateway, upstream: RecordingUpstream, client: aiohttp.ClientSession
) -> None:
    # "/publicity" is not under "/public/", nor "/api-docs" under "/api/".
    assert await fetch(client, gateway, "/publicity/x") == 404
    assert await fetch(client, gateway, "/api-docs/x") == 404
    assert upstream.requests == []
