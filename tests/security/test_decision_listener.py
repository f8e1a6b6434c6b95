"""The decision listener's own HTTP/1.1 server against hostile and odd clients.

``forward_auth.listen`` serves the decision endpoint without aiohttp's web
layer (``patgate.web.gateway.decision_server``): what aiohttp did for the main
listener, framing, limits, deadlines, is done there, and tested here with raw
bytes. The decisions themselves are the main listener's (test_forward_auth*
ask both listeners the same questions).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import struct

import aiohttp
import pytest
from structlog.testing import capture_logs

from patgate.answers import Answer
from patgate.web.gateway import decision_server
from patgate.web.keys import DECISIONS, FORWARD_AUTH, METRICS
from tests.gateway_harness import Address, Gateway, RecordingUpstream
from tests.security.conftest import (
    ROUTES,
    bearer,
    exchange,
    parse_responses,
    request,
    send_raw,
)

AUTH = "/_patgate/auth"
HEADER_TIMEOUT = 0.5
EXTRA = (
    "limits: {failed_auth_per_minute: 0, max_url_bytes: 1024, "
    f"max_header_bytes: 1024, header_timeout: {HEADER_TIMEOUT}}}\n"
    "trusted_proxies: [127.0.0.1/32]\n"
    "forward_auth: {listen: 127.0.0.1:0}\n"
)
# How long a closing connection may take, lingering included.
LINGER_BOUND = decision_server.LINGER + 3
FIXED_400 = b'{"error": "invalid_request", "message": "The request is malformed."}'


@pytest.fixture
async def gateway(make_gateway, upstream: RecordingUpstream, sqlite_url) -> Gateway:
    gateway: Gateway = await make_gateway(
        sqlite_url, ROUTES.format(upstream=upstream.url), extra=EXTRA
    )
    return gateway


@pytest.fixture
def decisions(gateway: Gateway) -> Address:
    return gateway.decisions


def ask(uri: str, *headers: str, close: bool = False, method: str = "GET") -> bytes:
    """A decision request as nginx sends it (keep-alive unless ``close``)."""
    return request(
        AUTH,
        f"X-Original-Method: {method}",
        f"X-Original-URI: {uri}",
        *headers,
        close=close,
    )


async def open_connection(
    address: Address,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, _, port = address.host.rpartition(":")
    return await asyncio.open_connection(host, int(port))


async def read_answer(reader: asyncio.StreamReader) -> bytes:
    """One answer (head and Content-Length body) off a kept-alive connection."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    return head + await asyncio.wait_for(reader.readexactly(length), 5)


