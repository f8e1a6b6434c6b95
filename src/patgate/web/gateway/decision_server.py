"""The decision endpoint on a listener of its own (``forward_auth.listen``).

A decision is a small request answered with a few headers, asked for every
request a proxy in front forwards. Through aiohttp's web layer (request and
response objects, router, payload writer, a task per request) it cost more
than the decision itself: nginx ``auth_request`` to a minimal aiohttp
endpoint ran at 13,200 req/s on this machine, to the same answer from a bare
protocol on the same parser family 18,800. This module is that bare
protocol: HTTP/1.1 parsed by httptools (llhttp, strict, as uvicorn uses),
answers written as bytes, the decision itself from the same
:class:`~patgate.web.gateway.forward_auth.Decider` the main listener uses,
with no task unless the gate must ask the store.

What it speaks, and refuses (each with a fixed JSON body, never a quote of
the request):

- ``path`` and ``path/...`` (Envoy's ``path_prefix``) in origin form;
  anything else is 404, or 400 if the target is not a path;
- keep-alive and pipelining (answers in order; reading pauses while many
  wait or the peer does not read); HTTP/1.0 closes after each answer;
- a body is read and dropped (a decision needs none; over 1 MiB: closed);
  ``Expect: 100-continue`` is answered with the decision, no ``100``, and
  the connection closed after it (the body is never sent); another
  expectation is a 417; an upgrade is answered, then the connection closed;
- limits as the main listener's: the request target ``limits.max_url_bytes``
  (414), a header field ``limits.max_header_bytes`` (431), at most 128
  fields and 64 KiB of header block (431); the header deadline
  ``limits.header_timeout`` (408), from the connection or a request's
  first byte; an unparsable request is a 400; each closes the connection.

Every answer has ``Server: patgate``, ``Date`` and ``Content-Length``; each
decision gets its access line and metrics as on the main listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from collections.abc import Callable, Coroutine
from email.utils import formatdate
from functools import partial
from http import HTTPStatus
from typing import Any, cast

import httptools
import structlog
from multidict import CIMultiDict

from patgate.answers import JSON, Answer, error_answer
from patgate.config import Limits
from patgate.logs import AccessLog
from patgate.web.gateway.forward_auth import Decider
from patgate.web.ops.access import Exchange, log_exchange
from patgate.web.ops.metrics import Metrics
from patgate.web.protocol import SERVER_NAME

log = structlog.get_logger("patgate.http")

MAX_BODY = 1024**2
MAX_FIELDS = 128
MAX_HEAD = 64 * 1024
# Idle keep-alive connections are closed after this long: longer than the
# proxies in front keep theirs (nginx 60 s, Envoy 1 h), as aiohttp's 3630 s,
# so none of them sends a request on a connection being closed.
KEEPALIVE_TIMEOUT = 3630.0
# How long a closing connection reads what its peer still sends.
LINGER = 2.0
# How long a stop waits for the answers being made.
STOP_GRACE = 5.0
# Answers waiting on one connection before it is read no further.
MAX_PENDING = 16

_NOT_FOUND = error_answer(
    404, "not_found", message="Nothing is served here but the decision endpoint."
)
_BAD_TARGET = error_answer(
    400, "invalid_request", message="The request target is not a path."
)
_UNPARSABLE = error_answer(400, "invalid_request")  # as the main listener's
_URI_TOO_LONG = error_answer(
    414, "invalid_request", message="The request target is too long."
)
_HEADERS_TOO_LARGE = error_answer(
    431, "invalid_request", message="The request headers are too large."
)
_EXPECTATION = error_answer(417, "expectation_failed")
_FAILED = error_answer(500, "internal_error")
_TIMEOUT = Answer(408, b"")
_JSON_LINE = f"Content-Type: {JSON}\r\n".encode()
_SERVER_LINE = f"Server: {SERVER_NAME}\r\n".encode()
_STATUS_LINES = {
    status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode()
    for status in HTTPStatus
}


class _Refused(Exception):
    """Raised in a parser callback: the request is answered with ``answer``."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.status)
        self.answer = answer


class _LastRead(Exception):
    """Raised in a parser callback: bytes after the last request."""


