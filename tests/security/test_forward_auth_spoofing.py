"""Asking the decision endpoint as someone else, or about another request.

The endpoint believes ``X-Original-*``/``X-Forwarded-*`` (and, for Envoy, its
own target) because a proxy in ``trusted_proxies`` set them. Anyone else who
could reach it could ask "may GET /admin/ pass?" with any headers and read
the answer as a licence, or read identities off it: it answers them 403 and
nothing more. From a trusted proxy, a client can still add headers of its
own next to the proxy's (nginx and Traefik pass them on): a second spelling
of the original request, a second value, identity headers, a host list. None
of them may change the decision or pass as the answer's identity.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patgate.web.keys import GATE
from tests.gateway_harness import Gateway, RecordingUpstream
from tests.security.conftest import (
    NO_THROTTLE,
    ROUTES,
    bearer,
    parse_responses,
    request,
    send_raw,
)
from tests.security.test_fuzz_request_path import send_blocking

AUTH = "/_patgate/auth"
ORIGINAL_HEADERS = [
    "X-Original-Method: GET",
    "X-Original-Method: DELETE",
    "X-Original-URI: /admin/x",
    "X-Original-URI: /public/x",
    "X-Forwarded-Method: PUT",
    "X-Forwarded-Uri: /api/x",
    "X-Forwarded-Uri: /public/x",
    "X-Forwarded-Host: public.example.com",
    "X-Forwarded-Proto: https",
    "X-Forwarded-For: 10.0.0.1",
    "X-Real-IP: 10.0.0.1",
    "X-Patgate-User: root",
    "X_Patgate_User: root",
    "X-Patgate-Scopes: *",
    "Forwarded: for=10.0.0.1;host=public.example.com",
]


# The endpoint on the main listener, and on its own (its own HTTP/1.1 server).
FRONTS = {"main listener": "{}", "own listener": "{listen: 127.0.0.1:0}"}


def trusted_extra(cidr: str, front: str = "main listener") -> str:
    section = FRONTS[front]
    return f"{NO_THROTTLE}\ntrusted_proxies: [{cidr}]\nforward_auth: {section}\n"


@pytest.fixture(params=list(FRONTS))
async def untrusted(
    request, make_gateway, upstream: RecordingUpstream, sqlite_url
) -> Gateway:
    """A gateway whose trusted proxies are elsewhere: the test client is not one."""
    gateway: Gateway = await make_gateway(
        sqlite_url,
        ROUTES.format(upstream=upstream.url),
        extra=trusted_extra("10.0.0.0/8", request.param),
    )
    return gateway


@pytest.fixture(params=list(FRONTS))
async def trusted(
    request, make_gateway, upstream: RecordingUpstream, sqlite_url
) -> Gateway:
    gateway: Gateway = await make_gateway(
        sqlite_url,
        ROUTES.format(upstream=upstream.url),
        extra=trusted_extra("127.0.0.1/32", request.param),
    )
    return gateway


class TestUntrustedPeer:
    """Whatever an untrusted peer sends: 403, no identity, no upstream request."""

    async def test_any_headers_any_style_any_token(
        self, untrusted: Gateway, upstream: RecordingUpstream
    ) -> None:
        good = await untrusted.token("alice")
        host, _, port = untrusted.decisions.host.rpartition(":")
        address = (host, int(port))

        @settings(
            max_examples=60,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(
            st.lists(st.sampled_from(ORIGINAL_HEADERS), max_size=5),
            st.sampled_from(["", bearer(good), "Authorization: Bearer pgt_x"]),
            st.sampled_from(["", "/public/x", "/api/x", "/admin/", "/%2e%2e/api"]),
            st.sampled_from(["GET", "POST", "DELETE", "PROPFIND"]),
        )
        def ask(headers: list[str], auth: str, tail: str, method: str) -> None:
            lines = [*headers, auth] if auth else headers
            raw = request(AUTH + tail, *lines, method=method)
            (answer,) = parse_responses(send_blocking(address, raw))
            assert answer.status == 403, (raw, answer.status)
            assert b"trusted_proxies" in answer.body
            names = {name.lower() for name in answer.headers}
            assert not {n for n in names if n.startswith("x-patgate")}, names
            assert "www-authenticate" not in names
            assert upstream.requests == []

        await asyncio.to_thread(ask)

    async def test_the_token_is_not_even_looked_at(self, untrusted: Gateway) -> None:
        # A broken token from a trusted proxy counts towards the throttle
        # and the shared failure counter; from anyone else, it never gets
        # that far (no oracle, no store write).
        token = await untrusted.token("alice")
        for _ in range(3):
            (answer,) = await send_raw(
                untrusted.decisions,
                request(
                    AUTH,
                    "X-Original-Method: GET",
                    "X-Original-URI: /api/x",
                    bearer(token + "x"),
                ),
            )
            assert answer.status == 403
        gate = untrusted.app[GATE]
        assert gate.throttle.retry_after("127.0.0.1", 0.0) == 0


class TestHeaderInjection:
    """A client's own headers next to the trusted proxy's change nothing."""

    @pytest.mark.parametrize(
        "added",
        [
            ["X-Forwarded-Uri: /public/x"],  # behind nginx
            ["X-Forwarded-Method: GET", "X-Forwarded-Uri: /public/x"],
            ["X-Original-URI: /public/x"],  # a second value
            ["X-Forwarded-Host: public.example.com, gateway.test"],
            ["X-Forwarded-Host: a.example", "X-Forwarded-Host: b.example"],
            ["X-Original-Method: GET"],  # a second method
        ],
    )
    async def test_a_second_or_other_spelling_is_400_never_200(
        self, trusted: Gateway, added: list[str]
    ) -> None:
        (answer,) = await send_raw(
            trusted.decisions,
            request(
                AUTH,
                "X-Original-Method: DELETE",
                "X-Original-URI: /admin/x",
                *added,
            ),
        )
        assert answer.status == 400
        assert "X-Patgate-Uri" not in answer.headers

    async def test_an_envoy_target_with_a_header_spelling_is_400(
        self, trusted: Gateway
    ) -> None:
        (answer,) = await send_raw(
            trusted.decisions, request(AUTH + "/admin/x", "X-Original-URI: /public/x")
        )
        assert answer.status == 400

    async def test_client_identity_headers_never_come_back_as_the_answer(
        self, trusted: Gateway
    ) -> None:
        token = await trusted.token("alice", scopes=["api:read"])
        spoof = ["X-Patgate-User: root", "X-Patgate-Scopes: *", "X_Patgate_User: root"]
        for target, user, scopes in [
            ("/api/x", "alice", "api:read"),
            ("/public/x", "", ""),
        ]:
            (answer,) = await send_raw(
                trusted.decisions,
                request(
                    AUTH,
                    "X-Original-Method: GET",
                    f"X-Original-URI: {target}",
                    bearer(token),
                    *spoof,
                ),
            )
            assert answer.status == 200
            assert answer.headers.getall("X-Patgate-User") == [user]
            assert answer.headers.getall("X-Patgate-Scopes") == [scopes]
            assert "X_Patgate_User" not in answer.headers

    @pytest.mark.parametrize(
        "uri",
        [
            "/api/x\t/public/x",
            "/public/x /api/x",
            "/public/\x7f",
            "api/x",
            "*",
            "http://gateway.test/public/x",
            "//evil.example/public/x",
        ],
    )
    async def test_odd_original_uris_never_pass_as_another_path(
        self, trusted: Gateway, upstream: RecordingUpstream, uri: str
    ) -> None:
        (answer,) = await send_raw(
            trusted.decisions,
            request(AUTH, "X-Original-Method: GET", f"X-Original-URI: {uri}"),
        )
        if answer.status == 200:
            # Only a spelling of a public path, and said back canonical.
            assert answer.headers["X-Patgate-Uri"].startswith("/public/")
        else:
            assert answer.status in (400, 401, 404)
        assert upstream.requests == []

    async def test_a_host_bound_route_follows_the_proxys_forwarded_host(
        self, trusted: Gateway
    ) -> None:
        # /hosted/ is public only on public.example.com: the host is the one
        # the trusted proxy names, not the Host of the asking request.
        def ask(forwarded_host: str) -> bytes:
            return request(
                AUTH,
                "X-Original-Method: GET",
                "X-Original-URI: /hosted/x",
                f"X-Forwarded-Host: {forwarded_host}",
                host="public.example.com",
            )

        (answer,) = await send_raw(trusted.decisions, ask("gateway.test"))
        assert answer.status == 401
        (answer,) = await send_raw(trusted.decisions, ask("public.example.com"))
        assert answer.status == 200
        (answer,) = await send_raw(trusted.decisions, ask("evil@public.example.com"))
        assert answer.status == 400
