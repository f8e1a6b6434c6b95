"""The decision endpoint decides as the proxy mode does, ambiguous paths included.

A proxy in front forwards the original request itself, so a decision that
is more lenient than the proxy mode's (a path spelling it reads differently,
a route it matches where the proxy would not) lets that request through
unchecked. Every request here is asked both ways on one gateway, over raw
sockets so no client tidies the target: the proxy mode forwards it or
refuses it, and the decision endpoint must say 200 exactly when the proxy
forwarded, with ``X-Patgate-Uri`` the very target the proxy forwarded, and
otherwise the same status and body.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from patgate.tokens import format_token
from patgate.web.gateway.forward_auth import resolves_elsewhere
from tests.gateway_harness import Gateway, RecordingUpstream
from tests.security.conftest import (
    NO_THROTTLE,
    ROUTES,
    RawResponse,
    bearer,
    parse_responses,
    request,
    send_raw,
)
from tests.security.test_fuzz_request_path import send_blocking

AUTH = "/_patgate/auth"
EXTRA = NO_THROTTLE + "\ntrusted_proxies: [127.0.0.1/32]\nforward_auth: {}\n"
# The same endpoint on its own listener (its own HTTP/1.1 server).
OWN_LISTENER = EXTRA.replace("forward_auth: {}", "forward_auth: {listen: 127.0.0.1:0}")

# Spellings that must never reach another path than the one checked.
AMBIGUOUS = [
    "/public/a%2fb",
    "/public/a%2F..%2Fapi/x",
    "/public/a%5cb",
    "/public/a%00b",
    "/public/a%0ab",
    "/public/%252e%252e/api/x",
    "/public/%25%32e%25%32e/api/x",
    "/public/%252fapi",
    "/public/a;b",
    "/public/..;/api/x",
    "/public/a\\b",
    "/public/%",
    "/public/a%2",
    "/../api/x",
    "/public/%2e%2e%2e%2e/../../../api/x",
]


@pytest.fixture(params=["main listener", "own listener"])
async def gateway(
    request, make_gateway, upstream: RecordingUpstream, sqlite_url
) -> Gateway:
    extra = EXTRA if request.param == "main listener" else OWN_LISTENER
    gateway: Gateway = await make_gateway(
        sqlite_url, ROUTES.format(upstream=upstream.url), extra=extra
    )
    return gateway


def nginx_style(method: str, target: str, *headers: str) -> bytes:
    return request(
        AUTH,
        f"X-Original-Method: {method}",
        f"X-Original-URI: {target}",
        "X-Forwarded-Host: gateway.test",
        *headers,
    )


def traefik_style(method: str, target: str, *headers: str) -> bytes:
    return request(
        AUTH,
        f"X-Forwarded-Method: {method}",
        f"X-Forwarded-Uri: {target}",
        "X-Forwarded-Host: gateway.test",
        *headers,
    )


def envoy_style(method: str, target: str, *headers: str) -> bytes:
    return request(AUTH + target, *headers, method=method)


STYLES = [nginx_style, traefik_style, envoy_style]


def one(responses: list[RawResponse]) -> RawResponse:
    final = [response for response in responses if response.status >= 200]
    assert len(final) == 1
    return final[0]


class TestAmbiguousOriginalPaths:
    """Encoded separators, NUL, double encoding, path parameters: never a pass."""

    @pytest.mark.parametrize("target", AMBIGUOUS)
    async def test_refused_by_every_style_as_by_the_proxy(
        self, gateway: Gateway, upstream: RecordingUpstream, target: str
    ) -> None:
        token = await gateway.token("alice")
        proxied = one(await send_raw(gateway, request(target, bearer(token))))
        assert proxied.status in (400, 404)
        assert upstream.requests == []
        for style in STYLES:
            asked = style("GET", target, bearer(token))
            answer = one(await send_raw(gateway.decisions, asked))
            assert (answer.status, answer.body) == (proxied.status, proxied.body), (
                style.__name__
            )
            assert "X-Patgate-Uri" not in answer.headers

    async def test_a_dot_segment_is_resolved_before_the_route_is_chosen(
        self, gateway: Gateway
    ) -> None:
        asked = nginx_style("GET", "/public/%2e%2e/api/x")
        answer = one(await send_raw(gateway.decisions, asked))
        assert answer.status == 401  # /api/x, a token route: not the public one
        token = await gateway.token("alice", scopes=["api:read"])
        answer = one(
            await send_raw(
                gateway.decisions,
                nginx_style("GET", "/public/%2E%2E/api/%78", bearer(token)),
            )
        )
        assert answer.status == 200
        assert answer.headers["X-Patgate-Uri"] == "/api/x"


@pytest.mark.parametrize("style", [traefik_style, envoy_style])
@pytest.mark.parametrize(
    "target",
    [
        "/api//..//public/y",
        "/api/x/%2e%2e/%2e%2e/public/y",
        "/api/x/../../public/y",
        "/api/./x",
        "/api//x",
        "/public/..;/api/x",
    ],
)
async def test_a_raw_forwarded_path_with_dot_or_empty_segments_is_refused(
    gateway: Gateway, style, target: str
) -> None:
    """Checked in one form and forwarded in another: Traefik, Caddy and Envoy
    send the upstream the client's raw path, not the canonical one."""
    token = await gateway.token("alice", scopes=["api:read"])
    answer = one(await send_raw(gateway.decisions, style("GET", target, bearer(token))))
    assert answer.status == 400