class _Request:
    """One request of a connection, from its headers to its answer."""

    __slots__ = (
        "answer",
        "head",
        "headers",
        "keep_alive",
        "method",
        "started",
        "target",
    )

    def __init__(
        self,
        method: str,
        target: str,
        headers: CIMultiDict[str],
        keep_alive: bool,
        answer: Answer | None = None,
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.keep_alive = keep_alive
        self.head = method == "HEAD"
        self.started = time.monotonic()
        self.answer = answer  # made before the decision: a refusal of the request


class DecisionServer:
    """The decision listener of one worker: its connections and their answers."""

    def __init__(
        self, decider: Decider, metrics: Metrics, access_log: AccessLog, limits: Limits
    ) -> None:
        self.decider = decider
        self.metrics = metrics
        self.access_log = access_log
        self.limits = limits
        self.pid = os.getpid()
        self.connections: set[DecisionConnection] = set()
        self._server: asyncio.AbstractServer | None = None
        self._drained = asyncio.Event()
        self._date = (0, "")

    async def start(self, sock: Any) -> None:
        """Serve on the listening socket ``sock``."""
        self.pid = os.getpid()  # the worker's, once forked
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: DecisionConnection(self), sock=sock
        )

    async def stop(self) -> None:
        """Stop accepting; answers being made go out (up to ``STOP_GRACE``
        seconds), then every connection is closed."""
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.finish()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_GRACE):
                await self.drained()
        for connection in list(self.connections):
            connection.abort()
        if self._server is not None:
            await self._server.wait_closed()

    async def drained(self) -> None:
        """Return once no connection is open."""
        if self.connections:
            await self._drained.wait()

    def add(self, connection: DecisionConnection) -> None:
        self.connections.add(connection)
        self._drained.clear()

    def forget(self, connection: DecisionConnection) -> None:
        self.connections.discard(connection)
        if not self.connections:
            self._drained.set()

    def date(self) -> str:
        """The ``Date`` value, made once a second."""
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, formatdate(now, usegmt=True))
        return self._date[1]


