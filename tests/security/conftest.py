"""Hostile clients against a real gateway: fixtures and a raw HTTP/1.1 socket.

Every test here talks to a gateway on a loopback socket in front of a
``RecordingUpstream``, and asserts both what the client got and what the
upstream did (or did not) receive. Raw requests go through :func:`exchange`
so that no client library normalises, re-encodes or refuses them first.

The suite runs under both of aiohttp's HTTP parsers (SPEC §8 "Two HTTP
parsers"): the C one by default and the pure-Python one with
``AIOHTTP_NO_EXTENSIONS=1`` set before aiohttp is imported, e.g.
``AIOHTTP_NO_EXTENSIONS=1 .venv/bin/pytest tests/security``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import pytest
from aiohttp import http_parser
from multidict import CIMultiDict

from tests.gateway_harness import Gateway, RecordingUpstream, StartGateway

# The routes most attacks aim at: a token route, a public route sharing the
# same upstream (so a path trick that escapes one lands on the other), and a
# host-bound public route in front of a host-less token route.
ROUTES = """\
  - name: api
    prefix: /api/
    upstream: {upstream}
    methods: {{GET: api:read, HEAD: api:read, '*': api:write}}
  - name: admin
    prefix: /admin/
    upstream: {upstream}
    scope: admin
  - name: public
    prefix: /public/
    upstream: {upstream}
    auth: none
  - name: hosted-public
    prefix: /hosted/
    host: public.example.com
    upstream: {upstream}
    auth: none
  - name: hosted
    prefix: /hosted/
    upstream: {upstream}
"""
# The failed-auth throttle would turn a run of hostile requests into 429s
# and hide what each of them does on its own.
NO_THROTTLE = "limits: {failed_auth_per_minute: 0}"
# How long one raw exchange may take in all (a hung gateway fails the test).
EXCHANGE_TIMEOUT = 10.0


def parser_name() -> str:
    """Which aiohttp request parser this process uses: ``C`` or ``Python``."""
    if http_parser.HttpRequestParser is http_parser.HttpRequestParserPy:
        return "Python"
    return "C"


def pytest_report_header() -> str:
    return f"aiohttp HTTP parser: {parser_name()} (AIOHTTP_NO_EXTENSIONS=1 for Python)"


@pytest.fixture
def make_gateway(make_gateway: StartGateway) -> StartGateway:
    """The shared factory, with failed-auth throttling off unless a test sets it."""

    async def make(store_url: str, routes: str, **kwargs: object) -> Gateway:
        kwargs.setdefault("extra", NO_THROTTLE)
        return await make_gateway(store_url, routes, **kwargs)

    return make


@pytest.fixture
async def gateway(
    make_gateway: StartGateway, upstream: RecordingUpstream, sqlite_url: str
) -> Gateway:
    """The standard gateway on SQLite (the store does not matter to most attacks)."""
    return await make_gateway(sqlite_url, ROUTES.format(upstream=upstream.url))


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


# --------------------------------------------------------------------------
# Raw HTTP/1.1


class Listening(Protocol):
    """Anything listening on ``host`` (``127.0.0.1:PORT``): a Gateway or a process."""

    @property
    def host(self) -> str: ...


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: CIMultiDict[str]
    body: bytes


async def exchange(
    gateway: Listening, data: bytes, *, idle: float | None = None
) -> bytes:
    """Send ``data`` on a fresh connection; everything read until EOF.

    Requests should ask for ``Connection: close`` (the gateway also closes
    after any parse error), so EOF marks the end of the last response. With
    ``idle``, reading also stops once nothing arrived for that long (for
    connections the server may legitimately keep open).
    """
    host, _, port = gateway.host.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        await writer.drain()
        chunks: list[bytes] = []
        async with asyncio.timeout(EXCHANGE_TIMEOUT):
            while True:
                try:
                    chunk = await asyncio.wait_for(reader.read(65536), idle)
                except TimeoutError:
                    break
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


_STATUS_LINE = re.compile(rb"HTTP/(\d\.\d) (\d{3}) ?([^\r\n]*)")


def parse_responses(data: bytes) -> list[RawResponse]:
    """Split what a connection returned into responses (Content-Length framed)."""
    responses: list[RawResponse] = []
    rest = data
    while rest:
        head, sep, after = rest.partition(b"\r\n\r\n")
        assert sep, f"truncated response head: {rest[:200]!r}"
        lines = head.split(b"\r\n")
        match = _STATUS_LINE.fullmatch(lines[0])
        assert match, f"not an HTTP status line: {lines[0][:200]!r}"
        headers: CIMultiDict[str] = CIMultiDict()
        for line in lines[1:]:
            name, _, value = line.decode("latin-1").partition(":")
            headers.add(name.strip(), value.strip())
        status = int(match.group(2))
        if status < 200 or status in (204, 304):
            length = 0  # no body, whatever the headers say
        else:
            length = int(headers.get("Content-Length", len(after)))
        body, rest = after[:length], after[length:]
        responses.append(
            RawResponse(
                status,
                match.group(3).decode("latin-1"),
                headers,
                body,
            )
        )
    return responses


async def send_raw(
    gateway: Listening, data: bytes, *, idle: float | None = None
) -> list[RawResponse]:
    return parse_responses(await exchange(gateway, data, idle=idle))


def request(
    target: str | bytes,
    *headers: str | bytes,
    method: str | bytes = b"GET",
    host: str | bytes = b"gateway.test",
    body: bytes = b"",
    close: bool = True,
) -> bytes:
    """One raw HTTP/1.1 request; ``headers`` are ``Name: value`` lines."""

    def raw(text: str | bytes) -> bytes:
        return text if isinstance(text, bytes) else text.encode("utf-8")

    lines = [raw(method) + b" " + raw(target) + b" HTTP/1.1", b"Host: " + raw(host)]
    lines.extend(raw(line) for line in headers)
    if body:
        lines.append(b"Content-Length: %d" % len(body))
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def bearer(token: str) -> str:
    return f"Authorization: Bearer {token}"


def upstream_paths(upstream: RecordingUpstream) -> list[str]:
    return [seen.raw_path for seen in upstream.requests]
