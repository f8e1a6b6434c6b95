"""Fuzzing the whole request path against a real gateway.

Issue 5: "A hypothesis-based fuzz test of the whole request path asserts that
no input yields a 5xx from the gateway itself or a forwarded request without
a valid token." Requests are assembled byte by byte (methods in any case,
paths of dot segments, escapes, separators and route names, Authorization in
every shape, query tokens, spoofed identity and forwarding headers, Host
tricks) and sent over a raw socket, so no client library tidies them first.

For each request: the gateway answers, never with a 5xx (the upstream is
healthy); anything forwarded has a canonical path; anything forwarded on a
token route carries the gateway's identity for a token that really was in
the request, and no token value; nothing forwarded carries a spoofed
identity. Bounded and derandomised so that it runs in seconds and the same
way in CI.
"""

from __future__ import annotations

import asyncio
import base64
import socket
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patgate.paths import normalise_path
from patgate.tokens import format_token
from patgate.web.gateway.headers import header_key
from tests.gateway_harness import Gateway, RecordingUpstream
from tests.security.conftest import parse_responses

IDENTITY = {"x-patgate-user", "x-patgate-token-id", "x-patgate-scopes"}


@dataclass(frozen=True)
class Tokens:
    good: str  # alice, "*"
    read: str  # alice, api:read only
    other: str  # bob, "*"
    forged: str  # good with a broken checksum
    unknown: str  # well formed, no such id

    def live(self) -> dict[str, str]:
        """Value → token id for the tokens that really grant something."""
        return {value: value[4:12] for value in (self.good, self.read, self.other)}

    def all(self) -> list[str]:
        return [self.good, self.read, self.other, self.forged, self.unknown]


BENIGN_SEGMENTS = ["api", "public", "admin", "hosted", "x", "y", "v1", ""]
TRICKY_SEGMENTS = [
    "API", "%61pi", "Public", ".", "..", "%2e", "%2E%2e", ".%2e", "%252e%252e",
    "%2f", "%2F", "%5c", "%00", "%0a", "\\", "..;", "..%3b", ";x", "#", "%23",
    "?", "%3F", "\u00e9", "%c3%a9", "%7e", "~", "%25", "%", "a%2", "*", "%20",
]  # fmt: skip
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PROPFIND", "MKCOL"]
# The two parsers disagree on these (SPEC §8): C refuses, Python upper-cases.
ODD_METHODS = ["get", "GeT", "pUT", "M-SEARCH", "PATCH"]
HOSTS = ["gateway.test", "public.example.com", "PUBLIC.example.com:80", "evil"]


