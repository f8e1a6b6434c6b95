"""``patgate serve``: run the gateway, with workers, reload and graceful stop.

One process per worker, each with its own listening socket on the same port
(SO_REUSEPORT, so the kernel spreads connections), all sharing one store.
A worker serves every listener: the main one, and the management and ops
listeners when ``manage:``/``ops:`` give them addresses of their own (one
socket per worker on each, too).
The sockets are bound before the workers are forked, so no connection ever
lands on a socket that nobody will accept from. The "listening" line is
printed once every worker serves and handles signals: a script that waits for
it may send requests, SIGHUP or SIGTERM at once.

SIGHUP reloads routes (a broken file is refused, the old routes keep
serving); SIGTERM/SIGINT close the listening sockets and let in-flight
requests finish (up to ``SHUTDOWN_TIMEOUT``), then exit 0. Signals that
arrive while a worker starts are held until it can handle them.

Library log records (aiohttp, asyncio) go through structlog too, so stderr
holds only JSON lines; and every request gets its access line, also one that
a revocation or a stop cut short (see ``patgate.web.inflight``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import structlog
from aiohttp import web

from patgate.config import Config
from patgate.errors import PatgateError, StoreUnavailableError
from patgate.logs import AccessLog
from patgate.pepper import PepperMismatchError, bind_pepper, empty_pepper_warning
from patgate.store import Store, open_store
from patgate.storeurl import hide_password
from patgate.web.app import (
    LISTENERS,
    create_app,
    reload_config,
)
from patgate.web.gateway.sync import stop_task
from patgate.web.keys import CONFIG, DECISIONS, IN_FLIGHT
from patgate.web.ops.access import access_logger_class, route_library_logs
from patgate.web.ops.metrics import Metrics
from patgate.web.protocol import GatewayRunner

log = structlog.get_logger("patgate.server")

SHUTDOWN_TIMEOUT = 30.0
# The response a request was answered with, once its headers are on the way.
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# What a reload cannot change in a running process.
RESTART_ONLY = (
    "listen_host",
    "listen_port",
    "manage_listen",
    "ops_listen",
    "store",
    "workers",
    "pepper",
    "token_prefix",
    "cache",
    "limits",
    "forward_auth",
)
ConfigLoader = Callable[[], Config]
Ready = Callable[[], None]


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
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as err:
        sock.close()
        reason = err.strerror or str(err)
        raise PatgateError(f"cannot listen on {_host(host)}:{port}: {reason}") from None
    sock.setblocking(False)
    return sock


def bind_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening sockets on one port (the first picks it if ``port`` is 0)."""
    first = bind_socket(host, port, reuse_port=count > 1)
    socks = [first]
    try:
        for _ in range(count - 1):
            socks.append(bind_socket(host, first.getsockname()[1], reuse_port=True))
    except PatgateError:
        for sock in socks:
            sock.close()
        raise
    return socks


@dataclass(frozen=True, slots=True)
class WorkerSockets:
    """One worker's listening sockets: the main one, and the separate ones."""

    main: socket.socket
    extra: Mapping[str, socket.socket]  # "manage", "ops"

    def __iter__(self) -> Iterator[socket.socket]:
        yield self.main
        yield from self.extra.values()


@dataclass(frozen=True, slots=True)
class SeparateListener:
    """A listener besides the main one: what it serves, for the banner."""

    what: str
    address: Callable[[Config], tuple[str, int] | None]
    path: Callable[[Config], str]


def _decisions_path(config: Config) -> str:
    return config.forward_auth.path if config.forward_auth else ""


SEPARATE_LISTENERS = {
    "manage": SeparateListener(
        "the management page and API", lambda c: c.manage_listen, lambda c: "/_patgate/"
    ),
    "ops": SeparateListener(
        "the ops endpoints", lambda c: c.ops_listen, lambda c: "/_patgate/healthz"
    ),
    "decisions": SeparateListener(
        "the decision endpoint",
        lambda c: c.forward_auth.listen if c.forward_auth else None,
        _decisions_path,
    ),
}


