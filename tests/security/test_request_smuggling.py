"""Malformed HTTP/1.1 over raw sockets: smuggling shapes and parser edge cases.

SPEC §3 "Limits" and §8 "Two HTTP parsers"; issue 5 "request smuggling
shapes". The gateway terminates HTTP/1.1 itself (aiohttp's server parser,
C or pure Python), so the attacks here are: a second request hidden inside
the first that reaches the upstream unchecked, a header that means one thing
to the gateway and another upstream, and input that crashes the gateway
(5xx). Stopped by aiohttp's parsers (configured in ``web.app`` with the
``limits`` sizes), by ``web.gateway.headers`` (what is re-sent upstream), and by
``web.gateway.proxy`` re-framing every body itself (Content-Length is never copied).

Every case must end in a refusal (4xx, or a closed connection) or in a
well-formed exchange; no response may be a 5xx; the upstream must never see
a request it was not meant to, nor any of the smuggled path.
"""

from __future__ import annotations

import pytest

from tests.gateway_harness import Gateway, RecordingUpstream
from tests.security.conftest import (
    RawResponse,
    bearer,
    exchange,
    parse_responses,
    request,
    send_raw,
)

SMUGGLED = b"GET /api/smuggled HTTP/1.1\r\nHost: gateway.test\r\n\r\n"


def assert_nothing_smuggled(
    upstream: RecordingUpstream, responses: list[RawResponse]
) -> None:
    assert all(response.status < 500 for response in responses), [
        (r.status, r.body[:200]) for r in responses
    ]
    assert not any("smuggled" in seen.raw_path for seen in upstream.requests)
    assert not any(b"smuggled" in seen.body for seen in upstream.requests)


def head(lines: list[bytes]) -> bytes:
    return b"\r\n".join(lines) + b"\r\n\r\n"


