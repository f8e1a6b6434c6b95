"""create_app(config, store): the gateway's aiohttp application.

State lives under ``AppKey``s; the upstream ``ClientSession``, the change
listener and the usage flusher live in ``cleanup_ctx`` so they start and stop
with the app. A reload swaps ``ProxyHandler.state`` whole, between requests.

The management page and API, and the ops endpoints, are served on the main
listener unless ``manage: {listen: ...}`` or ``ops: {listen: ...}`` give them
one of their own. Then they are separate applications, in ``app[LISTENERS]``
by name (``"manage"``, ``"ops"``), sharing the main app's state, and the main
listener answers 404 under ``/_patgate/`` for what it no longer serves.

SECURITY: the page's origin shared with proxied content. The same-origin
policy is all that keeps a page from reading another's answers, and an HTML
file served through any route on the main listener is same-origin with a page
served there: its scripts could call the API with the user's session. On a
listener of its own (another port is another origin) they cannot read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import structlog
from aiohttp import web

from patgate.cache import GrantCache
from patgate.config import Config
from patgate.errors import StoreUnavailableError
from patgate.gate import Gate
from patgate.models import Change, ChangeKind
from patgate.service import TokenService
from patgate.store.base import Store
from patgate.throttle import FailureThrottle
from patgate.usage import UsageRecorder
from patgate.web.inflight import InFlight
from patgate.web.ops import Metrics, healthz, metrics_handler, readyz_handler
from patgate.web.protocol import set_server_header
from patgate.web.proxy import ProxyHandler, ProxyState, answer_expect
from patgate.web.streams import StreamRegistry
from patgate.web.upstream import open_upstream_session

log = structlog.get_logger("patgate.gateway")

STORE = web.AppKey("store", Store)
GATE = web.AppKey("gate", Gate)
CACHE = web.AppKey("cache", GrantCache)
PROXY = web.AppKey("proxy", ProxyHandler)
STREAMS = web.AppKey("streams", StreamRegistry)
METRICS = web.AppKey("metrics", Metrics)
CONFIG = web.AppKey("config", Config)
SERVICE = web.AppKey("service", TokenService)
IN_FLIGHT = web.AppKey("in_flight", InFlight)
# The applications of the separate listeners, by name ("manage", "ops").
LISTENERS: web.AppKey[dict[str, web.Application]] = web.AppKey("listeners")

OPS_PREFIX = "/_patgate/"


def create_app(
    config: Config, store: Store, *, clock: Callable[[], float] = time.time
) -> web.Application:
    cache = GrantCache(
        max_entries=config.cache.max_entries,
        ttl=config.cache.ttl,
        negative_ttl=config.cache.negative_ttl,
        max_stale=config.cache.max_stale,
        clock=clock,
    )
    gate = Gate(
        store=store,
        cache=cache,
        usage=UsageRecorder(),
        throttle=FailureThrottle(config.limits.failed_auth_per_minute),
        prefix=config.token_prefix,
        pepper=config.pepper.value,
        clock=clock,
    )
    streams = StreamRegistry()
    metrics = Metrics(gate, cache)
    app = _application(config)
    app[CONFIG] = config
    app[STORE] = store
    app[GATE] = gate
    app[CACHE] = cache
    app[STREAMS] = streams
    app[METRICS] = metrics
    app[IN_FLIGHT] = InFlight()
    app[SERVICE] = TokenService(
        store,
        prefix=config.token_prefix,
        pepper=config.pepper.value,
        scope_sets=config.scope_sets,
        clock=clock,
    )
    app.cleanup_ctx.append(_upstream_session)
    app.cleanup_ctx.append(_change_listener)
    app.cleanup_ctx.append(_usage_flusher)
    app[LISTENERS] = {}
    ops = [
        web.get(OPS_PREFIX + "healthz", healthz),
        web.get(OPS_PREFIX + "readyz", readyz_handler(store)),
        web.get(OPS_PREFIX + "metrics", metrics_handler(metrics)),
    ]
    if config.ops_listen is None:
        app.router.add_routes(ops)
    else:
        app[LISTENERS]["ops"] = _listener_app(config, ops)
        _add_fallback(app[LISTENERS]["ops"])
    _add_management(app)
    if app[LISTENERS]:
        app.router.add_route("*", OPS_PREFIX.rstrip("/"), _not_here)
        app.router.add_route("*", OPS_PREFIX + r"{tail:[\s\S]*}", _not_here)
    # [\s\S], not ".": a path with %0A must reach the proxy (and its 400) too.
    # The proxy answers Expect itself, once the request is authorised.
    app.router.add_route(
        "*", r"/{tail:[\s\S]*}", _dispatch, expect_handler=answer_expect
    )
    app.on_response_prepare.append(set_server_header)
    return app


def _application(config: Config) -> web.Application:
    return web.Application(
        client_max_size=1024**2,
        handler_args={
            "max_line_size": config.limits.max_url_bytes,
            "max_field_size": config.limits.max_header_bytes,
        },
    )


def _add_management(app: web.Application) -> None:
    """The page and the API: on the main listener, or on one of their own."""
    from patgate.web.api import setup_management  # api.py imports our AppKeys

    config = app[CONFIG]
    if config.manage_listen is None:
        setup_management(app)
        return
    manage = _listener_app(config, [])
    manage[CONFIG] = config
    manage[SERVICE] = app[SERVICE]
    setup_management(manage)
    _add_fallback(manage)
    app[LISTENERS]["manage"] = manage


def _listener_app(config: Config, routes: list[web.RouteDef]) -> web.Application:
    """A separate listener's app, serving ``routes``."""
    app = _application(config)
    app.router.add_routes(routes)
    return app