def bind_listeners(config: Config, count: int) -> list[WorkerSockets]:
    """The sockets of ``count`` workers on every listener of ``config``."""
    opened: list[socket.socket] = []
    try:
        main = bind_sockets(config.listen_host, config.listen_port, count)
        opened.extend(main)
        extra: dict[str, list[socket.socket]] = {}
        for name, listener in SEPARATE_LISTENERS.items():
            address = listener.address(config)
            if address is not None:
                extra[name] = bind_sockets(*address, count)
                opened.extend(extra[name])
    except PatgateError:
        for sock in opened:
            sock.close()
        raise
    return [
        WorkerSockets(sock, {name: socks[i] for name, socks in extra.items()})
        for i, sock in enumerate(main)
    ]


def _listener_lines(socks: WorkerSockets, config: Config) -> list[str]:
    lines = []
    for name, sock in socks.extra.items():
        host, port = sock.getsockname()[:2]
        listener = SEPARATE_LISTENERS[name]
        where = f"http://{_host(host)}:{port}{listener.path(config)}"
        lines.append(f"patgate serves {listener.what} on {where}")
    return lines


def serve(
    load: ConfigLoader,
    *,
    out: Callable[[str], None] = print,
    access_log: AccessLog | None = None,
) -> int:
    """Run until SIGTERM/SIGINT. ``load`` reads the config (again on SIGHUP).

    ``access_log`` gets one line per request (default: stderr).
    """
    access_log = access_log or AccessLog()
    config = load()
    route_library_logs()
    uvloop = install_uvloop()
    config, pepper_checked = _bind_pepper_at_start(config)
    workers = max(1, config.workers)
    socks = bind_listeners(config, workers)
    host, port = socks[0].main.getsockname()[:2]
    for warning in config.warnings:
        log.warning("config_warning", message=warning)
    if not config.pepper.value:
        log.warning("config_warning", message=empty_pepper_warning(config))
    banner = (
        f"patgate listening on http://{_host(host)}:{port} "
        f"(store {hide_password(config.store)}, {len(config.routes)} routes, "
        f"{workers} worker{'s' if workers > 1 else ''}"
        f"{', uvloop' if uvloop else ''})"
    )

    listener_lines = _listener_lines(socks[0], config)  # the parent closes them later

    def announce() -> None:
        out(banner)
        for line in listener_lines:
            out(line)
        sys.stdout.flush()

    # Held until the process can handle them gracefully (see _serve_one).
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    serving = _Serving(load, access_log, pepper_checked)
    if workers == 1:
        return asyncio.run(_serve_one(serving, config, socks[0], announce))
    with tempfile.TemporaryDirectory(prefix="patgate-metrics-") as metrics_dir:
        serving = dataclasses.replace(serving, metrics_dir=metrics_dir)
        return _serve_many(serving, config, socks, announce)


@dataclass(frozen=True, slots=True)
class _Serving:
    """What every worker starts with besides its config and sockets.

    ``metrics_dir``: where the workers share their metrics (``workers`` > 1).
    """

    load: ConfigLoader
    access_log: AccessLog
    pepper_checked: bool
    metrics_dir: str | None = None


def _bind_pepper_at_start(config: Config) -> tuple[Config, bool]:
    """The config to serve with, and whether its pepper matched the store's.

    A mismatch stops the start (PepperMismatchError, one line). A store that
    cannot answer yet does not: the gateway serves 503s meanwhile, and each
    worker checks the pepper once the store answers (``_guard_pepper``).
    """

    async def bind() -> Config:
        store = open_store(config.store)
        try:
            return await bind_pepper(config, store)
        finally:
            await store.close()

    try:
        return asyncio.run(bind()), True
    except StoreUnavailableError as exc:
        log.warning("pepper_unchecked", reason=str(exc), then="when the store answers")
        return config, False


