"""A patgate token never reaches an upstream, whatever header or parameter holds it.

Issue 11, finding 9: a token still reached ``auth: none`` upstreams in a
second ``Authorization`` or ``X-API-Key`` header, in ``X_API_Key``, or as
``Authorization: Token ...``; and a token route forwarded what its own
credential sources did not read (an ``X-API-Key`` on a Bearer-only route,
``?access_token=`` on a route without ``query``). The class: any header
(name or value, any spelling, any repeat) or query pair that carries a
well-formed token, plain, percent-encoded (any depth) or in Basic
credentials, on every route. Stopped in ``extract.carries_token`` called
from ``web.gateway.headers.upstream_headers`` (one pass over the headers) and in
``extract.strip_token_pairs`` on the forwarded query. Values that only look
like a token (bad checksum, another prefix) and foreign credentials pass.
"""

from __future__ import annotations

import base64
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patgate.tokens import new_token
from tests.gateway_harness import Gateway, RecordingUpstream
from tests.security.conftest import StartGateway, bearer, request, send_raw

ROUTES = """\
  - name: api
    prefix: /api/
    upstream: {upstream}
    credentials: [bearer]
  - name: public
    prefix: /public/
    upstream: {upstream}
    auth: none
"""


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def percent(text: str) -> str:
    return "".join(f"%{ord(c):02X}" for c in text)


# Header lines that carry the token T, one or more per request.
CARRIERS = [
    ["Authorization: Token {T}"],
    ["Authorization: token {T}"],
    ["Authorization: {T}"],
    ["Authorization: Bearer  {T}"],
    ["Authorization: Basic {b64(alice:T)}"],
    ["Authorization: Basic {b64(T:x)}"],
    ["Authorization: basic {b64(T)}"],
    ["Authorization: Bearer upstream-own", "Authorization: Bearer {T}"],
    ["X-API-Key: {T}"],
    ["X-API-Key: upstream-own", "X-API-Key: {T}"],
    ["X-API-Key: {T}", "X-API-Key: {T}"],
    ["X_API_Key: {T}"],
    ["x.api.key: {T}"],
    ["X-Auth-Token: {T}"],
    ["X-Anything: before {T} after"],
    ["Cookie: a=1; session={T}; b=2"],
    ["X-Encoded: pgt%5F{T-body}"],
    ["X-Encoded: {%T}"],
    ["X-Encoded: pgt%255F{T-body}"],
    ["X-Encoded: %2570gt_{T-body}"],
    ["{T}: 1"],
]


def fill(line: str, token: str) -> str:
    body = token.split("_", 1)[1]
    return (
        line.replace("{b64(alice:T)}", b64(f"alice:{token}"))
        .replace("{b64(T:x)}", b64(f"{token}:x"))
        .replace("{b64(T)}", b64(token))
        .replace("{T-body}", body)
        .replace("{%T}", percent(token))
        .replace("{T}", token)
    )


def decodings(text: str) -> list[str]:
    """``text`` and each percent-decoding of it, until nothing changes."""
    forms = [text]
    while (decoded := unquote(forms[-1])) != forms[-1]:
        forms.append(decoded)
    return forms


def upstream_text(upstream: RecordingUpstream) -> str:
    parts: list[str] = []
    for seen in upstream.requests:
        parts.append(seen.raw_path)
        for name, value in seen.headers.items():
            parts.append(f"{name}: {value}")
            if value.lower().startswith("basic "):
                parts.append(base64.b64decode(value[6:] + "==").decode("latin-1"))
    return "\n".join(parts)


def assert_never_forwarded(token: str, upstream: RecordingUpstream) -> None:
    secret = token.split("_", 1)[1][8:40]
    for text in decodings(upstream_text(upstream)):
        assert token not in text
        assert secret not in text


@pytest.fixture
async def gateway(
    make_gateway: StartGateway, upstream: RecordingUpstream, sqlite_url: str
) -> Gateway:
    return await make_gateway(sqlite_url, ROUTES.format(upstream=upstream.url))


@pytest.mark.parametrize("lines", CARRIERS, ids=lambda lines: " + ".join(lines))
async def test_token_in_any_header_never_reaches_a_public_upstream(
    gateway: Gateway, upstream: RecordingUpstream, lines: list[str]
) -> None:
    token = await gateway.token("alice")
    headers = [fill(line, token) for line in lines]
    (response,) = await send_raw(gateway, request("/public/x", *headers))
    assert response.status == 200
    assert_never_forwarded(token, upstream)


@pytest.mark.parametrize(
    "lines",
    [lines for lines in CARRIERS if not lines[0].startswith("Authorization")],
    ids=lambda lines: " + ".join(lines),
)
async def test_token_in_another_header_never_reaches_a_token_upstream(
    gateway: Gateway, upstream: RecordingUpstream, lines: list[str]
) -> None:
    # The route reads Bearer only: the same token elsewhere is not its
    # credential, and was forwarded as it was.
    token = await gateway.token("alice")
    headers = [fill(line, token) for line in lines]
    (response,) = await send_raw(gateway, request("/api/x", bearer(token), *headers))
    assert response.status == 200
    assert upstream.last.headers["X-Patgate-User"] == "alice"
    assert_never_forwarded(token, upstream)