def basic(login: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()


def header_choices(tokens: Tokens) -> list[str]:
    good, read, other = tokens.good, tokens.read, tokens.other
    return [
        f"Authorization: Bearer {good}",
        f"Authorization: Bearer {read}",
        f"Authorization: Bearer {other}",
        f"Authorization: Bearer {tokens.forged}",
        f"Authorization: Bearer {tokens.unknown}",
        f"Authorization: bearer {good}",
        f"Authorization: Bearer {good} extra",
        "Authorization: Bearer",
        f"Authorization: {basic('alice', good)}",
        f"Authorization: {basic('bob', good)}",
        f"Authorization: {basic('alice', '')}",
        "Authorization: Basic !!!",
        "Authorization: Digest username=alice",
        f"X-API-Key: {good}",
        f"X-API-Key: {tokens.forged}",
        "X-Patgate-User: root",
        "X_Patgate_User: root",
        "x-patgate-scopes: *",
        "Connection: X-Patgate-User",
        "X-Forwarded-For: 10.0.0.1",
        "X-Forwarded-Host: public.example.com",
        "Transfer-Encoding: chunked",
        "Content-Length: 0",
        "Expect: 100-continue",
    ]


def query_choices(tokens: Tokens) -> list[str]:
    return [
        f"access_token={tokens.good}",
        f"session={tokens.read}",
        f"access_token={tokens.other}",
        f"session={tokens.forged}",
        f"access%5Ftoken={tokens.good}",
        "access_token=",
        "x=/../../api/x",
        "q=%zz",
        "a=1;b=2",
        "",
    ]


def requests(tokens: Tokens) -> st.SearchStrategy[bytes]:
    segment = st.one_of(
        st.sampled_from(BENIGN_SEGMENTS), st.sampled_from(TRICKY_SEGMENTS)
    )
    segments = st.lists(segment, min_size=1, max_size=5)
    path = st.builds(
        lambda first, rest, slash: "/" + "/".join([first, *rest]) + slash,
        st.sampled_from(["api", "public", "admin", "hosted", "", "%2e%2e"]),
        segments,
        st.sampled_from(["", "/"]),
    )
    query = st.lists(st.sampled_from(query_choices(tokens)), max_size=3)
    headers = st.lists(st.sampled_from(header_choices(tokens)), max_size=3)

    def assemble(
        method: str, path: str, query: list[str], host: str, headers: list[str]
    ) -> bytes:
        target = path + ("?" + "&".join(query) if query else "")
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", *headers]
        body = "0\r\n\r\n" if "Transfer-Encoding: chunked" in headers else ""
        lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode("utf-8")

    method = st.sampled_from(METHODS * 4 + ODD_METHODS)
    return st.builds(assemble, method, path, query, st.sampled_from(HOSTS), headers)


def _broken(value: str) -> str:
    """``value`` with a checksum that no longer matches."""
    return value[:-1] + ("0" if value[-1] != "0" else "1")


def _forms(value: str) -> list[bytes]:
    """How a token value can appear in a raw request: as is, or inside Basic."""
    basics = (basic(login, value).split()[1] for login in ("alice", "bob"))
    return [value.encode(), *(b.encode() for b in basics)]


def send_blocking(address: tuple[str, int], raw: bytes) -> bytes:
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(raw)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def check_forwarded(raw: bytes, tokens: Tokens, upstream: RecordingUpstream) -> str:
    """The invariants for one request that reached the upstream; its route kind."""
    (seen,) = upstream.requests
    path = seen.raw_path.partition("?")[0]
    assert normalise_path(path) == path, seen.raw_path
    identity = sorted(
        header_key(name) for name in seen.headers if header_key(name) in IDENTITY
    )
    assert seen.headers.getall("X-Forwarded-For") == ["127.0.0.1"]
    user = seen.headers.get("X-Patgate-User")
    if user is None:
        # Only the public routes forward without a token.
        assert identity == []
        route = path.split("/")[1]
        assert route in ("public", "hosted"), seen.raw_path
        if route == "hosted":
            assert b"host: public.example.com" in raw.lower()
        return "public"
    # Exactly the gateway's three, once each: no spoofed spelling rode along.
    assert identity == sorted(IDENTITY), identity
    token_id = seen.headers["X-Patgate-Token-Id"]
    presented = [v for v in tokens.live() if any(f in raw for f in _forms(v))]
    assert token_id in {tokens.live()[v] for v in presented}, (token_id, raw)
    assert user == ("bob" if token_id == tokens.other[4:12] else "alice")
    text = (
        seen.raw_path + "\n" + "\n".join(f"{k}: {v}" for k, v in seen.headers.items())
    )
    for value in tokens.all():
        assert value not in text
    return "token"


async def test_fuzzed_requests_never_5xx_and_never_pass_without_a_token(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    tokens = Tokens(
        good=await gateway.token("alice"),
        read=await gateway.token("alice", scopes=["api:read"]),
        other=await gateway.token("bob"),
        forged=_broken(format_token("pgt", "Forged00", "F" * 32)),
        unknown=format_token("pgt", "Nobody00", "N" * 32),
    )
    host, _, port = gateway.host.rpartition(":")
    address = (host, int(port))
    kinds: dict[str, int] = {"public": 0, "token": 0, "refused": 0}

    @settings(
        max_examples=200,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(requests(tokens))
    def one_request(raw: bytes) -> None:
        upstream.requests.clear()
        answers = parse_responses(send_blocking(address, raw))
        # "Expect: 100-continue" may be answered with an interim 100 first.
        responses = [r for r in answers if r.status >= 200]
        assert len(responses) == 1, raw
        (response,) = responses
        assert response.status < 500, (raw, response.status, response.body[:300])
        assert len(upstream.requests) <= 1
        if upstream.requests:
            kinds[check_forwarded(raw, tokens, upstream)] += 1
        else:
            assert response.status >= 400, raw
            kinds["refused"] += 1

    await asyncio.to_thread(one_request)
    # The run is only worth something if it reached every outcome.
    assert all(count > 0 for count in kinds.values()), kinds
