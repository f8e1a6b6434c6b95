"""Operations: health, readiness, Prometheus metrics and the access log.

The access log replaces aiohttp's, whose request line carries the query
string (and with it ``?session=TOKEN``): ours logs the path without the query,
the route, the token id and the outcome — never a credential.
"""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from patgate.cache import GrantCache
from patgate.errors import StoreUnavailableError
from patgate.gate import Gate
from patgate.policy import Decision
from patgate.store.base import Store

access_log = structlog.get_logger("patgate.access")

# What the proxy handler tells the access logger about a request.
ROUTE_NAME = web.RequestKey("patgate_route", str)
DECISION = web.RequestKey("patgate_decision", Decision)
REASON = web.RequestKey("patgate_reason", str)


class Metrics:
    """The gateway's Prometheus metrics, in a registry of its own per app."""

    def __init__(self, gate: Gate, cache: GrantCache) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "patgate_requests",
            "Requests handled, by route and outcome.",
            ("route", "outcome"),
            registry=self.registry,
        )
        self.auth_seconds = Histogram(
            "patgate_auth_seconds",
            "Time spent authorising a request (extract to decision).",
            buckets=(0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1),
            registry=self.registry,
        )
        self.registry.register(_GateCollector(gate, cache))
        self._children: dict[tuple[str, str], Any] = {}

    def count(self, route: str, outcome: str) -> None:
        child = self._children.get((route, outcome))
        if child is None:
            child = self.requests.labels(route, outcome)
            self._children[(route, outcome)] = child
        child.inc()


METRICS = web.RequestKey("patgate_metrics", Metrics)


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
            return web.json_response(
                {"status": "unavailable", "store": str(exc)}, status=503
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


def outcome_of(status: int) -> str:
    if status < 400:
        return "allowed" if status < 500 else "upstream_error"
    return {
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
        404: "no_route",
        429: "throttled",
        502: "upstream_error",
        503: "unavailable",
        504: "upstream_timeout",
    }.get(status, "upstream_status" if status < 500 else "upstream_error")


class AccessLogger(AbstractAccessLogger):
    """One structured line per request; the query string is never logged."""

    def log(
        self, request: web.BaseRequest, response: web.StreamResponse, time: float
    ) -> None:
        route = request.get(ROUTE_NAME, "")
        decision = request.get(DECISION)
        metrics = request.get(METRICS)
        status = response.status
        if metrics is not None and route:
            metrics.count(route, outcome_of(status))
        if not self.enabled:
            return
        access_log.info(
            "request",
            method=request.method,
            path=request.raw_path.partition("?")[0],
            status=status,
            route=route or None,
            token_id=decision.token_id if decision else None,
            user=decision.user if decision else None,
            reason=decision.reason if decision else request.get(REASON),
            client=request.remote,
            duration_ms=round(time * 1000, 3),
        )

    @property
    def enabled(self) -> bool:
        return True
