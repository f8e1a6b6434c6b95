"""The HTTP connection: aiohttp's handler with a header deadline and our answers.

- **Header timeout** (slowloris): a client must send a request's whole
  header block within ``limits.header_timeout`` seconds of connecting, or
  of the first byte of a later request on the connection; otherwise it gets
  a 408 and the connection is closed. aiohttp has no such limit (its
  keep-alive timer only starts once a response went out, and is an hour).
  The time a body takes is not counted (uploads may be slow and large).
- **Parse errors**: aiohttp answers a request it cannot parse itself, with
  a body quoting the raw request line or header (a token in ``?session=``
  or after ``Bearer`` with it); we answer with the gateway's fixed JSON.
- **Server**: ``patgate`` on every answer, never the Python and aiohttp
  versions (:func:`name_the_server` for the app's answers, the handler
  for its own).

:class:`GatewayRunner` is ``web.AppRunner`` serving through
:class:`GatewayRequestHandler`; ``serve`` and the test harness both use it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiohttp import HttpVersion11, hdrs, web, web_response
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from patgate.web.errors import error_response

log = structlog.get_logger("patgate.http")

SERVER_NAME = "patgate"
DEFAULT_HEADER_TIMEOUT = 10.0
# The error code of the answer to an unparsable request, by status.
_CODES = {400: "invalid_request", 413: "invalid_request", 500: "internal_error"}
_REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"Server: " + SERVER_NAME.encode() + b"\r\n"
    b"Content-Length: 0\r\n"
    b"Connection: close\r\n\r\n"
)


def name_the_server() -> None:
    """Every answer says ``Server: patgate``, never the Python and aiohttp versions.

    SECURITY: aiohttp's default names them (a fingerprint for known bugs).
    aiohttp fills in ``Server`` from a module constant when a response has
    none, so that constant is set once here: no per-response hook (an
    ``on_response_prepare`` signal costs every request ~1.5 us). The proxy
    drops an upstream's own ``Server`` (``copy_response_headers``), as nginx
    does, so it names no upstream software either.
    """
    web_response.SERVER_SOFTWARE = SERVER_NAME  # type: ignore[attr-defined]


class GatewayRequestHandler(RequestHandler):
    """One client connection; see the module docstring."""

    __slots__ = ("_body", "_header_timeout", "_header_timer")

    def __init__(
        self, manager: web.Server, *, header_timeout: float, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None
        # The body of the request whose headers came last; None before any.
        self._body: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._start_header_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # Bytes that arrive while no body is being read start a header block.
        body = self._body
        reading_body = body is not None and not body.is_eof()
        count = self._request_count
        RequestHandler.data_received(self, data)
        if self._request_count != count:
            # _stop_header_timer, inlined: this runs for every request, and
            # the call cost 3% of the proxy mode's req/s (an A/B run).
            timer = self._header_timer
            if timer is not None:
                timer.cancel()
                self._header_timer = None
            messages = self._messages
            self._body = messages[-1][1] if messages else None
        elif (
            data
            and not reading_body
            and not self._upgraded
            and self._header_timer is None
        ):
            self._start_header_timer()

    def _start_header_timer(self) -> None:
        self._header_timer = self._loop.call_later(
            self._header_timeout, self._headers_too_slow
        )

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self._request_in_progress or self._messages:
            # A request is being answered: the bytes after it are the
            # client's next request, pipelined; look again later.
            self._start_header_timer()
            return
        # SECURITY: slowloris, a connection held open by dribbled headers.
        log.info("header_timeout", client=self._client(), after=self._header_timeout)
        if self.transport is not None:
            self.transport.write(_REQUEST_TIMEOUT)
        self.force_close()

    def _client(self) -> str | None:
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return peer[0] if isinstance(peer, tuple) else None

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp's own logs the error (patgate.web.ops.access keeps the message of a
        # parse error out of the log) and refuses once a response has begun.
        super().handle_error(request, status, exc, None)
        # SECURITY: the message quotes the raw request line or header (the
        # token in it); the answer says only what went wrong.
        response = error_response(status, _CODES.get(status, "invalid_request"))
        response.headers[hdrs.SERVER] = SERVER_NAME
        response.force_close()
        return response


class GatewayServer(web.Server):
    """The ``web.Server`` an ``AppRunner`` makes, making our handler per connection."""

    def __init__(self, built: web.Server, header_timeout: float) -> None:
        super().__init__(
            built.request_handler,
            request_factory=built.request_factory,
            handler_cancellation=built.handler_cancellation,
            loop=built._loop,
            **built._kwargs,
        )
        self.header_timeout = header_timeout

    def __call__(self) -> RequestHandler:
        return GatewayRequestHandler(
            self, loop=self._loop, header_timeout=self.header_timeout, **self._kwargs
        )


class GatewayRunner(web.AppRunner):
    """``web.AppRunner`` serving through :class:`GatewayRequestHandler`."""

    __slots__ = ("_header_timeout",)

    def __init__(
        self,
        app: web.Application,
        *,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout

    async def _make_server(self) -> web.Server:
        return GatewayServer(await super()._make_server(), self._header_timeout)


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


async def answer_expect(request: web.Request) -> web.StreamResponse | None:
    """The catch-all route's ``expect_handler``: no ``100 Continue`` here.

    SECURITY: aiohttp's default sends ``100 Continue`` at once, before the
    request is authorised, so a client without a token starts its upload;
    and it quotes an unknown expectation in its 417 body. The proxy sends
    ``100 Continue`` once it has authorised the request (``gateway.proxy``); an
    expectation other than ``100-continue`` is a 417 that quotes nothing.
    """
    if request.version != HttpVersion11 or expects_continue(request):
        return None
    response = error_response(417, "expectation_failed")
    response.force_close()  # the body, if any, is not read
    return response


def expects_continue(request: web.Request) -> bool:
    return (
        request.version == HttpVersion11
        and request.headers.get(hdrs.EXPECT, "").lower() == "100-continue"
    )


async def continue_at_once(request: web.Request) -> web.StreamResponse | None:
    """The ``expect_handler`` of the answers a gateway makes itself (the API).

    Their bodies are small and read by the handler that answers: ``100
    Continue`` at once, as aiohttp does, but an unknown expectation is a 417
    that quotes nothing.
    """
    if request.version != HttpVersion11:
        return None
    if not expects_continue(request):
        return await answer_expect(request)
    await request.writer.write(CONTINUE)
    return None