def _serve_many(
    serving: _Serving,
    config: Config,
    socks: Sequence[WorkerSockets],
    ready: Ready,
) -> int:
    """Fork one worker per socket; relay signals; exit when all have stopped."""
    serving.access_log.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    children: set[int] = set()
    for sock in socks:
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            _run_worker(serving, config, sock, socks, write_end)
        children.add(pid)
    os.close(write_end)
    for worker_socks in socks:
        for listening in worker_socks:
            listening.close()
    supervisor = _Supervisor(children)
    for signum in SIGNALS:
        signal.signal(signum, supervisor.relay)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
    with os.fdopen(read_end, "rb") as readiness:
        started = len(readiness.read(len(socks)))
    if started == len(socks) and not supervisor.stopping:
        ready()
    elif not supervisor.stopping:
        log.error("workers_failed_to_start", started=started, workers=len(socks))
        supervisor.stop(failed=True)
    return supervisor.wait()


def _run_worker(
    serving: _Serving,
    config: Config,
    sock: WorkerSockets,
    socks: Sequence[WorkerSockets],
    ready_fd: int,
) -> None:
    """The body of a forked worker; never returns into the parent's code."""
    code = 1
    try:
        for other in socks:
            if other is not sock:
                for listening in other:
                    listening.close()

        def ready() -> None:
            os.write(ready_fd, b".")
            os.close(ready_fd)

        code = asyncio.run(_serve_one(serving, config, sock, ready))
    except BaseException as exc:  # a worker must not fall back into the parent
        log.error("worker_crashed", pid=os.getpid(), error=repr(exc))
    finally:
        serving.access_log.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class _Supervisor:
    """The parent of the workers: relays signals and collects exit codes."""

    def __init__(self, children: set[int]) -> None:
        self.children = children
        self.stopping = False
        self.failed = False

    def relay(self, signum: int, _frame: object) -> None:
        if signum != signal.SIGHUP:
            self.stopping = True
        self._send(signum)

    def stop(self, *, failed: bool) -> None:
        self.stopping = True
        self.failed = self.failed or failed
        self._send(signal.SIGTERM)

    def wait(self) -> int:
        while self.children:
            pid, status = os.wait()
            if pid not in self.children:
                continue
            self.children.discard(pid)
            code = os.waitstatus_to_exitcode(status)
            if not self.stopping:
                # One worker gone means the port serves at reduced capacity
                # and nobody notices: stop all, so a supervisor restarts us.
                log.error("worker_died", pid=pid, code=code)
                self.stop(failed=True)
            elif code not in (0, -signal.SIGTERM, -signal.SIGINT):
                self.failed = True
        return 1 if self.failed else 0

    def _send(self, signum: int) -> None:
        for child in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)


# Young-generation threshold: above what the requests in flight hold at once.
GC_THRESHOLD = (10_000, 10, 10)


