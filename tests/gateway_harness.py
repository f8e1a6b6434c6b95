"""Real servers on loopback for gateway tests: a recording upstream and gateways.

``RecordingUpstream`` is an aiohttp app that remembers every request it got
(method, raw path, headers, body size) and can stream, stall or echo
WebSocket messages. ``Gateway`` runs ``create_app`` on a real socket with the
production access logger, next to a ``TokenService`` on the same store.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from multidict import CIMultiDict, CIMultiDictProxy

from patgate.config import Config, parse_config
from patgate.logs import AccessLog
from patgate.service import Actor, TokenService
from patgate.store import Store, open_store
from patgate.web.app import LISTENERS, create_app
from patgate.web.keys import DECISIONS
from patgate.web.ops.access import access_logger_class
from patgate.web.protocol import GatewayRunner

ADMIN = Actor(login="admin", admin=True)


@dataclass
class Recorded:
    method: str
    raw_path: str
    headers: CIMultiDictProxy[str]
    body_size: int
    body_sha256: str
    body: bytes


@dataclass
class RecordingUpstream:
    """An upstream that records what reaches it. Special paths:

    ``.../download?size=N`` streams N bytes; ``.../slow?delay=S`` waits S
    seconds; ``.../events?delay=S`` sends its headers, then a chunked body
    after S seconds; ``.../ws`` is a WebSocket echo; anything else echoes
    as JSON.
    """

    requests: list[Recorded] = field(default_factory=list)
    url: str = ""
    runner: web.AppRunner | None = None
    keep_body_bytes: int = 1 << 20

    @property
    def last(self) -> Recorded:
        assert self.requests, "the upstream received no request"
        return self.requests[-1]

    async def start(self) -> None:
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.SockSite(self.runner, bound_socket())
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.raw_path.partition("?")[0]
        if (
            path.endswith("/ws")
            and request.headers.get("Upgrade", "").lower() == "websocket"
        ):
            return await self._websocket(request)
        digest = hashlib.sha256()
        size = 0
        kept = bytearray()
        async for chunk in request.content.iter_chunked(1 << 16):
            digest.update(chunk)
            size += len(chunk)
            if len(kept) < self.keep_body_bytes:
                kept.extend(chunk[: self.keep_body_bytes - len(kept)])
        self.requests.append(
            Recorded(
                request.method,
                request.raw_path,
                CIMultiDictProxy(CIMultiDict(request.headers)),
                size,
                digest.hexdigest(),
                bytes(kept),
            )
        )
        if path.endswith("/download"):
            return await self._download(request, int(request.query.get("size", "0")))
        if path.endswith("/events"):
            return await self._events(request, float(request.query.get("delay", "1")))
        if path.endswith("/slow"):
            await asyncio.sleep(float(request.query.get("delay", "1")))
        return web.json_response(
            {
                "method": request.method,
                "path": request.raw_path,
                "user": request.headers.get("X-Patgate-User"),
                "body_size": size,
            },
            headers={"ETag": '"v1"', "X-Upstream": "yes"},
        )

    async def _download(self, request: web.Request, size: int) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "application/octet-stream"}
        )
        response.content_length = size
        await response.prepare(request)
        chunk = b"x" * (1 << 16)
        sent = 0
        delay = float(request.query.get("chunk_delay", "0"))
        while sent < size:
            piece = chunk[: min(len(chunk), size - sent)]
            await response.write(piece)
            sent += len(piece)
            if delay:
                await asyncio.sleep(delay)
        await response.write_eof()
        return response

    async def _events(self, request: web.Request, delay: float) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)  # headers now, body of unknown length
        await asyncio.sleep(delay)
        await response.write(b"data: one\n\n")
        await response.write_eof()
        return response

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        self.requests.append(
            Recorded(request.method, request.raw_path,
                     CIMultiDictProxy(CIMultiDict(request.headers)), 0, "", b"")
        )  # fmt: skip
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await ws.send_str("echo:" + msg.data)
            elif msg.type is WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


FILES_RW = "  files-rw: [files:read, files:write]\n"


def gateway_yaml(
    store_url: str, routes: str, extra: str = "", scope_sets: str = FILES_RW
) -> str:
    """A gateway.yaml on a free port: ``routes`` is the indented body of
    ``routes:`` (see :func:`route_yaml`), ``extra`` more top-level keys,
    ``scope_sets`` the indented body of ``scope_sets:``."""
    return (
        "listen: 127.0.0.1:0\n"
        f"store: {store_url}\n"
        f"scope_sets:\n{scope_sets}"
        f"{extra}\n"
        f"routes:\n{routes}"
    )


def route_yaml(name: str, prefix: str, upstream: str, *more: str) -> str:
    """One entry of ``routes:``; ``more`` are extra ``key: value`` lines."""
    lines = [f"  - name: {name}", f"    prefix: {prefix}", f"    upstream: {upstream}"]
    return "\n".join([*lines, *(f"    {line}" for line in more)]) + "\n"


@dataclass(frozen=True)
class Address:
    """Something listening on ``host`` (``127.0.0.1:PORT``), for raw requests."""

    host: str


@dataclass
class Gateway:
    config: Config
    store: Store
    service: TokenService
    app: web.Application
    runner: web.AppRunner
    url: str
    host: str
    access_log: AccessLog
    # The separate listeners (manage:, ops:) by name: their URL and runner.
    listeners: dict[str, str] = field(default_factory=dict)
    listener_runners: list[web.AppRunner] = field(default_factory=list)

    @property
    def decisions_url(self) -> str:
        """Where the decision endpoint is served: its own listener, or the main."""
        return self.listeners.get("decisions", self.url)

    @property
    def decisions(self) -> Address:
        return Address(self.decisions_url.split("://", 1)[1])

    async def add_user(
        self,
        login: str,
        scopes: Sequence[str] = ("*",),
        *,
        admin: bool = False,
        password: str | None = None,
    ) -> None:
        await self.service.add_user(
            ADMIN, login, admin=admin, scopes=scopes, password=password
        )

    async def token(self, owner: str = "alice", **kwargs: Any) -> str:
        """A new token's value; the owner is created (scopes ``*``) if missing."""
        if await self.store.get_user(owner) is None:
            await self.add_user(owner)
        _, value = await self.service.create_token(ADMIN, owner, **kwargs)
        return value

    async def stop(self) -> None:
        if DECISIONS in self.app:
            await self.app[DECISIONS].stop()
        for runner in self.listener_runners:
            await runner.cleanup()
        await self.runner.cleanup()
        await self.store.close()
        # Written while this test's output is still captured: otherwise the
        # last batch reaches the terminal after pytest's summary line.
        self.access_log.flush()