# Each of these is ambiguous about where the body ends (or is not HTTP/1.1 at
# all): the gateway must refuse it, not guess.
MUST_REFUSE: dict[str, bytes] = {
    "CL and TE": head(
        [
            b"POST /public/x HTTP/1.1",
            b"Host: gateway.test",
            b"Content-Length: 4",
            b"Transfer-Encoding: chunked",
        ]
    )
    + b"0\r\n\r\n"
    + SMUGGLED,
    "TE and CL": head(
        [
            b"POST /public/x HTTP/1.1",
            b"Host: gateway.test",
            b"Transfer-Encoding: chunked",
            b"Content-Length: 48",
        ]
    )
    + b"0\r\n\r\n"
    + SMUGGLED,
    "two different CL": head(
        [
            b"POST /public/x HTTP/1.1",
            b"Host: gateway.test",
            b"Content-Length: 0",
            b"Content-Length: %d" % len(SMUGGLED),
        ]
    )
    + SMUGGLED,
    "two equal CL": head(
        [
            b"POST /public/x HTTP/1.1",
            b"Host: gateway.test",
            b"Content-Length: 4",
            b"Content-Length: 4",
        ]
    )
    + b"abcd",
    "CL list": head(
        [b"POST /public/x HTTP/1.1", b"Host: gateway.test", b"Content-Length: 4, 4"]
    )
    + b"abcd",
    "CL with sign": head(
        [b"POST /public/x HTTP/1.1", b"Host: gateway.test", b"Content-Length: +4"]
    )
    + b"abcd",
    "CL negative": head(
        [b"POST /public/x HTTP/1.1", b"Host: gateway.test", b"Content-Length: -1"]
    )
    + b"abcd",
    "CL hex": head(
        [b"POST /public/x HTTP/1.1", b"Host: gateway.test", b"Content-Length: 0x4"]
    )
    + b"abcd",
    "CL overflow": head(
        [
            b"POST /public/x HTTP/1.1",
            b"Host: gateway.test",
            b"Content-Length: 99999999999999999999999",
        ]
    )
    + b"abcd",
    "TE twice": head(
        [
            b"POST /public/x HTTP/1.1",
            b"Host: gateway.test",
            b"Transfer-Encoding: chunked",
            b"Transfer-Encoding: identity",
        ]
    )
    + b"0\r\n\r\n"
    + SMUGGLED,
    "TE chunked not last": head(
        [
            b"POST /public/x HTTP/1.1",
            b"Host: gateway.test",
            b"Transfer-Encoding: chunked, identity",
        ]
    )
    + b"0\r\n\r\n"
    + SMUGGLED,
    "TE unknown": head(
        [
            b"POST /public/x HTTP/1.1",
            b"Host: gateway.test",
            b"Transfer-Encoding: xchunked",
        ]
    )
    + b"0\r\n\r\n"
    + SMUGGLED,
    "TE with vertical tab": head(
        [
            b"POST /public/x HTTP/1.1",
            b"Host: gateway.test",
            b"Transfer-Encoding: chunked\x0b",
        ]
    )
    + b"0\r\n\r\n"
    + SMUGGLED,
    "space before colon": head(
        [
            b"POST /public/x HTTP/1.1",
            b"Host: gateway.test",
            b"Transfer-Encoding : chunked",
        ]
    )
    + b"0\r\n\r\n"
    + SMUGGLED,
    "obs-fold": head(
        [
            b"GET /public/x HTTP/1.1",
            b"Host: gateway.test",
            b"X-Folded: a",
            b" X-Patgate-User: root",
        ]
    ),
    "obs-fold on TE": head(
        [
            b"POST /public/x HTTP/1.1",
            b"Host: gateway.test",
            b"Transfer-Encoding:",
            b" chunked",
        ]
    )
    + b"0\r\n\r\n"
    + SMUGGLED,
    "bare LF": b"GET /public/x HTTP/1.1\nHost: gateway.test\n\n" + SMUGGLED,
    "bare LF in one header": b"GET /public/x HTTP/1.1\r\nHost: gateway.test\n"
    b"X-Patgate-User: root\r\n\r\n",
    "bare CR in a value": head(
        [
            b"GET /public/x HTTP/1.1",
            b"Host: gateway.test",
            b"X-A: a\rX-Patgate-User: root",
        ]
    ),
    "NUL in a value": head(
        [b"GET /public/x HTTP/1.1", b"Host: gateway.test", b"X-A: a\x00b"]
    ),
    "non-token header name": head(
        [
            b"GET /public/x HTTP/1.1",
            b"Host: gateway.test",
            b"X-Patgate-U\xc5\xbfer: root",
        ]
    ),
    "chunk size LF only": head(
        [
            b"POST /public/x HTTP/1.1",
            b"Host: gateway.test",
            b"Transfer-Encoding: chunked",
        ]
    )
    + b"4\nabcd\r\n0\r\n\r\n"
    + SMUGGLED,
    "chunk data LF only": head(
        [
            b"POST /public/x HTTP/1.1",
            b"Host: gateway.test",
            b"Transfer-Encoding: chunked",
        ]
    )
    + b"4\r\nabcd\n0\r\n\r\n"
    + SMUGGLED,
    "chunk size hex prefix": head(
        [
            b"POST /public/x HTTP/1.1",
            b"Host: gateway.test",
            b"Transfer-Encoding: chunked",
        ]
    )
    + b"0x4\r\nabcd\r\n0\r\n\r\n",
    "chunk size overflow": head(
        [
            b"POST /public/x HTTP/1.1",
            b"Host: gateway.test",
            b"Transfer-Encoding: chunked",
        ]
    )
    + b"ffffffffffffffffffff\r\nabcd\r\n0\r\n\r\n"
    + SMUGGLED,
    "chunk extension with bare LF": head(
        [
            b"POST /public/x HTTP/1.1",
            b"Host: gateway.test",
            b"Transfer-Encoding: chunked",
        ]
    )
    + b"4;a\nb\r\nabcd\r\n0\r\n\r\n"
    + SMUGGLED,
    "chunk longer than its size": head(
        [
            b"POST /public/x HTTP/1.1",
            b"Host: gateway.test",
            b"Transfer-Encoding: chunked",
        ]
    )
    + b"4\r\nabcdX\r\n0\r\n\r\n"
    + SMUGGLED,
    "two Host headers": head(
        [b"GET /public/x HTTP/1.1", b"Host: gateway.test", b"Host: public.example.com"]
    ),
    "no Host in HTTP/1.1": b"GET /public/x HTTP/1.1\r\n\r\n",
    "junk after version": head(
        [b"GET /public/x HTTP/1.1 extra", b"Host: gateway.test"]
    ),
    "bad version": head([b"GET /public/x HTTP/1.10", b"Host: gateway.test"]),
    "huge header": head(
        [b"GET /public/x HTTP/1.1", b"Host: gateway.test", b"X-Big: " + b"a" * 9000]
    ),
    "huge URL": head([b"GET /public/" + b"a" * 9000 + b" HTTP/1.1", b"Host: x"]),
    "too many headers": head(
        [b"GET /public/x HTTP/1.1", b"Host: gateway.test"]
        + [b"X-H%d: v" % i for i in range(500)]
    ),
    "NUL in the path": head([b"GET /public/x\x00y HTTP/1.1", b"Host: gateway.test"]),
    "DEL in the path": head([b"GET /public/x\x7f HTTP/1.1", b"Host: gateway.test"]),
    "raw non-ASCII path": head([b"GET /public/\xff HTTP/1.1", b"Host: gateway.test"]),
}


@pytest.mark.parametrize("shape", list(MUST_REFUSE))
async def test_ambiguous_message_is_refused_and_nothing_is_smuggled(
    gateway: Gateway, upstream: RecordingUpstream, shape: str
) -> None:
    raw = await exchange(gateway, MUST_REFUSE[shape], idle=1.0)
    # A refusal is a 4xx then close, or (pure-Python parser, on overflowing
    # numbers) a closed connection with no answer at all.
    responses = parse_responses(raw)
    assert [r.status for r in responses][:1] in ([], [400], [414], [431])
    assert len(responses) <= 1
    assert_nothing_smuggled(upstream, responses)
    assert upstream.requests == []