def settle_heap() -> None:
    """Keep the cycle collector off the request path.

    At CPython's default threshold (700 new container objects) a few dozen
    requests in flight hold enough objects to set off a collection every
    few requests, each walking them all and promoting them; under wrk -c50
    that was ~190 ms of CPU in 5 s (8 us a request), and 11 collections with
    the threshold here. Nearly everything a request allocates is freed by
    reference counting anyway. ``gc.freeze`` parks what start-up built
    (modules, config, app: ~45k objects) where full collections never walk;
    a reload unfreezes and settles again, so a replaced config is freed.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def _runner(
    app: web.Application, config: Config, access_log: AccessLog
) -> web.AppRunner:
    return GatewayRunner(
        app,
        header_timeout=config.limits.header_timeout,
        handle_signals=False,
        access_log_class=access_logger_class(access_log),
        # What is left once InFlight waited SHUTDOWN_TIMEOUT: cut it short.
        shutdown_timeout=1.0,
    )


async def _start_listeners(
    app: web.Application, socks: WorkerSockets, access_log: AccessLog
) -> list[tuple[web.AppRunner, web.SockSite]]:
    """Serve the separate listeners' aiohttp apps on their sockets (the
    decision listener has a server of its own: see ``_serve_one``)."""
    started = []
    for name, listener in app[LISTENERS].items():
        runner = _runner(listener, app[CONFIG], access_log)
        await runner.setup()
        site = web.SockSite(runner, socks.extra[name])
        await site.start()
        started.append((runner, site))
    return started


async def _serve_one(
    serving: _Serving, config: Config, socks: WorkerSockets, ready: Ready
) -> int:
    load, access_log = serving.load, serving.access_log
    store = open_store(config.store)
    # The server's own metrics and access log, handed to the app.
    metrics = Metrics()
    if serving.metrics_dir is not None:
        metrics.share(serving.metrics_dir)
    app = create_app(config, store, metrics=metrics, access_log=access_log)
    in_flight = app[IN_FLIGHT]
    runner = _runner(app, config, access_log)
    await runner.setup()
    site = web.SockSite(runner, socks.main)
    await site.start()
    listeners = await _start_listeners(app, socks, access_log)
    decisions = app.get(DECISIONS)
    if decisions is not None:
        await decisions.start(socks.extra["decisions"])
    settle_heap()
    stop = asyncio.Event()
    pepper_guard = None
    if not serving.pepper_checked:
        pepper_guard = asyncio.create_task(_guard_pepper(config, store, stop))
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _reload, app, load)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
    log.info("gateway_started", pid=os.getpid(), routes=len(config.routes))
    ready()
    try:
        await stop.wait()
        log.info("gateway_draining", pid=os.getpid(), in_flight=in_flight.count)
        await site.stop()
        for _, listener_site in listeners:
            await listener_site.stop()
        if decisions is not None:
            await decisions.stop()
        in_flight.drain()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SHUTDOWN_TIMEOUT):
                await in_flight.finished()
        if in_flight.count:
            log.warning("drain_timeout", pid=os.getpid(), cancelled=in_flight.count)
    finally:
        if pepper_guard is not None:
            await stop_task(pepper_guard)
        for listener_runner, _ in listeners:
            await listener_runner.cleanup()
        await runner.cleanup()
        await store.close()
        access_log.flush()
    log.info("gateway_stopped", pid=os.getpid())
    return 1 if _guard_failed(pepper_guard) else 0


def _guard_failed(guard: asyncio.Task[bool] | None) -> bool:
    if guard is None or not guard.done() or guard.cancelled():
        return False
    return guard.result()


async def _guard_pepper(config: Config, store: Store, stop: asyncio.Event) -> bool:
    """Check the pepper once the store answers; on a mismatch, stop (True)."""
    delay = 0.1
    while True:
        try:
            bound = await bind_pepper(config, store)
        except StoreUnavailableError:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            continue
        except PepperMismatchError as exc:
            log.error("pepper_mismatch", pid=os.getpid(), error=str(exc))
            stop.set()
            return True
        if bound.pepper != config.pepper:  # a new store got a generated pepper
            log.error("pepper_mismatch", pid=os.getpid(), error="restart to use it")
            stop.set()
            return True
        log.info("pepper_checked", pid=os.getpid())
        return False


def _reload(app: web.Application, load: ConfigLoader) -> None:
    try:
        config = load()
    except PatgateError as exc:
        log.error(
            "config_reload_failed",
            pid=os.getpid(),
            error=str(exc),
            kept="previous routes",
        )
        return
    previous = app[CONFIG]
    ignored = [
        name
        for name in RESTART_ONLY
        if getattr(config, name) != getattr(previous, name)
    ]
    reload_config(app, config)
    # The old config and routes were frozen at start-up: unfreeze so that
    # they can be collected, then freeze what is live now.
    gc.unfreeze()
    settle_heap()
    log.info("config_reloaded", pid=os.getpid(), routes=len(config.routes))
    if ignored:
        # Routes, scope sets, headers and the rest apply now; these do not.
        log.warning("config_reload_needs_restart", pid=os.getpid(), fields=ignored)


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
