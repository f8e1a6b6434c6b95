"""``patgate serve``: run the gateway, with workers, reload and graceful stop.

One process per worker, all bound to the same port with SO_REUSEPORT and
sharing one store. SIGHUP reloads routes (a broken file is refused, the old
routes keep serving); SIGTERM/SIGINT stop accepting and let in-flight
requests finish (up to ``shutdown_timeout``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Callable

import structlog
from aiohttp import web

from patgate.config import Config
from patgate.errors import PatgateError
from patgate.store import open_store
from patgate.web.app import create_app, reload_config
from patgate.web.ops import AccessLogger

log = structlog.get_logger("patgate.server")

SHUTDOWN_TIMEOUT = 30.0
ConfigLoader = Callable[[], Config]


def install_uvloop() -> bool:
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def bind_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def serve(load: ConfigLoader, *, out: Callable[[str], None] = print) -> int:
    """Run until SIGTERM/SIGINT. ``load`` reads the config (again on SIGHUP)."""
    config = load()
    uvloop = install_uvloop()
    workers = max(1, config.workers)
    sock = bind_socket(config.listen_host, config.listen_port, reuse_port=workers > 1)
    host, port = sock.getsockname()[:2]
    for warning in config.warnings:
        log.warning("config_warning", message=warning)
    out(
        f"patgate listening on http://{_host(host)}:{port} "
        f"(store {_display_store(config.store)}, {len(config.routes)} routes, "
        f"{workers} worker{'s' if workers > 1 else ''}"
        f"{', uvloop' if uvloop else ''})"
    )
    sys.stdout.flush()
    if workers == 1:
        return asyncio.run(_serve_one(load, config, sock))
    return _serve_many(load, config, sock, workers)


def _serve_many(load: ConfigLoader, config: Config, sock: socket.socket, n: int) -> int:
    """Fork ``n`` workers that each bind the port with SO_REUSEPORT."""
    host, port = sock.getsockname()[:2]
    children: list[int] = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:  # the worker
            sock.close()
            worker_sock = bind_socket(host, port, reuse_port=True)
            code = asyncio.run(_serve_one(load, config, worker_sock))
            os._exit(code)
        children.append(pid)
    sock.close()

    def relay(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, relay)
    status = 0
    for child in children:
        _, code = os.waitpid(child, 0)
        status = status or os.waitstatus_to_exitcode(code)
    return 0 if status in (0, -signal.SIGTERM, -signal.SIGINT) else 1


async def _serve_one(load: ConfigLoader, config: Config, sock: socket.socket) -> int:
    store = open_store(config.store)
    app = create_app(config, store)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log_class=AccessLogger,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
    )
    await runner.setup()
    site = web.SockSite(runner, sock)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: _reload(app, load))
    log.info("gateway_started", pid=os.getpid(), routes=len(config.routes))
    try:
        await stop.wait()
        log.info("gateway_draining", pid=os.getpid())
    finally:
        await runner.cleanup()
        await store.close()
    log.info("gateway_stopped", pid=os.getpid())
    return 0


def _reload(app: web.Application, load: ConfigLoader) -> None:
    try:
        config = load()
    except PatgateError as exc:
        log.error("config_reload_failed", error=str(exc), kept="previous routes")
        return
    reload_config(app, config)
    log.info("config_reloaded", routes=len(config.routes))


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _display_store(url: str) -> str:
    """The store URL without a password."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        creds, _, where = rest.rpartition("@")
        user = creds.split(":", 1)[0]
        rest = (f"{user}:***@" if user else "***@") + where
    return f"{scheme}{sep}{rest}"
