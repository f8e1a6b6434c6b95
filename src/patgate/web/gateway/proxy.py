"""The catch-all handler: the request's facts → ``Gate.check`` → upstream.

What is checked is what is sent: the gate canonicalises the path once,
matches and authorises it, and the handler forwards that same string with
``URL(..., encoded=True)``, so nothing re-decodes it on the way.
Bodies stream both ways in chunks; only a response body of known length up
to ``CHUNK`` is read whole, to leave with its headers in one write.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from aiohttp import (
    ClientError,
    ClientResponse,
    ClientSession,
    StreamReader,
    hdrs,
    web,
)
from aiohttp.helpers import sentinel
from multidict import CIMultiDict
from yarl import URL

from patgate.answers import error_answer
from patgate.config import Config, RouteConfig
from patgate.gate import Gate, RequestFacts, Verdict
from patgate.policy import Decision
from patgate.routing import CompiledRoute
from patgate.web.errors import error_response, response_of
from patgate.web.gateway.headers import (
    add_forwarding,
    copy_response_headers,
    identity_values,
    upstream_headers,
)
from patgate.web.gateway.inflight import InFlight
from patgate.web.gateway.streams import StreamRegistry
from patgate.web.gateway.targets import ProxyState, RouteTarget
from patgate.web.gateway.webdav import map_if_urls
from patgate.web.ops.access import EXCHANGE, Exchange
from patgate.web.ops.metrics import Metrics
from patgate.web.protocol import CONTINUE, expects_continue

CHUNK = 256 * 1024
NOT_FOUND_ANSWER = error_answer(404, "not_found")


class ProxyHandler:
    """``request`` → :class:`RequestFacts` → ``Gate.check`` → forward or refuse.

    It counts every request in the metrics; aiohttp's access logger writes
    its line (:class:`~patgate.web.ops.access.Exchange` says what happened).
    """

    def __init__(
        self,
        state: ProxyState,
        gate: Gate,
        session: ClientSession,
        streams: StreamRegistry,
        metrics: Metrics,
        in_flight: InFlight,
    ) -> None:
        self.state = state
        self.gate = gate
        self.session = session
        self.streams = streams
        self.metrics = metrics
        self.in_flight = in_flight

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        # One coroutine for the request's facts, the check and the refusal:
        # in a running gateway each coroutine per request costs ~1 us.
        exchange = Exchange()
        request[EXCHANGE] = exchange
        in_flight = self.in_flight
        in_flight.enter()
        started = time.monotonic()
        response: web.StreamResponse
        try:
            state = self.state
            facts = RequestFacts(
                request.method,
                request.raw_path,
                request.headers,
                request.remote,
                request.scheme,
            )
            verdict = await self.gate.check(facts, state.rules)
            exchange.note(verdict)
            route = verdict.route
            if verdict.answer is not None or route is None:
                response = response_of(verdict.answer or NOT_FOUND_ANSWER)
            else:
                response = await self._forward(request, exchange, verdict, route)
        except asyncio.CancelledError:
            in_flight.cancelled(request, exchange, time.monotonic() - started)
            raise
        finally:
            in_flight.leave()
        status = response.status
        exchange.count(self.metrics, status, time.monotonic() - started)
        if in_flight.draining or (
            request.body_exists
            and not request.content.is_eof()
            and not response.prepared
            and expects_continue(request)
        ):
            # A refused upload that waits for its 100 Continue: its body
            # will never come, so the connection cannot carry another request.
            response.force_close()
        return response

    async def _forward(
        self,
        request: web.Request,
        exchange: Exchange,
        verdict: Verdict,
        route: CompiledRoute,
    ) -> web.StreamResponse:
        state = self.state
        config = route.config
        target = state.targets[config.name]
        trusted = verdict.client is not None and verdict.client.trusted
        headers = upstream_headers(
            request.headers,
            drop=target.drop if trusted else target.drop_untrusted,
            peer_trusted=trusted,
            token_prefix=state.config.token_prefix,
        )
        add_forwarding(
            headers,
            peer=request.remote,
            scheme=request.scheme,
            host=request.headers.get(hdrs.HOST),
            peer_trusted=trusted,
        )
        if request.content_length is not None and request.body_exists:
            headers[hdrs.CONTENT_LENGTH] = str(request.content_length)
        if verdict.destination is not None:
            headers["Destination"] = target.base + route.upstream_path(
                verdict.destination
            )
        if_header = request.headers.get("If")
        if if_header is not None and "<" in if_header:
            headers["If"] = map_if_urls(if_header, route, target.base)
        decision = verdict.decision
        if decision is not None:
            _add_identity(headers, state.config, decision)
        for name, value in target.inject:
            headers[name] = value
        if request.body_exists and expects_continue(request):
            # SECURITY: only now, authorised, may the client send its body.
            await request.writer.write(CONTINUE)
            request.writer.output_size = 0  # the answer's own bytes come next
        url = target.base + route.upstream_path(verdict.path)
        if verdict.query:
            url += "?" + verdict.query
        stream = self.streams.open(route, verdict.view, decision)
        try:
            if _wants_websocket(request) and config.websocket:
                return await self._websocket(
                    request, exchange, URL(url, encoded=True), headers, config
                )
            return await self._stream(
                request,
                exchange,
                URL(url, encoded=True),
                headers,
                target,
                config.error_style,
            )
        finally:
            self.streams.close(stream)

    async def _websocket(
        self,
        request: web.Request,
        exchange: Exchange,
        url: URL,
        headers: CIMultiDict[str],
        config: RouteConfig,
    ) -> web.StreamResponse:
        from patgate.web.gateway.websocket import proxy_websocket

        task = asyncio.current_task()
        if task is not None:
            self.in_flight.add_websocket(task)  # a stop closes it at once
        try:
            return await proxy_websocket(
                request, exchange, self.session, url, headers, config.error_style
            )
        finally:
            if task is not None:
                self.in_flight.discard_websocket(task)

    async def _stream(
        self,
        request: web.Request,
        exchange: Exchange,
        url: URL,
        headers: CIMultiDict[str],
        target: RouteTarget,
        style: str,
    ) -> web.StreamResponse:
        body: object = request.content if request.body_exists else None
        limited: _LimitedBody | None = None
        limit = self.state.rules.max_body
        if body is not None and limit is not None and request.content_length is None:
            # A chunked body has announced no length the gate could check.
            body = limited = _LimitedBody(request.content, limit)
        try:
            upstream = await self.session.request(
                request.method,
                url,
                headers=headers,
                data=body,
                allow_redirects=False,
                # The session's own (the default route timeouts) unless this
                # route has others: a per-request timeout costs on every call.
                timeout=target.timeout or sentinel,
            )
        except (TimeoutError, ClientError, OSError) as exc:
            if limited is not None and limited.exceeded:
                exchange.reason = "body_too_large"
                return error_response(413, "payload_too_large", style=style)
            return _upstream_failed(exc, style)
        async with upstream:
            length = upstream.headers.get(hdrs.CONTENT_LENGTH)
            size = int(length) if length is not None and length.isdigit() else None
            if (
                size is not None
                and size <= CHUNK
                and _has_body(request.method, upstream.status)
            ):
                # The path every API call takes: one send instead of two, and
                # no chunk loop. Bodies of unknown length (event streams) and
                # large ones stream, headers first. Nothing is sent yet, so a
                # failing upstream is a 502/504.
                try:
                    body = await upstream.read()
                except (TimeoutError, ClientError, OSError) as exc:
                    return _upstream_failed(exc, style)
                small = web.Response(
                    status=upstream.status, reason=upstream.reason, body=body
                )
                copy_response_headers(upstream.headers, small.headers)
                return small
            return await self._relay(request, exchange, upstream, size)

    async def _relay(
        self,
        request: web.Request,
        exchange: Exchange,
        upstream: ClientResponse,
        size: int | None,
    ) -> web.StreamResponse:
        """A large body, or one of unknown length: headers first, then chunks."""
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        copy_response_headers(upstream.headers, response.headers)
        if size is not None:
            response.content_length = size
        if self.in_flight.draining:
            response.force_close()
        exchange.response = response
        try:
            await response.prepare(request)
            async for chunk in upstream.content.iter_chunked(CHUNK):
                await response.write(chunk)
        except (TimeoutError, ClientError, ConnectionResetError):
            # The upstream failed mid-body (headers are gone already:
            # cutting the connection is the only honest way to say the
            # body is short), or the client left (ClientConnectionResetError).
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write_eof()
        return response


class _LimitedBody:
    """A chunked request body, cut once it passes ``limit`` bytes.

    The upstream then sees a body that never ends properly (no last chunk)
    and discards it; the client gets a 413 if nothing was answered yet.
    """

    def __init__(self, content: StreamReader, limit: int) -> None:
        self.content = content
        self.limit = limit
        self.exceeded = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self.content.iter_any():
            seen += len(chunk)
            if seen > self.limit:
                self.exceeded = True
                raise ValueError("request body over limits.max_body_bytes")
            yield chunk


def _add_identity(
    headers: CIMultiDict[str], config: Config, decision: Decision
) -> None:
    """The gateway's identity headers, set last (no client header can fake them)."""
    names = config.identity_headers
    for name, value in identity_values(
        {"user": names.user, "token_id": names.token_id, "scopes": names.scopes},
        decision.user or "",
        decision.token_id or "",
        decision.scopes,
    ):
        headers[name] = value


def _upstream_failed(exc: BaseException, style: str) -> web.StreamResponse:
    """Before anything was sent: too slow is a 504, anything else a 502."""
    if isinstance(exc, TimeoutError):
        return error_response(504, "gateway_timeout", style=style)
    return error_response(502, "bad_gateway", style=style)


def _has_body(method: str, status: int) -> bool:
    """Whether the upstream's Content-Length is that of a body on the wire."""
    return method != "HEAD" and status >= 200 and status not in (204, 304)


def _wants_websocket(request: web.Request) -> bool:
    return request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