def test_canonical_spellings_do_not_count_as_resolving_elsewhere() -> None:
    for target in ("/api/x", "/api/x/", "/api/x?a=..//b", "/api/%7e/x", "/"):
        assert not resolves_elsewhere(target), target


SEGMENTS = [
    "api", "public", "admin", "hosted", "x", "", ".", "..", "%2e", "%2E%2e",
    ".%2e", "%252e", "%2f", "%5c", "%00", "..;", ";x", "%23", "%3F", "%c3%a9",
    "%7e", "~", "%25", "%", "a%2", "*", "%20", "API", "%61pi",
]  # fmt: skip
METHODS = ["GET", "HEAD", "PUT", "DELETE", "PROPFIND"]
QUERIES = ["", "?a=1", "?access_token={good}", "?a=1&session={read}&b=2", "?%zz"]


class TestSameDecisionAsTheProxy:
    """Hypothesis: for any request, decision 200 ⇔ the proxy forwarded it."""

    async def test_decision_matches_the_proxy_mode(
        self, gateway: Gateway, upstream: RecordingUpstream
    ) -> None:
        good = await gateway.token("alice")
        read = await gateway.token("alice", scopes=["api:read"])
        forged = format_token("pgt", "Nobody00", "N" * 32)
        auths = ["", bearer(good), bearer(read), bearer(forged)]
        host, _, port = gateway.host.rpartition(":")
        address = (host, int(port))
        host, _, port = gateway.decisions.host.rpartition(":")
        decisions = (host, int(port))
        seen = {"forwarded": 0, "refused": 0, "raw": 0}

        @settings(
            max_examples=150,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(
            st.sampled_from(METHODS),
            st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=4),
            st.sampled_from(QUERIES),
            st.sampled_from(auths),
            st.sampled_from(STYLES),
        )
        # One of each kind whatever the draw: forwarded, refused, raw.
        @example("GET", ["api", "x"], "?a=1", bearer(read), nginx_style)
        @example("GET", ["api", "x"], "", "", envoy_style)
        @example("GET", ["api", "", "x"], "", bearer(good), traefik_style)
        def one_request(method, segments, query, auth, style) -> None:
            target = "/" + "/".join(segments) + query.format(good=good, read=read)
            headers = [auth] if auth else []
            upstream.requests.clear()
            raw = request(target, *headers, method=method)
            proxied = one(parse_responses(send_blocking(address, raw)))
            raw = style(method, target, *headers)
            answer = one(parse_responses(send_blocking(decisions, raw)))
            if (
                upstream.requests
                and style is not nginx_style
                and resolves_elsewhere(target)
            ):
                # Forwarded raw by these proxies: never a pass.
                seen["raw"] += 1
                assert answer.status == 400, (target, style.__name__)
                return
            if upstream.requests:
                (forwarded,) = upstream.requests
                seen["forwarded"] += 1
                assert answer.status == 200, (target, answer.status, answer.body)
                assert answer.headers["X-Patgate-Uri"] == forwarded.raw_path
                user = forwarded.headers.get("X-Patgate-User", "")
                assert answer.headers["X-Patgate-User"] == user
            else:
                seen["refused"] += 1
                assert proxied.status >= 400
                assert answer.status == proxied.status, (target, style.__name__)
                if method != "HEAD":
                    assert answer.body == proxied.body
                assert answer.headers.getall(
                    "WWW-Authenticate", []
                ) == proxied.headers.getall("WWW-Authenticate", [])

        await asyncio.to_thread(one_request)
        assert all(seen.values()), seen