async def send_until_refused(writer: asyncio.StreamWriter, size: int) -> None:
    """Send ``size`` bytes, or fewer if the gateway closes first."""
    try:
        for _ in range(size // 65536):
            writer.write(b"y" * 65536)
            await writer.drain()
    except (ConnectionError, OSError):
        pass


class TestFraming:
    async def test_pipelined_answers_keep_their_order_when_one_waits_for_the_store(
        self, gateway: Gateway, decisions: Address, upstream: RecordingUpstream
    ) -> None:
        cached = await gateway.token("alice", scopes=["api:read"])
        answer = parse_responses(
            await exchange(decisions, ask("/api/x", bearer(cached), close=True))
        )
        assert answer[0].status == 200  # now in the cache
        fresh = await gateway.token("bob", scopes=["api:read"])  # not yet
        data = b"".join(
            [
                ask("/api/x"),
                ask("/api/x", bearer(fresh)),  # a store lookup: a task
                ask("/api/x", bearer(cached)),  # answered at once, after it
                ask("/public/x"),
                request("/elsewhere", close=False),
                ask("/api/x", bearer(fresh), close=True),
            ]
        )
        answers = await send_raw(decisions, data)
        assert [a.status for a in answers] == [401, 200, 200, 200, 404, 200]
        users = [a.headers.get("X-Patgate-User") for a in answers]
        assert users == [None, "bob", "alice", "", None, "bob"]
        assert upstream.requests == []

    async def test_one_connection_serves_many_decisions(self, gateway: Gateway) -> None:
        token = await gateway.token("alice", scopes=["api:read"])
        headers = {
            "X-Original-Method": "GET",
            "X-Original-URI": "/api/x",
            "Authorization": f"Bearer {token}",
        }
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(50):
                url = gateway.decisions_url + AUTH
                async with session.get(url, headers=headers) as response:
                    assert response.status == 200
                    assert response.headers["X-Patgate-User"] == "alice"
                    assert response.headers["Server"] == "patgate"
                    assert "Date" in response.headers
            assert len(gateway.app[DECISIONS].connections) == 1

    async def test_http_1_0_is_answered_then_closed(self, decisions: Address) -> None:
        raw = (
            b"GET /_patgate/auth HTTP/1.0\r\nX-Original-Method: GET\r\n"
            b"X-Original-URI: /public/x\r\nConnection: keep-alive\r\n\r\n"
        )
        (answer,) = await send_raw(decisions, raw)  # read to EOF: it closed
        assert answer.status == 200
        assert answer.headers["Connection"] == "close"

    async def test_bodies_are_read_and_dropped(self, decisions: Address) -> None:
        chunked = (
            b"POST /_patgate/auth HTTP/1.1\r\nHost: g\r\nX-Original-Method: POST\r\n"
            b"X-Original-URI: /public/x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n"
        )
        data = (
            request(AUTH, "X-Original-Method: PUT", "X-Original-URI: /public/x",
                    body=b"GET /_patgate/auth HTTP/1.1\r\n\r\n", close=False)
            + chunked
            + ask("/api/x", close=True)
        )  # fmt: skip
        answers = await send_raw(decisions, data)
        assert [a.status for a in answers] == [200, 200, 401]

    async def test_a_body_over_a_mebibyte_closes_the_connection(
        self, decisions: Address
    ) -> None:
        head = (
            b"POST /_patgate/auth HTTP/1.1\r\nHost: g\r\nX-Original-Method: POST\r\n"
            b"X-Original-URI: /public/x\r\nContent-Length: 4194304\r\n\r\n"
        )
        reader, writer = await open_connection(decisions)
        try:
            writer.write(head)
            assert b" 200 " in await read_answer(reader)  # decided on the headers
            await send_until_refused(writer, 2 * 1024**2)
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed
        finally:
            writer.close()

    async def test_expect_100_is_answered_with_the_decision_and_closed(
        self, decisions: Address
    ) -> None:
        raw = ask("/public/x", "Expect: 100-continue", "Content-Length: 10")
        (answer,) = await send_raw(decisions, raw)  # no body sent; it closed
        assert answer.status == 200
        (answer,) = await send_raw(
            decisions, ask("/public/x", "Expect: something-else")
        )
        assert answer.status == 417
        assert b"something-else" not in answer.body

    async def test_an_upgrade_is_answered_then_closed(self, decisions: Address) -> None:
        raw = ask("/public/x", "Connection: Upgrade", "Upgrade: websocket")
        data = await exchange(decisions, raw + ask("/public/y"))
        (answer,) = parse_responses(data)
        assert answer.status == 200


class TestWhatIsServed:
    @pytest.mark.parametrize(
        ("raw", "status"),
        [
            (request("/", close=True), 404),
            (request("/_patgate/authx", close=True), 404),
            (request("/api/x", close=True), 404),
            (request("http://gateway.test/_patgate/auth", close=True), 400),
            (request("*", method="OPTIONS", close=True), 400),
        ],
    )
    async def test_only_the_endpoint_is_served(
        self, decisions: Address, raw: bytes, status: int
    ) -> None:
        (answer,) = await send_raw(decisions, raw)
        assert answer.status == status
        assert answer.headers["Content-Type"] == "application/json"


class TestBadRequests:
    @pytest.mark.parametrize(
        "raw",
        [
            b"GARBAGE {token}\r\n\r\n",
            b"GET /_patgate/auth HTTP/1.1\r\nAuthorization: Bearer {token}\r\n"
            b"Bad Header\r\n\r\n",
            b"GET /_patgate/auth?{token} HTTP/1.1\r\nHost: a\x00b\r\n\r\n",
            b"GET /_patgate/auth HTTP/1.1\r\nX: {token}\r\n folded\r\n\r\n",
            b"POST /_patgate/auth HTTP/1.1\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST /_patgate/auth HTTP/1.1\r\nContent-Length: 3\r\n"
            b"Content-Length: 4\r\n\r\nabcd",
            b"GET /_patgate/auth HTTP/9.9\r\nX: {token}\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ],
    )
    async def test_unparsable_is_a_fixed_400_that_quotes_nothing_then_closed(
        self, gateway: Gateway, decisions: Address, raw: bytes
    ) -> None:
        token = await gateway.token("alice")
        data = await exchange(decisions, raw.replace(b"{token}", token.encode()))
        answers = parse_responses(data)  # read to EOF: it closed
        assert answers[-1].status == 400
        assert answers[-1].body == FIXED_400
        assert token.encode() not in data

    async def test_a_malformed_body_closes_after_the_decision_without_another(
        self, gateway: Gateway, decisions: Address
    ) -> None:
        token = await gateway.token("alice")
        raw = (
            b"PUT /_patgate/auth HTTP/1.1\r\nX-Original-Method: PUT\r\n"
            b"X-Original-URI: /public/x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"zz\r\n" + token.encode() + b"\r\n0\r\n\r\n" + ask("/public/y")
        )
        data = await exchange(decisions, raw)
        (answer,) = parse_responses(data)  # the decision, then EOF
        assert answer.status == 200
        assert token.encode() not in data

    async def test_a_half_closed_peer_still_gets_every_answer(
        self, gateway: Gateway, decisions: Address
    ) -> None:
        fresh = await gateway.token("bob", scopes=["api:read"])  # a store lookup
        reader, writer = await open_connection(decisions)
        try:
            writer.write(ask("/api/x", bearer(fresh)) + ask("/public/x"))
            writer.write_eof()
            data = await asyncio.wait_for(reader.read(), 5)
        finally:
            writer.close()
        assert [a.status for a in parse_responses(data)] == [200, 200]

    @pytest.mark.parametrize(
        ("raw", "status"),
        [
            (request(AUTH + "/api/" + "x" * 1100), 414),
            (ask("/api/x", "X-Long: " + "y" * 1100), 431),
            (ask("/api/x", *(f"X-{n}: 1" for n in range(200))), 431),
        ],
    )
    async def test_limits(self, decisions: Address, raw: bytes, status: int) -> None:
        (answer,) = await send_raw(decisions, raw)
        assert answer.status == status

    async def test_an_endless_header_is_cut_off_with_a_431(
        self, decisions: Address
    ) -> None:
        reader, writer = await open_connection(decisions)
        try:
            writer.write(b"GET /_patgate/auth HTTP/1.1\r\nX-Endless: ")
            await send_until_refused(writer, 1024**2)
            data = await asyncio.wait_for(reader.read(), 5)
        finally:
            writer.close()
        (answer,) = parse_responses(data)
        assert answer.status == 431


class TestDeadlines:
    async def test_slow_headers_get_a_408_and_the_connection_closed(
        self, decisions: Address
    ) -> None:
        reader, writer = await open_connection(decisions)
        try:
            writer.write(b"GET /_patgate/auth HTTP/1.1\r\nX-Original-")
            data = await asyncio.wait_for(reader.read(), HEADER_TIMEOUT + 5)
        finally:
            writer.close()
        (answer,) = parse_responses(data)
        assert answer.status == 408

    async def test_a_silent_new_connection_gets_a_408(self, decisions: Address) -> None:
        reader, writer = await open_connection(decisions)
        try:
            data = await asyncio.wait_for(reader.read(), HEADER_TIMEOUT + 5)
        finally:
            writer.close()
        assert parse_responses(data)[0].status == 408

    async def test_an_idle_kept_alive_connection_stays_open(
        self, decisions: Address
    ) -> None:
        reader, writer = await open_connection(decisions)
        try:
            writer.write(ask("/public/x"))
            assert b" 200 " in await read_answer(reader)
            await asyncio.sleep(HEADER_TIMEOUT * 2)
            writer.write(ask("/public/y"))
            assert b" 200 " in await read_answer(reader)
        finally:
            writer.close()

    async def test_stop_closes_idle_connections_and_the_port(
        self, gateway: Gateway, decisions: Address
    ) -> None:
        reader, writer = await open_connection(decisions)
        try:
            writer.write(ask("/public/x"))
            assert b" 200 " in await read_answer(reader)
            await gateway.app[DECISIONS].stop()
            assert await asyncio.wait_for(reader.read(), 5) == b""
        finally:
            writer.close()
        with pytest.raises(ConnectionRefusedError):
            await open_connection(decisions)


class TestAccounting:
    async def test_each_decision_has_its_access_line_without_the_token(
        self, gateway: Gateway, decisions: Address
    ) -> None:
        token = await gateway.token("alice", scopes=["api:read"])
        with gateway.access_log.capture() as lines:
            await send_raw(
                decisions,
                ask(f"/api/x?access_token={token}", bearer(token))
                + ask("/admin/x", bearer(token))
                + request("/nothing", close=True),
            )
        seen = [(line["method"], line["path"], line["status"]) for line in lines]
        assert seen == [
            ("GET", "/api/x", 200),
            ("GET", "/admin/x", 403),
            ("GET", "/nothing", 404),
        ]
        assert lines[0]["user"] == "alice"
        assert lines[0]["route"] == "api"
        assert token not in repr(lines)
        counted = gateway.app[METRICS].own.requests
        assert counted[("api", "allowed")] == 1
        assert counted[("admin", "forbidden")] == 1
        assert counted[("", "no_route")] == 1


async def test_a_failing_decision_is_a_500_never_a_pass(
    gateway: Gateway, decisions: Address, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in a decision (fault injected) answers 500 and closes: fail closed."""

    def broken(*args: object) -> None:
        raise RuntimeError("injected")

    monkeypatch.setattr(gateway.app[FORWARD_AUTH], "decide_now", broken)
    token = await gateway.token("alice", scopes=["api:read"])
    with capture_logs() as events:
        data = await exchange(decisions, ask("/api/x", bearer(token)) + ask("/api/y"))
    (answer,) = parse_responses(data)  # the 500, then EOF
    assert answer.status == 500
    assert "X-Patgate-User" not in answer.headers
    assert [e["event"] for e in events if e["log_level"] == "error"] == [
        "decision_failed"
    ]
    assert token not in repr(events)


# -- Found by review: each was a real failure before its fix.


@pytest.fixture
async def loop_errors() -> list[dict[str, object]]:
    """What reaches the event loop's exception handler (a callback that raised)."""
    seen: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(
        lambda _, context: seen.append(context)
    )
    return seen


@pytest.fixture
def slow_store(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every store lookup takes half a second (a fault injected: a slow store)."""
    resolve = gateway.store.resolve

    async def slow(token_id: str) -> object:
        await asyncio.sleep(0.5)
        return await resolve(token_id)

    monkeypatch.setattr(gateway.store, "resolve", slow)


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset, as a proxy dropping a client's request does."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class TestTheLastRequest:
    """Nothing after a request that ends the connection is read as a request."""

    @pytest.mark.parametrize(
        "last",
        [
            ask("/public/x", close=True),
            ask("/public/x", "Expect: 100-continue", "Content-Length: 5"),
            ask("/public/x", "Connection: Upgrade", "Upgrade: websocket"),
            b"GET /_patgate/auth HTTP/1.0\r\nX-Original-Method: GET\r\n"
            b"X-Original-URI: /public/x\r\n\r\n",
        ],
    )
    async def test_bytes_after_it_are_not_decided(
        self, gateway: Gateway, decisions: Address, last: bytes, loop_errors
    ) -> None:
        token = await gateway.token("alice", scopes=["api:read"])
        with gateway.access_log.capture() as lines:
            data = await exchange(decisions, last + ask("/api/x", bearer(token)))
        assert [a.status for a in parse_responses(data)] == [200]
        assert [line["path"] for line in lines] == ["/public/x"]
        assert loop_errors == []

    async def test_a_partial_head_after_it_cannot_hold_the_connection(
        self, decisions: Address
    ) -> None:
        raw = ask("/public/x", "Expect: 100-continue", "Content-Length: 5")
        reader, writer = await open_connection(decisions)
        try:
            writer.write(raw + b"GET /_patgate/auth HTTP/1.1\r\nX-Dribble: ")
            data = await asyncio.wait_for(reader.read(), LINGER_BOUND)
        finally:
            writer.close()
        assert [a.status for a in parse_responses(data)] == [200]

    async def test_answers_before_a_bad_request_still_go_out(
        self, gateway: Gateway, decisions: Address, slow_store
    ) -> None:
        fresh = await gateway.token("bob", scopes=["api:read"])  # a store lookup
        for tail in (
            b"GARBAGE\r\n\r\n",
            ask("/public/y", "Upgrade: h2c", "Connection: Upgrade"),
        ):
            data = await exchange(
                decisions, ask("/api/x", bearer(fresh)) + ask("/public/x") + tail
            )
            statuses = [a.status for a in parse_responses(data)]
            assert statuses == [200, 200, 400 if tail.startswith(b"GARBAGE") else 200]


class TestBounds:
    async def test_a_large_first_read_is_not_taken_for_large_headers(
        self, decisions: Address
    ) -> None:
        body = b"x" * 100_000
        raw = request(
            AUTH, "X-Original-Method: POST", "X-Original-URI: /public/x", body=body
        )
        (answer,) = await send_raw(decisions, raw)
        assert answer.status == 200
        many = ask("/public/x") * 700 + ask("/public/x", close=True)
        assert len(await send_raw(decisions, many)) == 701

    async def test_endless_trailers_are_cut_off(self, decisions: Address) -> None:
        raw = (
            b"POST /_patgate/auth HTTP/1.1\r\nX-Original-Method: POST\r\n"
            b"X-Original-URI: /public/x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\nX-Trailer: "
        )
        reader, writer = await open_connection(decisions)
        try:
            writer.write(raw)
            assert b" 200 " in await read_answer(reader)
            await send_until_refused(writer, 4 * 1024**2)
            assert await asyncio.wait_for(reader.read(), LINGER_BOUND) == b""
        except ConnectionResetError:
            pass  # closed with the client's bytes unread: as good
        finally:
            writer.close()


class TestPeersThatGoAway:
    async def test_a_reset_client_strands_no_one_waiting_on_its_lookup(
        self, gateway: Gateway, decisions: Address, slow_store
    ) -> None:
        fresh = await gateway.token("bob", scopes=["api:read"])
        _, first = await open_connection(decisions)
        first.write(ask("/api/x", bearer(fresh)))  # leads the store lookup
        await asyncio.sleep(0.1)
        reader, second = await open_connection(decisions)
        second.write(ask("/api/x", bearer(fresh)))  # waits on the same lookup
        await asyncio.sleep(0.1)
        reset(first)
        try:
            assert b" 200 " in await asyncio.wait_for(read_answer(reader), 5)
        finally:
            second.close()

    @pytest.mark.parametrize("goes", ["closes", "resets"])
    async def test_a_peer_gone_while_its_decision_is_made_is_forgotten(
        self, gateway: Gateway, decisions: Address, slow_store, goes: str
    ) -> None:
        for _ in range(3):
            fresh = await gateway.token("bob", scopes=["api:read"])
            _, writer = await open_connection(decisions)
            writer.write(ask("/api/x", bearer(fresh)))
            await writer.drain()
            await asyncio.sleep(0.05)
            if goes == "resets":
                reset(writer)
            else:
                writer.close()
        async with asyncio.timeout(LINGER_BOUND + 1):
            await gateway.app[DECISIONS].drained()

    async def test_an_idle_peer_that_does_not_read_is_closed(
        self, gateway: Gateway, decisions: Address, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(decision_server, "KEEPALIVE_TIMEOUT", 0.5)
        monkeypatch.setattr(decision_server, "LINGER", 0.5)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        host, _, port = decisions.host.rpartition(":")
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, (host, int(port)))
        try:
            # Many answers it never reads, then nothing.
            await loop.sock_sendall(sock, ask("/public/x") * 2000)
            async with asyncio.timeout(5):
                await gateway.app[DECISIONS].drained()
        finally:
            sock.close()


async def connect_not_reading(address: Address) -> socket.socket:
    """A raw client with a tiny receive buffer, that never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    host, _, port = address.host.rpartition(":")
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    return sock


async def fill_answers(gateway: Gateway, sock: socket.socket, size: int) -> None:
    """Ask until ``size`` bytes of answers wait in the gateway's write buffer."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(10):
        await asyncio.sleep(0.05)  # accepted by now
        (connection,) = gateway.app[DECISIONS].connections
        # A small kernel buffer on the gateway's side too, so that answers
        # wait in its own buffer soon (loopback's grows to megabytes).
        own = connection.socket()
        own.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        while connection.buffered() < size:
            await loop.sock_sendall(sock, ask("/public/x") * 50)
            await asyncio.sleep(0.01)


class TestPeersThatDoNotRead:
    """Found by the second review: each held a connection open for good."""

    @pytest.fixture(autouse=True)
    def short_timers(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(decision_server, "KEEPALIVE_TIMEOUT", 0.5)
        monkeypatch.setattr(decision_server, "LINGER", 0.5)

    async def test_a_partial_head_behind_unread_answers_is_cut_off(
        self, gateway: Gateway, decisions: Address, loop_errors
    ) -> None:
        sock = await connect_not_reading(decisions)
        try:
            await fill_answers(gateway, sock, 40_000)
            loop = asyncio.get_running_loop()
            partial = b"GET /_patgate/auth HTTP/1.1\r\nX-"
            await loop.sock_sendall(sock, ask("/public/x") * 200 + partial)
            async with asyncio.timeout(HEADER_TIMEOUT + 5):
                await gateway.app[DECISIONS].drained()
        finally:
            sock.close()
        assert loop_errors == []

    async def test_a_half_closed_peer_that_does_not_read_is_cut_off(
        self, gateway: Gateway, decisions: Address, loop_errors
    ) -> None:
        sock = await connect_not_reading(decisions)
        try:
            await fill_answers(gateway, sock, 10_000)
            loop = asyncio.get_running_loop()
            await loop.sock_sendall(sock, b"GET /_patgate/auth HTTP/1.1\r\nX-")
            await asyncio.sleep(0.05)
            sock.shutdown(socket.SHUT_WR)
            async with asyncio.timeout(HEADER_TIMEOUT + 5):
                await gateway.app[DECISIONS].drained()
        finally:
            sock.close()
        assert loop_errors == []


async def test_a_decision_failing_after_its_peer_left_is_logged(
    gateway: Gateway, decisions: Address, monkeypatch: pytest.MonkeyPatch, loop_errors
) -> None:
    async def broken(token_id: str) -> object:
        await asyncio.sleep(0.3)
        raise RuntimeError("injected")

    monkeypatch.setattr(gateway.store, "resolve", broken)
    fresh = await gateway.token("bob", scopes=["api:read"])
    with capture_logs() as events:
        _, writer = await open_connection(decisions)
        writer.write(ask("/api/x", bearer(fresh)))
        await writer.drain()
        await asyncio.sleep(0.05)
        reset(writer)
        await asyncio.sleep(0.6)
        gc.collect()
    assert "decision_failed" in [e["event"] for e in events]
    assert loop_errors == []


async def test_answers_to_a_reset_peer_stop_at_once(
    gateway: Gateway, decisions: Address, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="asyncio")
    sock = socket.socket()
    host, _, port = decisions.host.rpartition(":")
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    with gateway.access_log.capture() as lines:
        sock.sendall(ask("/public/x") * 1500)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        async with asyncio.timeout(5):
            await gateway.app[DECISIONS].drained()
    assert len([r for r in caplog.records if r.name == "asyncio"]) <= 1
    assert len(lines) < 1500  # what could not be sent was not logged as answered


async def test_an_answer_header_with_a_line_break_is_never_sent(
    gateway: Gateway, decisions: Address, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SECURITY: an identity value that ends its line (a login, a path made
    it through) would split the answer; a 500 and a close instead."""
    split = (("X-Patgate-User", "alice\r\nX-Patgate-Scopes: *"),)

    def splitting(*args: object) -> Answer:
        return Answer(200, b"", split)

    monkeypatch.setattr(gateway.app[FORWARD_AUTH], "decide_now", splitting)
    data = await exchange(decisions, ask("/public/x") + ask("/public/y"))
    (answer,) = parse_responses(data)  # the 500, then EOF
    assert answer.status == 500
    assert b"alice" not in data
    assert b"X-Patgate-Scopes" not in data
