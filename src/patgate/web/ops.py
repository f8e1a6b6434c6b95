"""Operations: health, readiness, Prometheus metrics and the access log.

The access log replaces aiohttp's, whose request line carries the query
string (and with it ``?session=TOKEN``): ours logs the path without the query,
the route, the token id and the outcome — never a credential.
:func:`route_library_logs` sends aiohttp's and asyncio's own log records
through structlog as well, so ``serve`` writes JSON lines only.
"""

from __future__ import annotations

import logging
import os
import time
from bisect import bisect_left
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import structlog
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from patgate.cache import GrantCache
from patgate.errors import StoreUnavailableError
from patgate.gate import Gate
from patgate.logs import ACCESS_LOG
from patgate.policy import Decision
from patgate.store.base import Store

http_log = structlog.get_logger("patgate.http")
ops_log = structlog.get_logger("patgate.ops")


# Upper bounds of the auth-time histogram, in seconds.
AUTH_BUCKETS = (
    *(0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005),
    *(0.01, 0.05, 0.1, 0.5, 1.0, 2.5),
)
# Their ``le`` labels, spelled as prometheus-client spells them.
_BUCKET_LABELS = tuple(floatToGoString(bound) for bound in AUTH_BUCKETS)  # type: ignore[no-untyped-call]


class Metrics:
    """The gateway's Prometheus metrics, in a registry of its own per app.

    Requests are counted in plain ints and turned into metric families only
    when scraped: a prometheus-client ``Counter.inc`` takes a lock and costs
    more per request than the rest of the bookkeeping together.
    """

    def __init__(self, gate: Gate, cache: GrantCache) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests: dict[tuple[str, str], int] = {}
        self.created: dict[tuple[str, str], float] = {}  # the _created series
        self.started = time.time()
        self.auth_buckets = [0] * (len(AUTH_BUCKETS) + 1)  # the last: +Inf
        self.auth_sum = 0.0
        self.registry.register(_RequestCollector(self))
        self.registry.register(_GateCollector(gate, cache))

    def count(self, route: str, outcome: str, auth_seconds: float | None) -> None:
        """One request done: ``route`` is "" when no route matched."""
        key = (route, outcome)
        requests = self.requests
        count = requests.get(key)
        if count is None:
            count = 0
            self.created[key] = time.time()
        requests[key] = count + 1
        if auth_seconds is not None:
            self.auth_buckets[bisect_left(AUTH_BUCKETS, auth_seconds)] += 1
            self.auth_sum += auth_seconds


class _RequestCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self):  # type: ignore[no-untyped-def]
        metrics = self.metrics
        requests = CounterMetricFamily(
            "patgate_requests",
            "Requests handled, by route and outcome.",
            labels=("route", "outcome"),
        )
        created = metrics.created
        for key, count in list(metrics.requests.items()):
            requests.add_metric(key, count, created=created.get(key))
        yield requests
        cumulative = list(accumulate(metrics.auth_buckets))
        auth = HistogramMetricFamily(
            "patgate_auth_seconds",
            "Time spent authorising a request (extract to decision).",
            buckets=[
                *zip(_BUCKET_LABELS, cumulative, strict=False),
                ("+Inf", cumulative[-1]),
            ],
            sum_value=metrics.auth_sum,
        )
        # prometheus-client's own Histogram has a _created sample; so does ours.
        auth.samples.append(Sample("patgate_auth_seconds_created", {}, metrics.started))
        yield auth


@dataclass(slots=True)
class Exchange:
    """What the proxy handler tells the access log and metrics of one request.

    One object under one request key: each ``request[key]`` read or write is
    a Python-level mapping call, and a request made a dozen of them.
    """

    metrics: Metrics
    route: str = ""  # "" while no route matched
    decision: Decision | None = None
    reason: str | None = None  # why a request was refused before any decision
    auth_seconds: float | None = None
    response: web.StreamResponse | None = None  # a streamed one, once prepared


EXCHANGE = web.RequestKey("patgate_exchange", Exchange)


