"""The catch-all handler: canonical path → route → credential → gate → upstream.

What is checked is what is sent: the path is canonicalised once
(``patgate.paths``), matched, authorised, and that same string is forwarded
with ``URL(..., encoded=True)`` so nothing re-decodes it on the way.
Bodies stream both ways in chunks; only a response body of known length up
to ``CHUNK`` is read whole, to leave with its headers in one write.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

from aiohttp import (
    ClientError,
    ClientResponse,
    ClientSession,
    ClientTimeout,
    HttpVersion11,
    hdrs,
    web,
)
from aiohttp.helpers import sentinel
from multidict import CIMultiDict
from yarl import URL

from patgate.config import Config, RouteConfig
from patgate.extract import (
    CredentialError,
    extract_credential,
    strip_query_params,
    strip_token_pairs,
)
from patgate.gate import Gate, RequestView
from patgate.paths import PathError, normalise_path
from patgate.policy import CompiledRoute, Decision, Router
from patgate.web.errors import error_response, refusal_response
from patgate.web.headers import (
    add_forwarding,
    client_address,
    copy_response_headers,
    header_drops,
    header_key,
    identity_values,
    is_trusted,
    parse_networks,
    upstream_headers,
    valid_host,
)
from patgate.web.inflight import InFlight
from patgate.web.ops import EXCHANGE, Exchange, Metrics
from patgate.web.streams import StreamRegistry
from patgate.web.upstream import DEFAULT_TIMEOUT

CHUNK = 256 * 1024
_IF_URL = re.compile(r"<([^>]+)>")


@dataclass(frozen=True, slots=True)
class RouteTarget:
    """What forwarding needs of a route, computed once per config load."""

    base: str  # upstream origin + base path, no trailing slash
    origin: URL
    timeout: ClientTimeout | None  # None: the session's DEFAULT_TIMEOUT
    drop: frozenset[str]  # folded header names never forwarded from a trusted peer
    drop_untrusted: frozenset[str]  # ... from any other peer
    inject: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class ProxyState:
    """Everything the handler reads; swapped whole on a config reload."""

    config: Config
    router: Router
    targets: dict[str, RouteTarget]
    trusted: tuple[object, ...]

    @classmethod
    def from_config(cls, config: Config) -> ProxyState:
        identity = {header_key(name) for name in _identity_names(config)}
        targets = {
            route.name: _target(route, frozenset(identity)) for route in config.routes
        }
        return cls(
            config=config,
            router=Router.from_config(config.routes),
            targets=targets,
            trusted=parse_networks(config.trusted_proxies),
        )


def _identity_names(config: Config) -> tuple[str, str, str]:
    names = config.identity_headers
    return (names.user, names.token_id, names.scopes)


def _target(route: RouteConfig, identity: frozenset[str]) -> RouteTarget:
    upstream = URL(route.upstream)
    names = set(identity)
    if route.auth != "none":
        names.add("authorization")
        if "header" in route.credentials and route.api_key_header:
            names.add(route.api_key_header)
    inject = tuple(
        (name, secret_text(value)) for name, value in route.upstream_headers.items()
    )
    names.update(name for name, _ in inject)
    drop, drop_untrusted = header_drops(names, route.pass_headers)
    timeout = ClientTimeout(
        total=None, sock_connect=route.connect_timeout, sock_read=route.read_timeout
    )
    return RouteTarget(
        base=str(upstream).rstrip("/"),
        origin=upstream.origin(),
        timeout=None if timeout == DEFAULT_TIMEOUT else timeout,
        drop=drop,
        drop_untrusted=drop_untrusted,
        inject=inject,
    )


def secret_text(value: object) -> str:
    """The text of a config value that may be wrapped as a Secret."""
    raw = getattr(value, "value", value)
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class ProxyHandler:
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
        exchange = Exchange(self.metrics)
        request[EXCHANGE] = exchange
        in_flight = self.in_flight
        in_flight.enter()
        started = time.monotonic()
        try:
            response = await self._handle(request, exchange)
        except asyncio.CancelledError:
            in_flight.cancelled(request, exchange, time.monotonic() - started)
            raise
        finally:
            in_flight.leave()
        if in_flight.draining or (
            request.body_exists
            and not request.content.is_eof()
            and not response.prepared
            and _expects_continue(request)
        ):
            # A refused upload that waits for its 100 Continue: its body
            # will never come, so the connection cannot carry another request.
            response.force_close()
        return response

    async def _handle(
        self, request: web.Request, exchange: Exchange
    ) -> web.StreamResponse:
        state = self.state
        raw_path, _, raw_query = request.raw_path.partition("?")
        if raw_query and not _clean_query(raw_query):
            # SECURITY: the pure-Python parser lets raw non-ASCII and control
            # bytes through where the C parser refuses them; refuse both alike.
            exchange.reason = "bad_query"
            return error_response(
                400, "invalid_request", message="The query string is malformed."
            )
        try:
            path = normalise_path(raw_path)
        except PathError as exc:
            exchange.reason = "bad_path"
            return error_response(400, "invalid_request", message=str(exc))
        host = request.headers.get(hdrs.HOST)
        if host is not None and not valid_host(host):
            exchange.reason = "bad_host"
            return error_response(
                400, "invalid_request", message="The Host header is not host[:port]."
            )
        route = state.router.match(host, path)
        if route is None:
            return error_response(404, "not_found")
        config = route.config
        exchange.route = config.name
        peer = request.remote
        peer_trusted = is_trusted(peer, state.trusted)  # type: ignore[arg-type]
        client_ip = client_address(peer, request.headers, state.trusted)  # type: ignore[arg-type]
        decision: Decision | None = None
        view: RequestView | None = None
        if config.auth != "none":
            started = time.perf_counter()
            credential = extract_credential(
                request.headers.getall(hdrs.AUTHORIZATION, ()),
                request.headers.getall(config.api_key_header, ())
                if "header" in config.credentials
                else (),
                raw_query,
                config.credentials,
                config.query_params,
            )
            if isinstance(credential, CredentialError):
                exchange.reason = credential.code
                return error_response(
                    400,
                    "invalid_request",
                    style=config.error_style,
                    message=credential.message,
                )
            view = RequestView(request.method, path, client_ip, credential)
            decision = await self.gate.authorize(route, view)
            exchange.auth_seconds = time.perf_counter() - started
            exchange.decision = decision
            if not decision.allowed:
                return refusal_response(
                    decision,
                    realm=config.realm,
                    credentials=config.credentials,
                    style=config.error_style,
                )
            if "query" in config.credentials and raw_query:
                # SECURITY: the token never travels on in the forwarded URL.
                raw_query = strip_query_params(raw_query, config.query_params)
        if raw_query:
            # SECURITY: nor does any other token, in a parameter this route
            # does not read (a public route, a route without "query").
            raw_query = strip_token_pairs(raw_query, state.config.token_prefix)
        return await self._forward(
            request, exchange, route, path, raw_query, view, decision, peer_trusted
        )

    async def _forward(
        self,
        request: web.Request,
        exchange: Exchange,
        route: CompiledRoute,
        path: str,
        raw_query: str,
        view: RequestView | None,
        decision: Decision | None,
        peer_trusted: bool,
    ) -> web.StreamResponse:
        state = self.state
        config = route.config
        target = state.targets[config.name]
        headers = upstream_headers(
            request.headers,
            drop=target.drop if peer_trusted else target.drop_untrusted,
            peer_trusted=peer_trusted,
            token_prefix=state.config.token_prefix,
        )
        add_forwarding(
            headers,
            peer=request.remote,
            scheme=request.scheme,
            host=request.headers.get(hdrs.HOST),
            peer_trusted=peer_trusted,
        )
        if request.content_length is not None and request.body_exists:
            headers[hdrs.CONTENT_LENGTH] = str(request.content_length)
        refused = None
        if "Destination" in request.headers or "If" in request.headers:
            refused = await self._rewrite_webdav(
                request, route, target, headers, view, peer_trusted
            )
        if refused is not None:
            if refused.status == 502:
                exchange.reason = "foreign_destination"
            return refused
        if decision is not None:
            _add_identity(headers, state.config, decision)
        for name, value in target.inject:
            headers[name] = value
        if request.body_exists and _expects_continue(request):
            # SECURITY: only now, authorised, may the client send its body.
            await request.writer.write(_CONTINUE)
            request.writer.output_size = 0  # the answer's own bytes come next
        url = target.base + route.upstream_path(path)
        if raw_query:
            url += "?" + raw_query
        stream = self.streams.open(route, view, decision)
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
        from patgate.web.websocket import proxy_websocket

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
        body = request.content if request.body_exists else None
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
            return _upstream_failed(exc, style)
        async with upstream:
            length = upstream.headers.get(hdrs.CONTENT_LENGTH)
            size = int(length) if length is not None and length.isdigit() else None
            if (
                size is not None
                and size <= CHUNK
                and _has_body(request.method, upstream.status)
            ):
                return await _small_response(upstream, style)
            response = web.StreamResponse(
                status=upstream.status, reason=upstream.reason
            )
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

    async def _rewrite_webdav(
        self,
        request: web.Request,
        route: CompiledRoute,
        target: RouteTarget,
        headers: CIMultiDict[str],
        view: RequestView | None,
        peer_trusted: bool,
    ) -> web.StreamResponse | None:
        """Point ``Destination`` and ``If`` URLs at the upstream; authorise the target.

        SECURITY: a MOVE or COPY writes at its destination, so the token must
        hold that path too (node scopes), and it must stay on this route.
        Only URLs naming this gateway, as the client reaches it, are
        rewritten; one naming another server is a 502 (RFC 4918, 9.9.4),
        never rewritten into one on this upstream.
        """
        style = route.config.error_style
        origin = _ClientOrigin.of(request, peer_trusted)
        destination = request.headers.get("Destination")
        if destination is not None:
            rewritten = await self._rewrite_url(
                request, route, target, destination, view, origin
            )
            if isinstance(rewritten, web.StreamResponse):
                return rewritten
            headers["Destination"] = rewritten
        if_header = request.headers.get("If")
        if if_header is not None and "<" in if_header:
            tagged = _IF_URL.findall(if_header)
            if any(_names_other_server(url, origin) for url in tagged):
                return error_response(
                    502,
                    "bad_gateway",
                    style=style,
                    message="An If header URL names another server.",
                )
            headers["If"] = _IF_URL.sub(
                lambda m: (
                    "<" + self._map_if_url(request, route, target, m.group(1)) + ">"
                ),
                if_header,
            )
        return None

    async def _rewrite_url(
        self,
        request: web.Request,
        route: CompiledRoute,
        target: RouteTarget,
        value: str,
        view: RequestView | None,
        origin: _ClientOrigin,
    ) -> str | web.StreamResponse:
        style = route.config.error_style
        try:
            url = URL(value, encoded=True)
        except ValueError:
            return error_response(
                400, "invalid_request", style=style, message="Destination is not a URL."
            )
        if _names_other_server(value, origin):
            return error_response(
                502,
                "bad_gateway",
                style=style,
                message="The Destination names another server.",
            )
        try:
            path = normalise_path(url.raw_path or "/")
        except PathError as exc:
            return error_response(400, "invalid_request", style=style, message=str(exc))
        other = self.state.router.match(request.headers.get(hdrs.HOST), path)
        if other is None or other.config.name != route.config.name:
            return error_response(
                403,
                "forbidden",
                style=style,
                message="Destination is outside this route.",
            )
        if view is not None:
            moved = RequestView(view.method, path, view.client_ip, view.credential)
            verdict = await self.gate.authorize(route, moved, note_usage=False)
            if not verdict.allowed:
                return refusal_response(
                    verdict,
                    realm=route.config.realm,
                    credentials=route.config.credentials,
                    style=style,
                )
        return target.base + route.upstream_path(path)

    def _map_if_url(
        self,
        request: web.Request,
        route: CompiledRoute,
        target: RouteTarget,
        value: str,
    ) -> str:
        """The upstream URL for an If header URL of this route; others as they are."""
        try:
            url = URL(value, encoded=True)
            if not url.is_absolute():
                return value
            path = normalise_path(url.raw_path or "/")
        except (ValueError, PathError):
            return value
        if not path.startswith(route.config.prefix.rstrip("/")):
            return value
        return target.base + route.upstream_path(path)


_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


@dataclass(frozen=True, slots=True)
class _ClientOrigin:
    """The scheme and the host[:port] names by which the client reached us."""

    scheme: str
    authorities: tuple[tuple[str, int | None], ...]

    @classmethod
    def of(cls, request: web.Request, peer_trusted: bool) -> _ClientOrigin:
        """From Host, and X-Forwarded-Host/-Proto when a trusted proxy sent them."""
        scheme = request.scheme
        names = [request.headers.get(hdrs.HOST, "")]
        if peer_trusted:
            forwarded = request.headers.get("X-Forwarded-Host", "")
            names.append(forwarded.split(",", 1)[0].strip())
            proto = request.headers.get("X-Forwarded-Proto", "")
            scheme = proto.split(",", 1)[0].strip().lower() or scheme
        port = _DEFAULT_PORTS.get(scheme)
        authorities = tuple(
            (host, explicit or port)
            for host, explicit in map(_split_authority, names)
            if host
        )
        return cls(scheme, authorities)


def _split_authority(value: str) -> tuple[str, int | None]:
    """``(name, port)`` of a Host value (already checked by ``valid_host``)."""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        digits = rest[1:]
    else:
        host, _, digits = value.partition(":")
    return host.lower().rstrip("."), int(digits) if digits.isdigit() else None


def _names_other_server(value: str, origin: _ClientOrigin) -> bool:
    """Whether the URL ``value`` names a server (host, port, scheme) but not us.

    A path (``/dav/x``) or a URI without a host (a lock token such as
    ``opaquelocktoken:...``) names no server. Userinfo is never ours.
    """
    try:
        url = URL(value, encoded=True)
        host = url.host
        port = url.port
    except ValueError:
        return True
    if host is None:
        return False
    scheme = url.scheme.lower() or origin.scheme
    if scheme != origin.scheme or url.raw_user is not None:
        return True
    if not url.scheme:
        port = url.explicit_port or _DEFAULT_PORTS.get(scheme)
    return (host.lower().rstrip("."), port) not in origin.authorities


def _add_identity(
    headers: CIMultiDict[str], config: Config, decision: Decision
) -> None:
    """The gateway's identity headers, set last (no client header can fake them)."""
    names = config.identity_headers
    for name, value in identity_values(
        {"user": names.user, "token_id": names.token_id, "scopes": names.scopes},
        decision.user or "",
        decision.token_id or "",
        decision.scopes_header,
    ):
        headers[name] = value


