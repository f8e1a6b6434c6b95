"""``100 Continue`` is sent only once the request is authorised.

Issue 11, finding 15: aiohttp answers ``Expect: 100-continue`` itself, at
once, before the gateway has looked at the request, so a client without a
token (or with one that may not write there) is invited to send its whole
upload before it gets its 401/403; and its 417 for another expectation
quoted the header back. Stopped in ``web.protocol.answer_expect`` (the
catch-all route's ``expect_handler``: never sends 100, a fixed 417 for any
other expectation) and ``ProxyHandler._forward`` (sends 100 after every
check, just before the body is streamed upstream).
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from patgate.tokens import new_token
from tests.gateway_harness import Gateway, RecordingUpstream
from tests.security.conftest import parse_responses

BODY = b"x" * 100_000
WAIT = 2.0  # longer than a client waits for 100 before it sends anyway


def upload(
    path: str, *headers: str, expect: str = "100-continue", version: str = "1.1"
) -> bytes:
    lines = [
        f"PUT {path} HTTP/{version}",
        "Host: gateway.test",
        f"Content-Length: {len(BODY)}",
        f"Expect: {expect}",
        "Connection: close",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def first_answer(
    gateway: Gateway, head: bytes
) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    """Send only ``head``; what the gateway says before any body byte."""
    host, _, port = gateway.host.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head)
    await writer.drain()
    received = b""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(WAIT):
            while b"\r\n\r\n" not in received:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                received += chunk
    return received, reader, writer


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


@pytest.mark.parametrize(
    ("path", "credential", "status"),
    [
        ("/api/x", None, b"401"),
        ("/api/x", "bearer:unknown", b"401"),
        ("/api/x", "bearer:readonly", b"403"),  # PUT needs api:write
        ("/nowhere", None, b"404"),
        ("/api/a%2fb", None, b"400"),
    ],
)
async def test_refused_upload_gets_its_answer_without_100_continue(
    gateway: Gateway,
    upstream: RecordingUpstream,
    path: str,
    credential: str | None,
    status: bytes,
) -> None:
    headers: list[str] = []
    if credential == "bearer:unknown":
        headers.append(f"Authorization: Bearer {new_token().value}")
    elif credential == "bearer:readonly":
        token = await gateway.token("alice", scopes=["api:read"])
        headers.append(f"Authorization: Bearer {token}")
    received, _, writer = await first_answer(gateway, upload(path, *headers))
    await close(writer)
    assert received.startswith(b"HTTP/1.1 " + status), received[:80]
    assert b"100 Continue" not in received
    assert upstream.requests == []


async def test_authorised_upload_gets_100_continue_then_its_body_forwarded(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    token = await gateway.token("alice")
    received, reader, writer = await first_answer(
        gateway, upload("/api/x", f"Authorization: Bearer {token}")
    )
    try:
        assert received == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(BODY)
        await writer.drain()
        async with asyncio.timeout(10):
            rest = await reader.read()
    finally:
        await close(writer)
    (response,) = parse_responses(rest)
    assert response.status == 200
    assert upstream.last.body_size == len(BODY)


async def test_public_upload_gets_100_continue(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    received, _, writer = await first_answer(gateway, upload("/public/x"))
    await close(writer)
    assert received == b"HTTP/1.1 100 Continue\r\n\r\n"


@pytest.mark.parametrize(
    "expect", ["pgt-like-secret-value", "100-continue, x-secret", "x-secret"]
)
async def test_unknown_expectation_is_a_417_that_quotes_nothing(
    gateway: Gateway, upstream: RecordingUpstream, expect: str
) -> None:
    token = await gateway.token("alice")
    received, _, writer = await first_answer(
        gateway, upload("/api/x", f"Authorization: Bearer {token}", expect=expect)
    )
    await close(writer)
    assert received.startswith(b"HTTP/1.1 417 ")
    assert expect.encode() not in received
    assert upstream.requests == []


async def test_http_1_0_expect_is_ignored(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    host, _, port = gateway.host.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(upload("/public/x", version="1.0") + BODY)
        await writer.drain()
        async with asyncio.timeout(10):
            data = await reader.read()
    finally:
        await close(writer)
    assert data.startswith(b"HTTP/1.0 200 ")
    assert b"100 Continue" not in data
    assert upstream.last.body_size == len(BODY)


async def test_refused_upload_closes_the_connection_it_cannot_reuse(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    # Without Connection: close. The body never comes, so a next request on
    # the connection would be read as that body: the gateway says it closes
    # (aiohttp then reads and drops what comes, up to its lingering time).
    head = upload("/api/x").replace(b"Connection: close\r\n", b"")
    received, reader, writer = await first_answer(gateway, head)
    try:
        assert received.startswith(b"HTTP/1.1 401 ")
        assert b"Connection: close" in received
        writer.write(b"GET /public/next HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
        await writer.drain()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                assert await reader.read(65536) == b""
    finally:
        await close(writer)
    assert upstream.requests == []