async def test_body_of_a_forwarded_request_is_not_a_second_request(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    """A body that looks like a request is a body; what follows it is checked."""
    raw = request("/public/x", method="POST", body=SMUGGLED, close=False)
    raw += request("/api/after")
    responses = await send_raw(gateway, raw)
    assert [r.status for r in responses] == [200, 401]
    assert [seen.raw_path for seen in upstream.requests] == ["/public/x"]
    assert upstream.last.body == SMUGGLED
    assert upstream.last.headers["Content-Length"] == str(len(SMUGGLED))


async def test_unread_body_of_a_refused_request_is_not_a_second_request(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    # The 401 goes out before the body is read; the body must still be
    # consumed as a body, not parsed as the next request.
    raw = request("/api/x", method="POST", body=SMUGGLED, close=False)
    raw += request("/public/after")
    responses = await send_raw(gateway, raw)
    assert [r.status for r in responses] in ([401, 200], [401])
    assert_nothing_smuggled(upstream, responses)
    assert [seen.raw_path for seen in upstream.requests] in (
        ["/public/after"],
        [],
    )


async def test_chunked_body_is_reframed_not_passed_through(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    body = b"4;ext=1\r\nabcd\r\n3\r\nefg\r\n0\r\nX-Trailer: 1\r\n\r\n"
    raw = (
        head(
            [
                b"POST /public/x HTTP/1.1",
                b"Host: gateway.test",
                b"Transfer-Encoding: chunked",
            ]
        )
        + body
        + request("/api/after")
    )
    responses = await send_raw(gateway, raw)
    assert [r.status for r in responses] == [200, 401]
    assert [seen.raw_path for seen in upstream.requests] == ["/public/x"]
    assert upstream.last.body == b"abcdefg"
    assert "X-Trailer" not in upstream.last.headers


async def test_pipelined_requests_are_each_authorised(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    token = await gateway.token("alice", scopes=["api:read"])
    raw = (
        request("/api/one", bearer(token), close=False)
        + request("/api/two", close=False)  # the token does not carry over
        + request("/api/three", bearer(token), method="DELETE", close=False)
        + request("/api/four", bearer(token))
    )
    responses = await send_raw(gateway, raw)
    assert [r.status for r in responses] == [200, 401, 403, 200]
    assert [seen.raw_path for seen in upstream.requests] == ["/api/one", "/api/four"]


async def test_lenient_request_line_spacing_stays_on_the_checked_path(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    # The two parsers disagree on "GET  /x" and "GET\t/x"; whichever accepts
    # it must route, check and forward the same path.
    for line in (b"GET  /api/x HTTP/1.1", b"GET\t/api/x HTTP/1.1"):
        responses = parse_responses(
            await exchange(gateway, head([line, b"Host: gateway.test"]), idle=2.0)
        )
        assert [r.status for r in responses] in ([400], [401])
    assert upstream.requests == []


@pytest.mark.parametrize(
    "raw",
    [
        head([b"GET /public/x HTTP/1.1", b"Host: gateway.test", b"X-A: \xff\xfe"]),
        head([b"GET /public/x HTTP/1.1", b"Host: \xff\xfe"]),
        head(
            [
                b"GET /public/x HTTP/1.1",
                b"Host: gateway.test",
                b"Authorization: Bearer \xff\xfe",
            ]
        ),
        head(
            [
                b"GET /public/x HTTP/1.1",
                b"Host: gateway.test",
                b"X-Patgate-User: \xff",
            ]
        ),
    ],
    ids=["any header", "Host", "Authorization on a public route", "identity"],
)
async def test_non_utf8_header_value_is_never_a_gateway_error(
    gateway: Gateway, upstream: RecordingUpstream, raw: bytes
) -> None:
    """Bytes that are not UTF-8 cannot be forwarded as sent: they are dropped.

    Before the fix the pure-Python writer raised UnicodeEncodeError (a 500)
    and the C writer silently deleted the bytes.
    """
    responses = await send_raw(gateway, raw + request("/public/after"))
    # A Host that is not host[:port] is refused (test_host_list.py).
    first = 400 if b"\r\nHost: \xff" in raw else 200
    assert [r.status for r in responses] == [first, 200]
    for seen in upstream.requests:
        for name, value in seen.headers.items():
            assert "\ufffd" not in value
            assert name.lower() not in ("x-a", "authorization", "x-patgate-user")


@pytest.mark.parametrize("query", [b"q=\xff", b"access_token=\xff\xfe", b"q=\xc3("])
async def test_raw_non_utf8_query_is_refused_not_a_gateway_error(
    gateway: Gateway, upstream: RecordingUpstream, query: bytes
) -> None:
    responses = await send_raw(
        gateway,
        head(
            [
                b"GET /public/x?" + query + b" HTTP/1.1",
                b"Host: gateway.test",
                b"Connection: close",
            ]
        ),
    )
    assert [r.status for r in responses] == [400]
    assert upstream.requests == []