class DecisionConnection(asyncio.Protocol):
    """One proxy's connection: parse, decide in order, answer.

    A request whose answer ends the connection (``Connection: close``,
    HTTP/1.0, ``Expect``, an upgrade, a request that cannot be read) is the
    last one parsed: nothing after it is read as a request, and the
    connection closes once every answer before it and its own are out.
    """

    def __init__(self, server: DecisionServer) -> None:
        self.server = server
        limits = server.limits
        self._max_url = limits.max_url_bytes
        self._max_field = limits.max_header_bytes
        self._max_head = MAX_HEAD + limits.max_url_bytes
        self._header_timeout = limits.header_timeout
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._peer: str | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._fields: list[tuple[str, str]] = []
        self._in_head = True  # a message's headers are being read
        self._in_body = False  # its body (or trailers) are: it has its answer
        self._fed = 0  # bytes fed since the head or the body began
        self._pending: deque[_Request] = deque()
        self._busy: asyncio.Task[Answer] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0  # when _on_due is due (loop time)
        self._on_due: Callable[[], None] | None = None
        self._timing_head = False  # the timer is the header deadline
        self._last_read = False  # the last request is in: read no more
        self._finishing = False  # close once the pending answers are out
        self._closed = False  # the last answer is out (or the peer gone)
        self._eof = False  # the peer has sent all it will
        self._write_paused = False
        self._queue_full = False

    # -- the connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses.
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._peer = peer[0] if isinstance(peer, tuple) else None
        self.server.add(self)
        self._time_head()

    def connection_lost(self, exc: Exception | None) -> None:
        # A decision being made runs on (a shared store lookup may wait on
        # it); its answer is dropped.
        self.server.forget(self)
        self._disarm()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._transport = None
        self._closed = True
        self._pending.clear()

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._resume_reading()

    def _resume_reading(self) -> None:
        """Read again, unless the peer does not read or answers pile up."""
        if self._transport is not None and not (
            self._write_paused or self._queue_full or self._last_read
        ):
            self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._last_read:
            return  # after the last request, or while lingering: dropped
        if self._in_head or self._in_body:
            self._fed += len(data)
        if not self._feed(data):
            return
        # httptools holds a header (or trailer) until its end: bound what
        # a message may hold before it is complete.
        if self._in_head and self._fed > self._max_head:
            self._refuse(_HEADERS_TOO_LARGE)
        elif self._in_body and self._fed > MAX_BODY + MAX_HEAD:
            self.finish(linger=True)  # it has had its answer: no other

    def _feed(self, data: bytes) -> bool:
        """Parse ``data``; False if parsing ended (refused, or the last request)."""
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # the request is in, and the last; nothing is upgraded here
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Refused):
                self._refuse(cause.answer)
            elif not isinstance(cause, _LastRead):
                log.error("decision_failed", error=type(cause).__name__)
                self._refuse(_FAILED)
        except httptools.HttpParserError as exc:
            log.info(
                "bad_http_request",
                status=400,
                error=type(exc).__name__,
                client=self._peer,
            )
            self._refuse(_UNPARSABLE)
        else:
            return True
        return False

    def eof_received(self) -> bool:
        """The peer sent all it will (a half-close): answer what it asked,
        then close; keep the transport open until then."""
        self._eof = True
        self._last_read = True
        if self._busy is None and not self._pending:
            self._closed = True
            # Nothing to answer: the transport closes once what was written
            # is read; a peer that never reads it is cut off after LINGER.
            self._arm(LINGER, self.abort)
            return False
        return True

    def finish(self, linger: bool = False) -> None:
        """Close once the answers being made are out (a graceful stop)."""
        self._last_read = self._finishing = True
        transport = self._transport
        if self._busy is None and not self._pending and transport is not None:
            self._closed = True
            if linger:
                self._close_lingering(transport)
            else:
                transport.close()

    def buffered(self) -> int:
        """Bytes written and not yet taken by the peer's socket."""
        transport = self._transport
        return transport.get_write_buffer_size() if transport is not None else 0

    def socket(self) -> Any:
        """The connection's socket (for its options), None once closed."""
        transport = self._transport
        return transport.get_extra_info("socket") if transport is not None else None

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # -- httptools callbacks

    def on_message_begin(self) -> None:
        if self._last_read:
            raise _LastRead  # bytes after the last request are not one
        self._url = b""
        self._fields = []
        self._in_head = True
        self._fed = 0
        self._time_head()

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._max_url:
            raise _Refused(_URI_TOO_LONG)

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) + len(value) > self._max_field or len(self._fields) >= MAX_FIELDS:
            raise _Refused(_HEADERS_TOO_LARGE)
        self._fields.append(
            (
                name.decode("utf-8", "surrogateescape"),
                value.decode("utf-8", "surrogateescape"),
            )
        )

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._in_body = True
        self._fed = 0
        self._disarm()
        parser = self._parser
        method = parser.get_method().decode("ascii")
        headers = CIMultiDict(self._fields)
        keep_alive = parser.should_keep_alive() and parser.get_http_version() == "1.1"
        target = self._url.decode("ascii", "surrogateescape")
        request = _Request(method, target, headers, keep_alive)
        expect = headers.get("Expect")
        if expect is not None:
            # The decision needs no body: answer now, and never read one.
            request.keep_alive = False
            if expect.lower() != "100-continue":
                request.answer = _EXPECTATION
        elif parser.should_upgrade():
            request.keep_alive = False
        self._queue(request)

    def on_message_complete(self) -> None:
        self._in_body = False
        self._fed = 0

    # -- answers

    def _queue(self, request: _Request) -> None:
        if not request.keep_alive:
            self._last_read = True
        self._pending.append(request)
        if len(self._pending) > MAX_PENDING and self._transport is not None:
            self._queue_full = True
            self._transport.pause_reading()
        if self._busy is None:
            self._answer_pending()

    def _answer_pending(self) -> None:
        """Answer the waiting requests in order, until one must wait on I/O."""
        self._answer_in_order()
        if self._queue_full and len(self._pending) <= MAX_PENDING // 2:
            self._queue_full = False
            self._resume_reading()

    def _answer_in_order(self) -> None:
        pending = self._pending
        while pending and self._busy is None and not self._closed:
            request = pending[0]
            exchange = Exchange()
            try:
                answer = request.answer or self._decide(request, exchange)
            except Exception as exc:  # a bug: answered, never passed
                log.error("decision_failed", error=type(exc).__name__, exc_info=exc)
                request.keep_alive = False
                answer = _FAILED
            if not isinstance(answer, Answer):
                self._busy = self._loop.create_task(answer)
                self._busy.add_done_callback(partial(self._decided, exchange=exchange))
                return
            pending.popleft()
            self._write(request, answer, exchange)

    def _decide(
        self, request: _Request, exchange: Exchange
    ) -> Answer | Coroutine[Any, Any, Answer]:
        target = request.target
        path = target.partition("?")[0]
        decider = self.server.decider
        if not target.startswith("/"):
            return _BAD_TARGET
        if not decider.serves(path):
            return _NOT_FOUND
        return decider.decide_now(
            request.method, target, request.headers, self._peer, exchange
        )

    def _decided(self, task: asyncio.Task[Answer], *, exchange: Exchange) -> None:
        self._busy = None
        if task.cancelled():
            log.warning("decision_cancelled", client=self._peer)
            error: BaseException | None = asyncio.CancelledError()
        else:
            error = task.exception()
            if error is not None:
                log.error("decision_failed", error=type(error).__name__, exc_info=error)
        if self._closed:
            return  # the peer is gone: the answer is dropped
        request = self._pending.popleft()
        if error is not None:
            request.keep_alive = False
            answer = _FAILED
        else:
            answer = task.result()
        self._write(request, answer, exchange)
        self._answer_pending()

    def _write(self, request: _Request, answer: Answer, exchange: Exchange) -> None:
        transport = self._transport
        if transport is None or self._closed or transport.is_closing():
            self._closed = True  # reset by the peer: connection_lost follows
            return
        last = not request.keep_alive or (
            (self._eof or self._finishing) and not self._pending
        )
        try:
            data = self._encode(answer, not last, request.head)
        except (ValueError, UnicodeError) as exc:
            # SECURITY: never split an answer (a login or path made it here).
            log.error("answer_not_encodable", error=type(exc).__name__)
            answer, last = _FAILED, True
            data = self._encode(answer, False, request.head)
        transport.write(data)
        if request.method:  # not a request that could not be read
            self._account(request, answer.status, exchange)
        if last:
            self._closed = self._last_read = True
            self._pending.clear()  # after a 500: what was read, unanswered
            self._close_lingering(transport)
        elif not self._pending and not self._in_head:
            self._arm(KEEPALIVE_TIMEOUT, self._idle)

    def _account(self, request: _Request, status: int, exchange: Exchange) -> None:
        """The access line and metrics of one answered request."""
        seconds = time.monotonic() - request.started
        server = self.server
        log_exchange(
            server.access_log, exchange, request.method, request.target, status,
            self._peer, seconds, server.pid,
        )  # fmt: skip
        exchange.count(server.metrics, status, seconds)

    def _encode(self, answer: Answer, keep_alive: bool, head: bool) -> bytes:
        body = answer.body
        lines = [
            _STATUS_LINES.get(answer.status)
            or f"HTTP/1.1 {answer.status} \r\n".encode(),
            _SERVER_LINE,
            f"Date: {self.server.date()}\r\nContent-Length: {len(body)}\r\n".encode(),
        ]
        if body:
            lines.append(_JSON_LINE)
        for name, value in answer.headers:
            if "\r" in value or "\n" in value or "\x00" in value:
                raise ValueError("a header value ends its line")
            lines.append(f"{name}: {value}\r\n".encode())
        if not keep_alive:
            lines.append(b"Connection: close\r\n")
        lines.append(b"\r\n")
        if body and not head:
            lines.append(body)
        return b"".join(lines)

    def _refuse(self, answer: Answer) -> None:
        """A request that cannot be read: answered after those before it,
        then the connection is closed. In a body, the request has had its
        answer: the connection closes after it, without another."""
        if self._last_read or self._closed:
            return
        self._in_head = False
        if self._in_body:
            self._in_body = False
            self.finish(linger=True)
            return
        self._queue(_Request("", "", CIMultiDict(), keep_alive=False, answer=answer))

    def _close_lingering(self, transport: asyncio.Transport) -> None:
        """Close after the last answer, reading (and dropping) what the peer
        still sends for up to ``LINGER`` seconds: closed with unread bytes,
        the socket would reset, and the peer lose the answer unread. Aborted
        then, whether or not the peer read what was written."""
        self._disarm()
        self._arm(LINGER, self.abort)
        if self._eof or not transport.can_write_eof():
            transport.close()
            return
        try:
            transport.write_eof()
        except OSError:  # the peer reset the connection meanwhile
            transport.abort()
            return
        transport.resume_reading()

    # -- timers

    def _time_head(self) -> None:
        """The header deadline, from a connection or a message's first
        byte (not again for the first message of a new connection)."""
        if not self._timing_head:
            self._arm(self._header_timeout, self._headers_too_slow)
            self._timing_head = True

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        """``callback`` in ``delay`` seconds, instead of what was due.

        One timer handle per connection, moved lazily: a deadline later
        than the handle's waits in ``_due`` until the handle fires, and the
        handle is never set further than a header timeout ahead; so the two
        deadlines of every request (its headers', then the idle one) make
        and cancel no handle (3% of a decision's CPU in a profile).
        """
        now = self._loop.time()
        due = now + delay
        self._due, self._on_due = due, callback
        self._timing_head = False
        timer = self._timer
        if timer is None or timer.when() > due:
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(
                min(due, now + self._header_timeout), self._deadline
            )

    def _disarm(self) -> None:
        self._on_due = None
        self._timing_head = False

    def _deadline(self) -> None:
        self._timer = None
        callback = self._on_due
        if callback is None:
            return
        now = self._loop.time()
        if now < self._due:
            self._timer = self._loop.call_at(
                min(self._due, now + self._header_timeout), self._deadline
            )
            return
        self._disarm()
        callback()

    def _headers_too_slow(self) -> None:
        if self._queue_full:
            # Reading is paused by us (answers wait on the store), not by
            # the peer: not its delay. A peer that does not read is cut off.
            self._time_head()
            return
        # SECURITY: slowloris, a connection held open by dribbled headers.
        log.info("header_timeout", client=self._peer, after=self._header_timeout)
        self._refuse(_TIMEOUT)

    def _idle(self) -> None:
        transport = self._transport
        if transport is not None and self._busy is None and not self._pending:
            self._closed = self._last_read = True
            self._close_lingering(transport)