class _GateCollector(Collector):
    def __init__(self, gate: Gate, cache: GrantCache) -> None:
        self.gate = gate
        self.cache = cache

    def collect(self):  # type: ignore[no-untyped-def]
        stats = self.cache.stats()
        yield CounterMetricFamily(
            "patgate_cache_hits", "Token cache hits.", value=stats.hits
        )
        yield CounterMetricFamily(
            "patgate_cache_misses", "Token cache misses.", value=stats.misses
        )
        yield GaugeMetricFamily(
            "patgate_cache_entries", "Entries in the token cache.", value=stats.entries
        )
        yield CounterMetricFamily(
            "patgate_store_errors",
            "Store calls that failed (store unavailable).",
            value=self.gate.store_errors,
        )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def readyz_handler(store: Store) -> Any:
    async def readyz(request: web.Request) -> web.Response:
        try:
            await store.ping()
        except StoreUnavailableError as exc:
            # SECURITY: internal addresses disclosed; the error names the
            # store's host and port (or file): the log gets it, not the answer.
            ops_log.warning("store_unavailable", error=str(exc), probe="readyz")
            return web.json_response(
                {"status": "unavailable", "reason": "store unavailable"}, status=503
            )
        return web.json_response({"status": "ready"})

    return readyz


def metrics_handler(metrics: Metrics) -> Any:
    async def handle(request: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        response = web.Response(body=body)
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    return handle


# The gateway's own refusals, by status; the label of what it did.
_REFUSALS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    429: "throttled",
    503: "unavailable",
}


def outcome_of(exchange: Exchange, status: int) -> str:
    """What the gateway did with a request, for the ``outcome`` label.

    A refusal is labelled by the gateway's decision, so an upstream's own 401
    or 404 counts as forwarded ("allowed"), not as a refusal.
    """
    decision = exchange.decision
    if decision is not None and not decision.allowed:
        return _REFUSALS.get(decision.status, "refused")
    if exchange.reason is not None:
        return "bad_request"
    if not exchange.route:
        return "no_route" if status == 404 else _REFUSALS.get(status, "other")
    if status == 502:
        return "upstream_error"
    if status == 504:
        return "upstream_timeout"
    return "allowed"


class AccessLogger(AbstractAccessLogger):
    """One structured line per request; the query string is never logged."""

    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        super().__init__(logger, log_format)
        self.pid = os.getpid()  # made in the worker: tells workers apart

    def log(
        self, request: web.BaseRequest, response: web.StreamResponse, time: float
    ) -> None:
        status = response.status
        exchange = request.get(EXCHANGE)  # None: the management API, ops
        route = token_id = user = reason = None
        if exchange is not None:
            exchange.metrics.count(
                exchange.route, outcome_of(exchange, status), exchange.auth_seconds
            )
            route = exchange.route or None
            decision = exchange.decision
            # A refusal after the decision (a WebDAV Destination) says why.
            reason = exchange.reason
            if decision is not None:
                token_id, user = decision.token_id, decision.user
                reason = reason or decision.reason
        if not ACCESS_LOG.enabled:
            return
        ACCESS_LOG.request(
            request.method,
            request.raw_path.partition("?")[0],
            status,
            route,
            token_id,
            user,
            reason,
            request.remote,
            round(time * 1000, 3),
            self.pid,
        )

    @property
    def enabled(self) -> bool:
        # Always: aiohttp skips log() when this is False, and the request
        # metrics are counted there too; the line itself follows the level.
        return True


class _StructlogHandler(logging.Handler):
    """Library log records (aiohttp, asyncio) as structlog events."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            error = record.exc_info[1] if record.exc_info else None
            if isinstance(error, HttpProcessingError):
                # A client's malformed request (too long, bad syntax) is its
                # failure, not ours; and the message quotes the raw request
                # line or header, which may hold a token: log neither.
                http_log.info(
                    "bad_http_request",
                    status=error.code,
                    error=type(error).__name__,
                    client=_client_of(record),
                )
                return
            if isinstance(error, ConnectionResetError):
                http_log.info("client_gone", error=type(error).__name__)
                return
            fields: dict[str, object] = {}
            if record.exc_info:
                fields["exc_info"] = record.exc_info
            structlog.get_logger(record.name).log(
                record.levelno, record.getMessage(), **fields
            )
        except Exception:
            self.handleError(record)


def _client_of(record: logging.LogRecord) -> object:
    """The peer address aiohttp passes to "Error handling request from %s"."""
    args = record.args
    return args[0] if isinstance(args, tuple) and args else None


def route_library_logs(level: int = logging.WARNING) -> None:
    """Send stdlib logging to structlog: one JSON line, tracebacks included."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _StructlogHandler):
            root.removeHandler(handler)
    root.addHandler(_StructlogHandler())
    root.setLevel(level)