async def _small_response(upstream: ClientResponse, style: str) -> web.StreamResponse:
    """A body of known, small length, read whole and sent with its headers.

    The path every API call takes: one send instead of two, and no chunk
    loop. Bodies of unknown length (event streams) and large ones stream,
    headers first. Nothing is sent yet, so a failing upstream is a 502/504.
    """
    try:
        body = await upstream.read()
    except (TimeoutError, ClientError, OSError) as exc:
        return _upstream_failed(exc, style)
    response = web.Response(status=upstream.status, reason=upstream.reason, body=body)
    copy_response_headers(upstream.headers, response.headers)
    return response


def _upstream_failed(exc: BaseException, style: str) -> web.StreamResponse:
    """Before anything was sent: too slow is a 504, anything else a 502."""
    if isinstance(exc, TimeoutError):
        return error_response(504, "gateway_timeout", style=style)
    return error_response(502, "bad_gateway", style=style)


def _has_body(method: str, status: int) -> bool:
    """Whether the upstream's Content-Length is that of a body on the wire."""
    return method != "HEAD" and status >= 200 and status not in (204, 304)


_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


async def answer_expect(request: web.Request) -> web.StreamResponse | None:
    """The catch-all route's ``expect_handler``: no ``100 Continue`` here.

    SECURITY: aiohttp's default sends ``100 Continue`` at once, before the
    request is authorised, so a client without a token starts its upload;
    and it quotes an unknown expectation in its 417 body. The proxy sends
    ``100 Continue`` once it has authorised the request (``_forward``); an
    expectation other than ``100-continue`` is a 417 that quotes nothing.
    """
    if request.version != HttpVersion11 or _expects_continue(request):
        return None
    response = error_response(417, "expectation_failed")
    response.force_close()  # the body, if any, is not read
    return response


def _expects_continue(request: web.Request) -> bool:
    return (
        request.version == HttpVersion11
        and request.headers.get(hdrs.EXPECT, "").lower() == "100-continue"
    )


def _wants_websocket(request: web.Request) -> bool:
    return request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"


def _clean_query(raw_query: str) -> bool:
    return raw_query.isascii() and raw_query.isprintable()