def _add_fallback(app: web.Application) -> None:
    """404 for anything else: nothing on a separate listener is ever proxied."""
    app.router.add_route("*", r"/{tail:[\s\S]*}", _not_here)


async def _not_here(request: web.Request) -> web.Response:
    """404 for what another listener serves, or nothing does."""
    return web.json_response(
        {"error": "not_found", "message": "nothing is served at this path here"},
        status=404,
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


async def _dispatch(request: web.Request) -> web.StreamResponse:
    # The handler is made at start-up (it needs the upstream session).
    return await request.app[PROXY](request)


def reload_config(app: web.Application, config: Config) -> None:
    """Serve new routes from the next request on; in-flight ones finish as they were."""
    app[PROXY].state = ProxyState.from_config(config)
    app[CONFIG] = config
    for listener in app[LISTENERS].values():
        if CONFIG in listener:
            listener[CONFIG] = config


async def _upstream_session(app: web.Application) -> AsyncIterator[None]:
    session = open_upstream_session()
    app[PROXY] = ProxyHandler(
        ProxyState.from_config(app[CONFIG]),
        app[GATE],
        session,
        app[STREAMS],
        app[METRICS],
        app[IN_FLIGHT],
    )
    yield
    await session.close()


async def _change_listener(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(listen_for_changes(app))
    yield
    await stop_task(task)


async def stop_task(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait for its end, cancelling again if it shrugs one off.

    On Python 3.11 ``asyncio.wait_for`` (redis-py connects with it) swallows a
    cancellation that lands as the connection completes (CPython gh-86296),
    and the listener would then run forever and hang shutdown.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def listen_for_changes(app: web.Application) -> None:
    """Apply change notices to the cache and open streams; reconnect forever."""
    store, cache, gate, streams = app[STORE], app[CACHE], app[GATE], app[STREAMS]
    delay = 0.05
    reconnecting = False
    while True:
        try:
            if reconnecting:
                await store.ping()
                # Notices sent while we were away are lost: every entry must
                # be confirmed by the store again before it is trusted.
                cache.resume()
                await streams.revalidate(gate, streams.all())
                log.info("change_feed_reconnected")
                reconnecting = False
                delay = 0.05
            async for change in store.changes():
                delay = 0.05
                await _apply_change(change, cache, gate, streams)
        except StoreUnavailableError as exc:
            if not reconnecting:
                log.warning("change_feed_lost", error=str(exc))
                # Deaf to revocations: ask the store on every request until
                # the feed is back; the cache is only the outage fallback.
                cache.suspend()
            reconnecting = True
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


async def _apply_change(
    change: Change, cache: GrantCache, gate: Gate, streams: StreamRegistry
) -> None:
    if change.kind is ChangeKind.TOKEN:
        cache.drop_token(change.key)
        # SECURITY: a pending slide computed from the old settings would undo
        # a shortened expiry (the store also refuses it by version).
        gate.usage.discard_expiry(change.key)
    else:
        cache.drop_owner(change.key)
    affected = streams.affected(change)
    if affected:
        cancelled = await streams.revalidate(gate, affected)
        if cancelled:
            log.info("streams_closed", change=change.encode(), count=cancelled)


async def _usage_flusher(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_flush_usage_forever(app))
    yield
    await stop_task(task)
    await flush_usage(app)


async def _flush_usage_forever(app: web.Application) -> None:
    interval = app[CONFIG].usage_flush_interval
    while True:
        await asyncio.sleep(interval)
        await flush_usage(app)


async def flush_usage(app: web.Application) -> None:
    usage = app[GATE].usage
    batch = usage.drain()
    if not batch:
        return
    try:
        await app[STORE].record_usage(batch)
    except StoreUnavailableError:
        usage.restore(batch)
