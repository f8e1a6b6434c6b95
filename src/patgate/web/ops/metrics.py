"""The gateway's Prometheus metrics: requests by route and outcome, auth time.

Requests are counted by the proxy handler (:meth:`Metrics.count`) in plain
ints, turned into metric families only when scraped; the token cache and the
store errors are read from the gate when scraped.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from itertools import accumulate
from typing import Any

from aiohttp import web
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
from patgate.gate import Gate

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

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests: dict[tuple[str, str], int] = {}
        self.created: dict[tuple[str, str], float] = {}  # the _created series
        self.started = time.time()
        self.auth_buckets = [0] * (len(AUTH_BUCKETS) + 1)  # the last: +Inf
        self.auth_sum = 0.0
        self.registry.register(_RequestCollector(self))

    def watch(self, gate: Gate, cache: GrantCache) -> None:
        """Report ``gate``'s token cache and store errors too (at start-up)."""
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


def metrics_handler(metrics: Metrics) -> Any:
    async def handle(request: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        response = web.Response(body=body)
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    return handle
