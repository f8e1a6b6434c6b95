"""No answer and no log line holds a token value, however the request spelled it.

Issue 11, finding 12: aiohttp answers a request it cannot parse with a body
quoting the raw request line or header (``get /x?session=pgt_...``, a
control character after a Bearer value, an over-long header), and the
access log wrote ``/public/pgt%5F...`` as sent. The class: any place where
raw request text reaches an answer or a log line. Stopped in
``web.protocol.GatewayRequestHandler.handle_error`` (a fixed JSON body),
``web.ops.access`` (a parse error is logged without its message) and
``logs.redact_text`` (token-shaped values redacted in the text and in every
percent-decoding of it; the access log's method and path pass through it).

Logs are captured as ``patgate serve`` writes them: structlog rendered to
JSON, with the standard library's records (aiohttp's) routed through it.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Iterator
from urllib.parse import unquote

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patgate.logs import configure_logging
from patgate.tokens import new_token
from patgate.web.ops.access import route_library_logs
from tests.gateway_harness import Gateway
from tests.security.conftest import exchange, parse_responses

LONG = 9000  # over limits.max_header_bytes / max_url_bytes (8190)


@pytest.fixture
def served_log(gateway: Gateway) -> Iterator[io.StringIO]:
    """Every log line the gateway writes, rendered as ``patgate serve`` does."""
    out = io.StringIO()
    configure_logging(level="debug", json=True, stream=out)
    gateway.access_log.stream = out
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    route_library_logs()
    try:
        yield out
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
        structlog.reset_defaults()
        gateway.access_log.flush()
        gateway.access_log.stream = None


def betrayals(token: str) -> list[str]:
    """What would give ``token`` away: itself, its secret, Basic forms."""
    secret = token.split("_", 1)[1][8:40]
    forms = [token, secret]
    forms.extend(base64.b64encode(f"{u}:{token}".encode()).decode() for u in ("", "a"))
    return forms


def decodings(text: str) -> list[str]:
    forms = [text]
    while (decoded := unquote(forms[-1])) != forms[-1]:
        forms.append(decoded)
    return forms


def assert_nothing_betrays(token: str, *texts: str) -> None:
    for text in texts:
        for form in decodings(text):
            for secret in betrayals(token):
                assert secret not in form


def answer_text(raw: bytes) -> str:
    return raw.decode("latin-1")


def spell(token: str, how: str) -> str:
    body = token.split("_", 1)[1]
    if how == "%5F":
        return token.split("_", 1)[0] + "%5F" + body
    if how == "%255F":
        return token.split("_", 1)[0] + "%255F" + body
    if how == "all":
        return "".join(f"%{ord(c):02X}" for c in token)
    return token


# Requests that aiohttp refuses while parsing, each quoting the token in
# its error message before the fix; and paths the access log writes.
def shapes(token: str) -> list[bytes]:
    t = token.encode()
    end = b"\r\nHost: gateway.test\r\nConnection: close\r\n\r\n"
    return [
        b"get /public/x?session=" + t + b" HTTP/1.1" + end,
        b"GET /public/x?session="
        + t
        + b" HTTP/1.1\r\nAuthorization: Bearer "
        + t
        + b"\x01"
        + end,
        b"GET /public/x HTTP/1.1\r\nAuthorization: Bearer " + t + b"A" * LONG + end,
        b"GET /public/x?session=" + t + b"A" * LONG + b" HTTP/1.1" + end,
        b"GET /public/x HTTP/1.1\r\n" + t + b"A" * LONG + b": 1" + end,
        b"GET /public/x HTTP/" + t + end,
        b"GET /public/x " + t + b" HTTP/1.1" + end,
        b"GET /public/x HTTP/1.1\r\nContent-Length: " + t + end,
        b"GET /public/x HTTP/1.1\r\nTransfer-Encoding: " + t + end,
        b"POST /public/x HTTP/1.1\r\nTransfer-Encoding: chunked"
        + end
        + b"zz;"
        + t
        + b"\r\n",
        b"GET /public/x HTTP/1.1\r\nX-A: " + t + b"\r\n " + t + end,
        b"GET /public/x HTTP/1.1\r\nHost: " + t + b"\r\nConnection: close\r\n\r\n",
        b"GET /api/" + spell(token, "%5F").encode() + b" HTTP/1.1" + end,
        b"GET /nowhere/" + spell(token, "%255F").encode() + b"/x HTTP/1.1" + end,
        b"GET /api/" + spell(token, "all").encode() + b" HTTP/1.1" + end,
        t + b" /nowhere HTTP/1.1" + end,
        b"PUT /api/x HTTP/1.1\r\nExpect: " + t + b"\r\nContent-Length: 5" + end,
    ]


@pytest.mark.parametrize("index", range(17))
async def test_refused_or_logged_request_never_echoes_its_token(
    gateway: Gateway, served_log: io.StringIO, index: int
) -> None:
    token = new_token().value
    raw = shapes(token)[index]
    answer = await exchange(gateway, raw, idle=2.0)
    gateway.access_log.flush()
    assert answer.startswith(b"HTTP/1.1 ") or answer.startswith(b"HTTP/1.0 ")
    assert_nothing_betrays(token, answer_text(answer), served_log.getvalue())


async def test_parse_error_answer_is_the_gateways_fixed_json(
    gateway: Gateway,
) -> None:
    token = new_token().value
    (response,) = parse_responses(await exchange(gateway, shapes(token)[1]))
    assert response.status == 400
    assert response.headers["Content-Type"] == "application/json"
    assert response.body == (
        b'{"error": "invalid_request", "message": "The request is malformed."}'
    )


async def test_access_log_keeps_the_path_but_not_the_token(
    gateway: Gateway, served_log: io.StringIO
) -> None:
    token = new_token().value
    path = "/api/a%20b/" + spell(token, "%5F") + "/c%2Fd"
    await exchange(gateway, f"GET {path} HTTP/1.1\r\nHost: g\r\n\r\n".encode(), idle=1)
    gateway.access_log.flush()
    assert '"path": "/api/a%20b/[REDACTED]/c%2Fd"' in served_log.getvalue()


_ENCODINGS = st.sampled_from(["plain", "%5F", "%255F", "all"])
_PLACES = st.sampled_from(
    ["path", "query", "header", "name", "method", "version", "length", "host"]
)
_JUNK = st.sampled_from([b"", b"\x01", b"\x7f", b"A" * LONG, b" x"])


def build(token: str, place: str, how: str, junk: bytes, lower: bool) -> bytes:
    value = spell(token, how).encode() + junk
    # /api/ without a credential: the gateway answers (401) itself; what a
    # public route forwards is the upstream's to answer.
    method, target, version = b"GET", b"/api/x", b"HTTP/1.1"
    headers = [b"Host: gateway.test"]
    if place == "path":
        target = b"/api/" + value
    elif place == "query":
        target = b"/api/x?session=" + value
    elif place == "header":
        headers.append(b"Authorization: Bearer " + value)
    elif place == "name":
        headers.append(value + b": 1")
    elif place == "method":
        method, target = value, b"/nowhere"
    elif place == "version":
        version = b"HTTP/" + value
    elif place == "length":
        headers.append(b"Content-Length: " + value)
    else:
        headers = [b"Host: " + value]
    if lower:
        method = method.lower()
    head = b" ".join((method, target, version))
    return b"\r\n".join([head, *headers, b"Connection: close"]) + b"\r\n\r\n"


@settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(place=_PLACES, how=_ENCODINGS, junk=_JUNK, lower=st.booleans())
async def test_property_no_spelling_of_a_token_is_echoed_or_logged(
    gateway: Gateway,
    served_log: io.StringIO,
    place: str,
    how: str,
    junk: bytes,
    lower: bool,
) -> None:
    token = new_token().value
    answer = await exchange(gateway, build(token, place, how, junk, lower), idle=2.0)
    gateway.access_log.flush()
    assert answer[:9] in (b"HTTP/1.1 ", b"HTTP/1.0 ")
    assert b" 500 " not in answer.split(b"\r\n", 1)[0]
    assert_nothing_betrays(token, answer_text(answer), served_log.getvalue())
