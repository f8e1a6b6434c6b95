"""Two HTTP parsers: whatever aiohttp's parser accepts, the gateway checks it.

SPEC §8 "Two HTTP parsers": aiohttp's C (llhttp) and pure-Python parsers
disagree on odd input (``GeT``, bare LF, obs-fold). This whole directory
runs under both: ``.venv/bin/pytest tests/security`` and
``AIOHTTP_NO_EXTENSIONS=1 .venv/bin/pytest tests/security``. The tests here
pin the disagreements that matter: the method the gateway authorises must be
the method it forwards, whichever parser read it.
"""

from __future__ import annotations

import os

import pytest
from aiohttp import http_parser

from tests.gateway_harness import Gateway, RecordingUpstream
from tests.security.conftest import bearer, exchange, parse_responses, parser_name


def test_the_parser_in_use_is_the_one_asked_for() -> None:
    wanted = "Python" if os.environ.get("AIOHTTP_NO_EXTENSIONS") else "C"
    assert parser_name() == wanted
    if wanted == "C":
        # Not silently the fallback because the extension failed to build.
        assert http_parser.HttpRequestParser is not http_parser.HttpRequestParserPy


@pytest.mark.parametrize(
    ("method", "canonical"),
    [("GeT", "GET"), ("get", "GET"), ("pUT", "PUT"), ("delete", "DELETE")],
)
async def test_odd_case_method_is_refused_or_checked_as_forwarded(
    gateway: Gateway, upstream: RecordingUpstream, method: str, canonical: str
) -> None:
    # A "GET: api:read" rule must never let "pUT" through as a read.
    token = await gateway.token("alice", scopes=["api:read"])
    raw = (
        f"{method} /api/x HTTP/1.1\r\nHost: gateway.test\r\n{bearer(token)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    (response,) = parse_responses(await exchange(gateway, raw))
    if parser_name() == "C":
        assert response.status == 400  # llhttp knows methods in upper case only
        assert upstream.requests == []
    elif canonical == "GET":
        assert response.status == 200
        assert [seen.method for seen in upstream.requests] == ["GET"]
    else:
        assert response.status == 403
        assert upstream.requests == []


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /api/x HTTP/1.1\nHost: gateway.test\n\n",
        b"GET /api/x HTTP/1.1\r\nHost: gateway.test\r\nX-A: 1\r\n\tX-Patgate-User: root"
        b"\r\n\r\n",
        b"GET /api/x HTTP/1.1\r\nHost: gateway.test\r\nX-A: 1\r\n X-B: 2\r\n\r\n",
    ],
    ids=["bare LF", "obs-fold with tab", "obs-fold with space"],
)
async def test_parser_disagreements_are_refusals_on_both(
    gateway: Gateway, upstream: RecordingUpstream, raw: bytes
) -> None:
    responses = parse_responses(await exchange(gateway, raw, idle=2.0))
    assert [r.status for r in responses] == [400]
    assert upstream.requests == []