@pytest.mark.parametrize(
    ("query", "forwarded"),
    [
        ("access_token={T}", ""),
        ("a=1&session={T}&b=%2F", "a=1&b=%2F"),
        ("token={T}&k=v", "k=v"),
        ("k=v&x=before-{T}-after", "k=v"),
        ("q=pgt%5F{T-body}&k=v", "k=v"),
        ("q={%T}", ""),
        ("q=pgt%255F{T-body}", ""),
        ("{T}=1&k=v", "k=v"),
        ("a=1;session={T}", ""),
    ],
)
@pytest.mark.parametrize("path", ["/public/x", "/api/x"])
async def test_token_in_any_query_pair_is_stripped_on_every_route(
    gateway: Gateway, upstream: RecordingUpstream, path: str, query: str, forwarded: str
) -> None:
    token = await gateway.token("alice")
    (response,) = await send_raw(
        gateway, request(f"{path}?{fill(query, token)}", bearer(token))
    )
    assert response.status == 200
    assert upstream.last.raw_path == path + ("?" + forwarded if forwarded else "")
    assert_never_forwarded(token, upstream)


@pytest.mark.parametrize(
    "value",
    [
        "upstream-own-secret",
        "pgt_" + "A" * 46,  # the shape without the checksum
        "xyz_{T-body}",  # another prefix
        "pgt-{T-body}",
    ],
)
async def test_values_that_are_not_patgate_tokens_still_pass(
    gateway: Gateway, upstream: RecordingUpstream, value: str
) -> None:
    token = await gateway.token("alice")
    value = fill(value, token)
    (response,) = await send_raw(
        gateway,
        request(
            f"/public/x?k={value}",
            f"Authorization: Bearer {value}",
            f"X-API-Key: {value}",
        ),
    )
    assert response.status == 200
    assert upstream.last.raw_path == f"/public/x?k={value}"
    assert upstream.last.headers["Authorization"] == f"Bearer {value}"
    assert upstream.last.headers["X-API-Key"] == value


_NAME = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_.", min_size=1)
_ASCII = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20)


def _encode(token: str, how: int) -> str:
    if how == 1:  # percent-encode every character
        return percent(token)
    if how == 2:  # percent-encode the "_" twice
        return token.replace("_", "%255F")
    if how == 3:  # inside Basic credentials
        return "Basic " + b64(f"alice:{token}")
    return token


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    name=_NAME,
    before=_ASCII,
    after=_ASCII,
    how=st.integers(0, 3),
    public=st.booleans(),
)
async def test_property_token_in_a_random_header_is_never_forwarded(
    gateway: Gateway,
    upstream: RecordingUpstream,
    name: str,
    before: str,
    after: str,
    how: int,
    public: bool,
) -> None:
    token = new_token().value  # well formed; the store need not know it
    value = _encode(token, how)
    value = value if how == 3 else before + value + after
    path = "/public/x" if public else "/api/x"
    credential = await gateway.token("alice")
    (response,) = await send_raw(
        gateway, request(path, bearer(credential), f"{name}: {value}")
    )
    assert response.status in (200, 400)  # 400: the name was Authorization
    assert_never_forwarded(token, upstream)
    if not public:
        assert_never_forwarded(credential, upstream)


@pytest.mark.parametrize(
    "spelling",
    [
        "{T}",
        "x{T}y",
        "{%T}",
        "{T-prefix}%5F{T-body}",
        "{T-prefix}%255F{T-body}",
        "a;s={T}",
    ],
)
@pytest.mark.parametrize("path", ["/public/", "/api/"])
async def test_a_token_in_the_path_is_refused_and_never_forwarded(
    gateway: Gateway, upstream: RecordingUpstream, path: str, spelling: str
) -> None:
    """A path cannot be cut as a query pair is: a token in it (any spelling,
    any route, a valid credential beside it or not) is a 400 and goes nowhere.
    """
    token = await gateway.token("alice")
    segment = fill(spelling, token).replace("{T-prefix}", token.split("_", 1)[0])
    for headers in ([], [bearer(token)]):
        (response,) = await send_raw(gateway, request(path + segment, *headers))
        assert response.status == 400
        assert b"token" in response.body
        assert_never_forwarded(token, upstream)
    assert upstream.requests == []


async def test_a_path_with_a_token_lookalike_still_passes(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    token = await gateway.token("alice")
    body = token.split("_", 1)[1]
    for lookalike in ("pgt_" + "A" * 46, "xyz_" + body, "pgt-" + body):
        (response,) = await send_raw(gateway, request(f"/public/{lookalike}"))
        assert response.status == 200
    assert len(upstream.requests) == 3