async def start_gateway(
    store_url: str,
    routes: str,
    *,
    extra: str = "",
    scope_sets: str = FILES_RW,
    env: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.time,
) -> Gateway:
    config = parse_config(
        gateway_yaml(store_url, routes, extra, scope_sets),
        dict(env or {"PATGATE_PEPPER": "test-pepper"}),
        ".",
    )
    store = open_store(config.store)
    service = TokenService(
        store,
        prefix=config.token_prefix,
        pepper=config.pepper.value,
        scope_sets=config.scope_sets,
        clock=clock,
    )
    access_log = AccessLog()
    app = create_app(config, store, clock=clock, access_log=access_log)
    runner = GatewayRunner(
        app,
        header_timeout=config.limits.header_timeout,
        access_log_class=access_logger_class(access_log),
        shutdown_timeout=5,
    )
    await runner.setup()
    site = web.SockSite(runner, bound_socket())
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    gateway = Gateway(
        config, store, service, app, runner, f"http://127.0.0.1:{port}",
        f"127.0.0.1:{port}", access_log,
    )  # fmt: skip
    for name, listener in app[LISTENERS].items():
        # Each separate listener on a port of its own, as `serve` runs them.
        listener_runner = GatewayRunner(
            listener,
            header_timeout=config.limits.header_timeout,
            access_log_class=access_logger_class(access_log),
            shutdown_timeout=5,
        )
        await listener_runner.setup()
        gateway.listener_runners.append(listener_runner)
        listener_site = web.SockSite(listener_runner, bound_socket())
        await listener_site.start()
        sockets = listener_site._server.sockets  # type: ignore[union-attr]
        gateway.listeners[name] = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    if DECISIONS in app:
        sock = bound_socket()
        await app[DECISIONS].start(sock)
        gateway.listeners["decisions"] = f"http://127.0.0.1:{sock.getsockname()[1]}"
    return gateway


StartGateway = Callable[..., Awaitable[Gateway]]
