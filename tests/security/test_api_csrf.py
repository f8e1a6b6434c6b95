"""Cross-site request forgery on the management API (issue 11, finding 5).

The attack: the user once answered the API's Basic prompt, so the browser
holds their credentials for the API and attaches them to any request to it,
including one that another site makes it send. A cross-site
``<form method=POST enctype=text/plain>`` to ``/tokens/{id}/regenerate`` (or
``/tokens``, ``DELETE``...) then ran with the user's rights: empty bodies of
any content type were accepted and ``Origin`` was never looked at.

The class and where it is stopped (``patgate.web.origin``, applied by
``web.manage.endpoint.endpoint`` before anything is read or any password checked):

- every state-changing call needs a JSON body (no cross-site form can send
  one), bodiless ones (regenerate, copy, DELETE, logout) included: tested for
  every such operation in ``web.manage.routes.ROUTES`` and every content type
  a form or a no-cors fetch can send;
- and must not come from another origin (``Origin``, ``Sec-Fetch-Site``),
  which is what stops a same-site page (another port on the same host);
- browsers never get a Basic challenge, so they never cache the password.

Each refused request is checked to have changed nothing in the store.
Requests go over a raw socket, as a browser would send them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patgate.web.manage.routes import ROUTES
from patgate.web.manage.tokens import API_PREFIX
from tests.gateway_harness import ADMIN, Gateway
from tests.security.conftest import RawResponse, parse_responses, request, send_raw

PASSWORD = "root-password-for-csrf"
GATEWAY_HOST = "gateway.test"  # the Host our raw requests name
SAME_ORIGIN = f"http://{GATEWAY_HOST}"
# What a cross-site form (or a no-cors fetch, or sendBeacon) may send without
# a CORS preflight, and what it may look like.
SIMPLE_TYPES = (
    None,
    "text/plain",
    "text/plain;charset=UTF-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
)
FORM_BODIES = (b"", b"a=b", b'{"name": "csrf"}', b'{"name": "csrf", "x": "=y"}')
FOREIGN = (
    ("Origin: https://evil.example",),
    ("Origin: null",),
    # Same site, another origin: a page on another port of this host.
    (f"Origin: http://{GATEWAY_HOST}:8081",),
    (f"Origin: http://sub.{GATEWAY_HOST}",),
    ("Sec-Fetch-Site: cross-site",),
    ("Sec-Fetch-Site: same-site",),
    (f"Origin: {SAME_ORIGIN}", "Sec-Fetch-Site: cross-site"),
    ("Origin: https://evil.example", "Sec-Fetch-Site: same-origin"),
)
CHANGES = [op for op, _ in ROUTES if op.method != "GET"]


def basic(login: str, password: str) -> str:
    return "Authorization: Basic " + base64.b64encode(
        f"{login}:{password}".encode()
    ).decode("ascii")


ROOT = basic("root", PASSWORD)


@dataclass
class Victim:
    """An admin whose browser holds their Basic credentials, and their token."""

    gateway: Gateway
    token_id: str
    token: str

    def target(self, path: str) -> str:
        path = path.replace("{token_id}", self.token_id).replace("{login}", "bob")
        return API_PREFIX + path

    def body(self, path: str, method: str) -> bytes:
        """A body that, if accepted, changes something for ``method path``."""
        bodies: dict[tuple[str, str], Any] = {
            ("POST", "/tokens"): {"name": "csrf"},
            ("POST", "/tokens/revoke"): {"ids": [self.token_id]},
            ("POST", "/tokens/report-leak"): {"tokens": [self.token]},
            ("PATCH", "/tokens/{token_id}"): {"name": "csrf"},
            ("POST", "/users"): {"login": "mallory", "admin": True},
            ("PATCH", "/users/{login}"): {"disabled": True},
            ("POST", "/session"): {"login": "root", "password": PASSWORD},
        }
        return json.dumps(bodies.get((method, path), {})).encode()

    async def state(self) -> tuple[Any, ...]:
        """Everything a change could touch: tokens and users, as stored."""
        store = self.gateway.store
        return (
            sorted(repr(record) for record in await store.list_tokens()),
            sorted(repr(user) for user in await store.list_users()),
        )


@pytest.fixture
async def victim(gateway: Gateway) -> Victim:
    await gateway.add_user("root", admin=True, password=PASSWORD)
    await gateway.add_user("bob", password="bob-password-1")
    record, value = await gateway.service.create_token(ADMIN, "root", name="ci")
    return Victim(gateway, record.id, value)


async def send(
    victim: Victim,
    method: str,
    path: str,
    *headers: str,
    body: bytes = b"",
) -> RawResponse:
    (response,) = await send_raw(
        victim.gateway,
        request(
            victim.target(path), *headers, method=method, host=GATEWAY_HOST, body=body
        ),
    )
    return response


def error_of(response: RawResponse) -> str:
    return str(json.loads(response.body).get("error"))


async def test_cross_site_form_with_cached_basic_credentials_changes_nothing(
    victim: Victim,
) -> None:
    # The reported case: what Chromium sends for an auto-submitted
    # <form method=POST enctype=text/plain> on another site, with the Basic
    # credentials it cached for the API.
    browser = (
        ROOT,
        "Origin: https://evil.example",
        "Sec-Fetch-Site: cross-site",
        "Sec-Fetch-Mode: navigate",
        "Sec-Fetch-Dest: document",
        "Content-Type: text/plain",
    )
    before = await victim.state()
    for path in ("/tokens/{token_id}/regenerate", "/tokens", "/tokens/{token_id}/copy"):
        for body in (b"", b"x=y"):
            response = await send(victim, "POST", path, *browser, body=body)
            assert response.status in (403, 415), (path, body, response)
            assert b'"token"' not in response.body
            assert "WWW-Authenticate" not in response.headers
    assert await victim.state() == before


@pytest.mark.parametrize("op", CHANGES, ids=lambda op: f"{op.method} {op.path}")
async def test_every_change_needs_a_json_body(victim: Victim, op: Any) -> None:
    # No Origin: a script with the right password, so only the JSON rule
    # stands between these bodies and the change.
    before = await victim.state()
    for content_type in SIMPLE_TYPES:
        for body in FORM_BODIES:
            headers = [ROOT]
            if content_type is not None:
                headers.append(f"Content-Type: {content_type}")
            response = await send(victim, op.method, op.path, *headers, body=body)
            assert (response.status, error_of(response)) == (
                415,
                "unsupported_media_type",
            ), (content_type, body)
    empty = await send(
        victim, op.method, op.path, ROOT, "Content-Type: application/json"
    )
    assert (empty.status, error_of(empty)) == (400, "invalid_json")
    assert await victim.state() == before


@pytest.mark.parametrize("op", CHANGES, ids=lambda op: f"{op.method} {op.path}")
async def test_every_change_from_another_origin_is_refused(
    victim: Victim, op: Any
) -> None:
    before = await victim.state()
    body = victim.body(op.path, op.method)
    for foreign in FOREIGN:
        response = await send(
            victim,
            op.method,
            op.path,
            ROOT,
            "Content-Type: application/json",
            *foreign,
            body=body,
        )
        assert (response.status, error_of(response)) == (403, "cross_origin"), foreign
        assert "Set-Cookie" not in response.headers
    assert await victim.state() == before


async def test_same_origin_pages_and_scripts_still_change(victim: Victim) -> None:
    # The page sends Origin and Sec-Fetch-Site: same-origin; a user typing
    # in the address bar gives Sec-Fetch-Site: none; curl sends neither.
    json_type = "Content-Type: application/json"
    for extra in (
        (f"Origin: {SAME_ORIGIN}", "Sec-Fetch-Site: same-origin"),
        (f"Origin: {SAME_ORIGIN}:80",),
        ("Sec-Fetch-Site: none",),
        (),
    ):
        made = await send(
            victim, "POST", "/tokens", ROOT, json_type, *extra, body=b"{}"
        )
        assert made.status == 201, (extra, made)
        regenerated = await send(
            victim,
            "POST",
            "/tokens/{token_id}/regenerate",
            ROOT,
            json_type,
            *extra,
            body=b"{}",
        )
        assert regenerated.status == 201, (extra, regenerated)


async def test_report_leak_needs_json_and_the_same_origin(victim: Victim) -> None:
    # No login, but it revokes: a cross-site form must not be able to.
    value = victim.token.encode()
    for headers, body in [
        (("Content-Type: text/plain",), b'{"tokens": ["' + value + b'"]}'),
        (("Content-Type: application/x-www-form-urlencoded",), b"tokens=" + value),
        (
            ("Content-Type: application/json", "Origin: https://evil.example"),
            b'{"tokens": ["' + value + b'"]}',
        ),
    ]:
        response = await send(
            victim, "POST", "/tokens/report-leak", *headers, body=body
        )
        assert response.status in (403, 415), headers
    record = await victim.gateway.store.get_token(victim.token_id)
    assert record is not None
    assert record.status.value == "active"


NAVIGATIONS = (
    (
        "Sec-Fetch-Mode: navigate",
        "Sec-Fetch-Dest: document",
        "Sec-Fetch-Site: cross-site",
    ),
    ("Sec-Fetch-Mode: navigate", "Sec-Fetch-Site: none", "Sec-Fetch-User: ?1"),
    ("Sec-Fetch-Mode: navigate", "Sec-Fetch-Dest: iframe"),
    ("Sec-Fetch-Mode: no-cors", "Sec-Fetch-Dest: image"),
    ("Accept: text/html,application/xhtml+xml,*/*;q=0.8",),
    ("Origin: https://evil.example",),
)


@pytest.mark.parametrize(
    "path", sorted({op.path for op, _ in ROUTES if op.method == "GET"})
)
async def test_browsers_never_get_a_basic_challenge(victim: Victim, path: str) -> None:
    # A challenge makes the browser ask for the password and then keep it
    # for every later request to the API, cross-site ones included.
    for headers in NAVIGATIONS:
        for auth in ((), (basic("root", "wrong-password"),)):
            response = await send(victim, "GET", path, *headers, *auth)
            if response.status == 401:
                assert "WWW-Authenticate" not in response.headers, (headers, auth)
    # Scripts that wait for a challenge (wget, some HTTP libraries) get one.
    response = await send(victim, "GET", "/whoami")
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic ")


# --------------------------------------------------------------------------
# The rule as a property, over every change and mixed headers


def send_blocking(address: tuple[str, int], raw: bytes) -> RawResponse:
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(raw)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    (response,) = parse_responses(b"".join(chunks))
    return response


ORIGINS = (
    None,
    SAME_ORIGIN,
    f"{SAME_ORIGIN}:80",
    f"HTTP://{GATEWAY_HOST.upper()}",
    "https://evil.example",
    "null",
    f"http://{GATEWAY_HOST}:8081",
    f"http://{GATEWAY_HOST}.evil.example",
    f"http://evil.example/{GATEWAY_HOST}",
    f"http://user@{GATEWAY_HOST}",
)
SITES = (None, "same-origin", "none", "same-site", "cross-site", "garbage")
TYPES = (
    *SIMPLE_TYPES,
    "application/json",
    "application/json; charset=utf-8",
    "Application/JSON",
    "application/merge-patch+json",
    "text/json",
    "application/jsonx",
)
ALLOWED_ORIGINS = {None, SAME_ORIGIN, f"{SAME_ORIGIN}:80", ORIGINS[3]}
ALLOWED_SITES = {None, "same-origin", "none"}
JSON_TYPES = {
    "application/json",
    "application/json; charset=utf-8",
    "Application/JSON",
    "application/merge-patch+json",
}


def change_requests(victim: Victim) -> st.SearchStrategy[tuple[bytes, bool]]:
    """A raw change with mixed headers, and whether the rules let it through."""

    def assemble(
        op: Any, origin: str | None, site: str | None, kind: str | None, body: bool
    ) -> tuple[bytes, bool]:
        headers: Sequence[str] = [
            *([f"Origin: {origin}"] if origin else []),
            *([f"Sec-Fetch-Site: {site}"] if site else []),
            *([f"Content-Type: {kind}"] if kind else []),
            basic("root", "not-the-password"),  # accepted ones stop at 401
        ]
        payload = victim.body(op.path, op.method) if body else b""
        if op.path == "/tokens/report-leak" and body:
            payload = b'{"tokens": ["pgt_not_a_live_one"]}'  # no login to stop it
        raw = request(
            victim.target(op.path),
            *headers,
            method=op.method,
            host=GATEWAY_HOST,
            body=payload,
        )
        allowed = origin in ALLOWED_ORIGINS and site in ALLOWED_SITES
        return raw, allowed and kind in JSON_TYPES

    return st.builds(
        assemble,
        st.sampled_from(CHANGES),
        st.sampled_from(ORIGINS),
        st.sampled_from(SITES),
        st.sampled_from(TYPES),
        st.booleans(),
    )


async def test_no_change_passes_without_json_from_the_same_origin(
    victim: Victim,
) -> None:
    host, _, port = victim.gateway.host.rpartition(":")
    address = (host, int(port))
    seen = {True: 0, False: 0}

    @settings(
        max_examples=150,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(change_requests(victim))
    def one_change(case: tuple[bytes, bool]) -> None:
        raw, allowed = case
        response = send_blocking(address, raw)
        refused = error_of(response) in ("cross_origin", "unsupported_media_type")
        assert refused == (not allowed), (raw, response.status, response.body)
        seen[allowed] += 1

    before = await victim.state()
    await asyncio.to_thread(one_change)
    assert await victim.state() == before
    assert seen[True], seen
    assert seen[False], seen
