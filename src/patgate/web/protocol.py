"""The HTTP connection: aiohttp's request handler with patgate's own error answers.

aiohttp answers a request it cannot parse itself, before any application
code runs, with a body that quotes the raw request line or header: a token
in ``?session=`` or after ``Bearer`` with it. :class:`GatewayRequestHandler`
answers those with the gateway's fixed JSON error instead.
:class:`GatewayRunner` is ``web.AppRunner`` serving through it; ``serve``
and the test harness both use it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from patgate.web.errors import error_response

# The error code of the answer to an unparsable request, by status.
_CODES = {400: "invalid_request", 413: "invalid_request", 500: "internal_error"}


class GatewayRequestHandler(RequestHandler):
    """One client connection; see the module docstring."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp's own logs the error (patgate.web.ops keeps the message of a
        # parse error out of the log) and refuses once a response has begun.
        super().handle_error(request, status, exc, None)
        # SECURITY: the message quotes the raw request line or header (the
        # token in it); the answer says only what went wrong.
        response = error_response(status, _CODES.get(status, "invalid_request"))
        response.force_close()
        return response


class GatewayServer(web.Server):
    """The ``web.Server`` an ``AppRunner`` makes, making our handler per connection."""

    def __init__(self, built: web.Server) -> None:
        super().__init__(
            built.request_handler,
            request_factory=built.request_factory,
            handler_cancellation=built.handler_cancellation,
            loop=built._loop,
            **built._kwargs,
        )

    def __call__(self) -> RequestHandler:
        return GatewayRequestHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """``web.AppRunner`` serving through :class:`GatewayRequestHandler`."""

    __slots__ = ()

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)

    async def _make_server(self) -> web.Server:
        return GatewayServer(await super()._make_server())
