"""Proxied requests in progress: what a graceful stop waits for.

aiohttp's own graceful shutdown stops reading from every connection at once,
so an upload in progress would stall until the timeout and fail: a stop
waits here for the proxied requests first, with the listening socket closed,
and only then lets aiohttp close what is left (idle keep-alive connections).
Responses started meanwhile say ``Connection: close``; WebSockets, which
would hold the stop for the whole timeout, close at once.

aiohttp writes no access line for a handler that was cancelled: a stream cut
by a revocation (``StreamRegistry``) or by a stop gets its line here, with the
status it was sent with (499 if none was sent yet).

The proxy handler calls :meth:`enter` and :meth:`leave` itself: an aiohttp
middleware, a wrapper coroutine or an ``on_response_prepare`` signal each
cost every request more than the counting does.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from patgate.logs import AccessLog
from patgate.web.ops.access import Exchange, access_logger_class
from patgate.web.ops.metrics import Metrics


class InFlight:
    def __init__(self, access_log: AccessLog, metrics: Metrics) -> None:
        self.count = 0
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._websockets: set[asyncio.Task[object]] = set()
        logger_class = access_logger_class(access_log)
        self._access = logger_class(logging.getLogger("aiohttp.access"), "")
        self._metrics = metrics

    def enter(self) -> None:
        self.count += 1
        if self.count == 1:
            self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if not self.count:
            self._idle.set()

    def cancelled(
        self, request: web.BaseRequest, exchange: Exchange, seconds: float
    ) -> None:
        """The access line and count of a request whose handler was cancelled."""
        sent = exchange.response or web.StreamResponse(status=499)
        status = sent.status
        outcome = exchange.outcome(status)
        self._metrics.count(exchange.route, outcome, None, status, seconds)
        if self._access.enabled:
            self._access.log(request, sent, seconds)

    def add_websocket(self, task: asyncio.Task[object]) -> None:
        self._websockets.add(task)

    def discard_websocket(self, task: asyncio.Task[object]) -> None:
        self._websockets.discard(task)

    def drain(self) -> None:
        """From now on, responses close their connection; WebSockets close."""
        self.draining = True
        for task in list(self._websockets):
            task.cancel()

    async def finished(self) -> None:
        await self._idle.wait()
