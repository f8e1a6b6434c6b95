"""A client that dribbles its headers is cut off after ``limits.header_timeout``.

Issue 11, finding 15 (slowloris): aiohttp has no header-read timeout. A
connection that sends nothing, or one header byte every few seconds, was
held open for aiohttp's keep-alive timeout (an hour), so a few hundred of
them exhausted the gateway's file descriptors. Stopped in
``web.protocol.GatewayRequestHandler``: the header block of each request
must arrive within ``limits.header_timeout`` (default 10 s) of the
connection or of its first byte, else a 408 and the connection is closed.
Bodies, idle keep-alive connections and WebSockets are not cut by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from patgate.config.model import Limits
from tests.gateway_harness import Gateway, RecordingUpstream
from tests.security.conftest import ROUTES, StartGateway, parse_responses

pytestmark = pytest.mark.timing  # wall-clock bounds: run alone (scripts/test)

TIMEOUT = 1.0


@pytest.fixture
async def gateway(
    make_gateway: StartGateway, upstream: RecordingUpstream, sqlite_url: str
) -> Gateway:
    return await make_gateway(
        sqlite_url,
        ROUTES.format(upstream=upstream.url),
        extra=f"limits: {{failed_auth_per_minute: 0, header_timeout: {TIMEOUT}}}",
    )


async def connect(
    gateway: Gateway,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, _, port = gateway.host.rpartition(":")
    return await asyncio.open_connection(host, int(port))


async def dribble(
    writer: asyncio.StreamWriter, data: bytes, pause: float, size: int = 1
) -> None:
    """Send ``data`` ``size`` bytes at a time; stop quietly once the gateway hung up."""
    with contextlib.suppress(ConnectionError):
        for start in range(0, len(data), size):
            writer.write(data[start : start + size])
            await writer.drain()
            await asyncio.sleep(pause)


async def read_until_closed(reader: asyncio.StreamReader, limit: float) -> bytes:
    async with asyncio.timeout(limit):
        data = b""
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                data += chunk
        return data


def test_header_timeout_defaults_to_ten_seconds() -> None:
    assert Limits().header_timeout == 10.0


SLOW = b"GET /public/x HTTP/1.1\r\nHost: gateway.test\r\nX-A: 1\r\nX-Slow: " + b"a" * 40


@pytest.mark.parametrize(
    "sent_at_once",
    [
        0,  # connects and sends nothing at first
        2,  # "GE"
        SLOW.index(b"X-A"),  # the request line and Host
        SLOW.index(b"X-Slow") - 1,  # in the middle of a CRLF
    ],
)
async def test_dribbled_headers_are_cut_off(
    gateway: Gateway, upstream: RecordingUpstream, sent_at_once: int
) -> None:
    reader, writer = await connect(gateway)
    started = time.monotonic()
    writer.write(SLOW[:sent_at_once])
    # The rest a byte every 0.2 s: far past the timeout.
    sender = asyncio.create_task(dribble(writer, SLOW[sent_at_once:], 0.2))
    try:
        data = await read_until_closed(reader, 5 * TIMEOUT)
    finally:
        sender.cancel()
        writer.close()
    assert TIMEOUT * 0.9 <= time.monotonic() - started < 3 * TIMEOUT
    assert data.startswith(b"HTTP/1.1 408 ")
    assert b"Server: patgate" in data
    assert upstream.requests == []


async def test_later_request_on_a_kept_alive_connection_is_timed_too(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    reader, writer = await connect(gateway)
    try:
        writer.write(b"GET /public/one HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
        first = await reader.readuntil(b'"body_size": 0}')
        assert first.startswith(b"HTTP/1.1 200 ")
        # Idle for longer than the header timeout: that is keep-alive's.
        await asyncio.sleep(1.5 * TIMEOUT)
        writer.write(b"GET /public/two HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
        second = await reader.readuntil(b'"body_size": 0}')
        assert second.startswith(b"HTTP/1.1 200 ")
        # A third request, dribbled, is cut.
        sender = asyncio.create_task(dribble(writer, b"GET /public/three", 0.2))
        data = await read_until_closed(reader, 5 * TIMEOUT)
        sender.cancel()
    finally:
        writer.close()
    assert data.startswith(b"HTTP/1.1 408 ")
    assert [seen.raw_path for seen in upstream.requests] == [
        "/public/one",
        "/public/two",
    ]


async def test_slow_body_is_not_cut_by_the_header_timeout(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    body = b"b" * 12
    reader, writer = await connect(gateway)
    try:
        writer.write(
            b"PUT /public/upload HTTP/1.1\r\nHost: gateway.test\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        await dribble(writer, body, 0.25)  # 3 s of body, 3x the header timeout
        data = await read_until_closed(reader, 5 * TIMEOUT)
    finally:
        writer.close()
    (response,) = parse_responses(data)
    assert response.status == 200
    assert upstream.last.body_size == len(body)


async def test_fast_headers_in_many_small_packets_pass(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    reader, writer = await connect(gateway)
    try:
        request = b"GET /public/x HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n"
        # 14 packets: well inside the timeout even on a busy machine, where
        # each pause can take ten times as long as asked.
        await dribble(writer, request, 0.005, size=4)
        data = await read_until_closed(reader, 5 * TIMEOUT)
    finally:
        writer.close()
    assert data.startswith(b"HTTP/1.1 200 ")
