"""create_app(config, store): the aiohttp application, and what it serves.

Three applications share one state (:mod:`patgate.web.keys`):

- the gateway (:mod:`patgate.web.gateway`): the catch-all proxy handler, and
  the decision endpoint at ``forward_auth.path`` when configured;
- management (:mod:`patgate.web.manage`): the REST API and the token page;
- operations (:mod:`patgate.web.ops`): health, readiness, metrics.

The upstream ``ClientSession``, the change listener and the usage flusher
live in ``cleanup_ctx`` so they start and stop with the app. A reload swaps
``ProxyHandler.state`` whole, between requests.

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

import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from patgate.cache import GrantCache
from patgate.config import Config, ForwardAuthConfig
from patgate.gate import Gate
from patgate.logs import AccessLog
from patgate.service import TokenService
from patgate.store.base import Store
from patgate.throttle import FailureThrottle
from patgate.usage import UsageRecorder
from patgate.web.gateway.decision_server import DecisionServer
from patgate.web.gateway.forward_auth import Decider, ForwardAuthHandler
from patgate.web.gateway.inflight import InFlight
from patgate.web.gateway.proxy import ProxyHandler
from patgate.web.gateway.streams import StreamRegistry
from patgate.web.gateway.sync import change_listener, incident_worker, usage_flusher
from patgate.web.gateway.targets import ProxyState
from patgate.web.gateway.upstream import open_upstream_session
from patgate.web.keys import (
    ACCESS_LOG,
    CACHE,
    CONFIG,
    DECISIONS,
    FORWARD_AUTH,
    GATE,
    IN_FLIGHT,
    METRICS,
    PROXY,
    SERVICE,
    STORE,
    STREAMS,
)
from patgate.web.manage import setup_management
from patgate.web.ops import OPS_PREFIX, add_ops_routes
from patgate.web.ops.metrics import Metrics, share_metrics
from patgate.web.protocol import answer_expect, name_the_server
from patgate.web.webhooks import webhook_deliverer
from patgate.webhooks import Publisher

# The applications of the separate listeners, by name ("manage", "ops").
LISTENERS: web.AppKey[dict[str, web.Application]] = web.AppKey("listeners")


def create_app(
    config: Config,
    store: Store,
    *,
    clock: Callable[[], float] = time.time,
    metrics: Metrics | None = None,
    access_log: AccessLog | None = None,
) -> web.Application:
    """The app for ``config`` on ``store``.

    ``metrics`` and ``access_log`` are the server's (``serve`` makes them and
    writes or scrapes them); a fresh pair otherwise.
    """
    app = _application(config)
    _add_state(app, config, store, clock, metrics, access_log)
    app.cleanup_ctx.append(_proxy_handler)
    app.cleanup_ctx.append(change_listener)
    app.cleanup_ctx.append(usage_flusher)
    app.cleanup_ctx.append(incident_worker)
    app.cleanup_ctx.append(webhook_deliverer)
    if app[METRICS].shared:
        shared = app[METRICS]
        app.cleanup_ctx.append(lambda app: share_metrics(app, shared))
    app[LISTENERS] = {}
    if config.forward_auth is not None:
        _add_decisions(app, config.forward_auth)
    if config.ops_listen is None:
        add_ops_routes(app)
    else:
        ops = _listener_app(config, app)
        add_ops_routes(ops)
        app[LISTENERS]["ops"] = _with_fallback(ops)
    _add_management(app)
    if app[LISTENERS]:
        app.router.add_route("*", OPS_PREFIX.rstrip("/"), _not_here)
        app.router.add_route("*", OPS_PREFIX + r"{tail:[\s\S]*}", _not_here)
    # [\s\S], not ".": a path with %0A must reach the proxy (and its 400) too.
    # The proxy answers Expect itself, once the request is authorised.
    app.router.add_route(
        "*", r"/{tail:[\s\S]*}", _dispatch, expect_handler=answer_expect
    )
    name_the_server()
    return app


def _add_decisions(app: web.Application, forward_auth: ForwardAuthConfig) -> None:
    """The decision endpoint: on a listener of its own, or on the main one."""
    path = forward_auth.path
    decider = app[FORWARD_AUTH] = Decider(
        ProxyState.from_config(app[CONFIG]), app[GATE], path
    )
    if forward_auth.listen is not None:
        app[DECISIONS] = DecisionServer(
            decider, app[METRICS], app[ACCESS_LOG], app[CONFIG].limits
        )
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]] = _not_here
    else:
        # Before everything else under /_patgate/ and the catch-all. Made
        # now (it needs no upstream session) and routed to directly: no
        # dispatching coroutine per decision.
        handler = ForwardAuthHandler(decider, app[METRICS]).__call__
    app.router.add_route("*", path, handler, expect_handler=answer_expect)
    app.router.add_route(
        "*", path + r"/{tail:[\s\S]*}", handler, expect_handler=answer_expect
    )


def _add_state(
    app: web.Application,
    config: Config,
    store: Store,
    clock: Callable[[], float],
    metrics: Metrics | None,
    access_log: AccessLog | None,
) -> None:
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
    metrics = metrics or Metrics()
    metrics.watch(gate, cache)
    app[CONFIG] = config
    app[STORE] = store
    app[GATE] = gate
    app[CACHE] = cache
    app[STREAMS] = StreamRegistry()
    app[METRICS] = metrics
    app[ACCESS_LOG] = access_log or AccessLog()
    app[IN_FLIGHT] = InFlight(app[ACCESS_LOG], metrics)
    app[SERVICE] = TokenService(
        store,
        prefix=config.token_prefix,
        pepper=config.pepper.value,
        scope_sets=config.scope_sets,
        clock=clock,
        publisher=Publisher(store, config.webhooks),
    )


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
    config = app[CONFIG]
    if config.manage_listen is None:
        setup_management(app)
        return
    manage = _listener_app(config, app)
    setup_management(manage)
    app[LISTENERS]["manage"] = _with_fallback(manage)


def _listener_app(config: Config, main: web.Application) -> web.Application:
    """A separate listener's app, sharing the main app's state."""
    app = _application(config)
    for key in (CONFIG, STORE, SERVICE, METRICS):
        app[key] = main[key]  # type: ignore[misc]
    name_the_server()
    return app


def _with_fallback(app: web.Application) -> web.Application:
    """404 for anything else: nothing on a separate listener is ever proxied."""
    app.router.add_route("*", r"/{tail:[\s\S]*}", _not_here)
    return app


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
    state = ProxyState.from_config(config)
    app[PROXY].state = state
    if FORWARD_AUTH in app:
        app[FORWARD_AUTH].state = state
    app[CONFIG] = config
    app[SERVICE].scope_sets = config.scope_sets
    app[SERVICE].publisher.webhooks = config.webhooks
    for listener in app[LISTENERS].values():
        if CONFIG in listener:
            listener[CONFIG] = config


async def _proxy_handler(app: web.Application) -> AsyncIterator[None]:
    session = open_upstream_session()
    # One state for both handlers, swapped together on a reload.
    state = (
        app[FORWARD_AUTH].state
        if FORWARD_AUTH in app
        else ProxyState.from_config(app[CONFIG])
    )
    app[PROXY] = ProxyHandler(
        state, app[GATE], session, app[STREAMS], app[METRICS], app[IN_FLIGHT]
    )
    yield
    await session.close()
