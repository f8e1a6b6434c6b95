"""The gateway's Prometheus metrics, one view over every worker.

Each process counts in plain ints (:class:`Counts`; a prometheus-client
``Counter.inc`` takes a lock and costs more per request than the rest of the
bookkeeping together) and turns them into metric families only when scraped:

- ``patgate_requests_total{route, outcome}``: what the gateway did;
- ``patgate_responses_total{route, status_class}``: 2xx, 4xx, 5xx ...;
- ``patgate_request_duration_seconds{route}``: handler time, a histogram;
- ``patgate_auth_seconds``: the token check, a histogram;
- the token cache, store errors, and ``process_*`` (CPU, memory, file
  descriptors, start time) summed over the workers, plus ``patgate_workers``.

With ``workers: N`` every worker writes its counts to a file of its own in a
directory the server made (:meth:`Metrics.share`), at most once a second
and at exit; a scrape, whichever worker answers it, adds its own live counts
to every other worker's file. Each file only grows, so no counter ever jumps
backwards between scrapes (it may lag a worker's last second).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import time
from bisect import bisect_left
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
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
# ... and of the request-duration histogram (the upstream's time included).
DURATION_BUCKETS = (
    *(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05),
    *(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
SHARE_INTERVAL = 1.0
# The status_class label by the status's first digit (no string made per request).
_STATUS_CLASSES = tuple(f"{digit}xx" for digit in range(10))
_PAGE_SIZE = resource.getpagesize()


def _labels(bounds: tuple[float, ...]) -> tuple[str, ...]:
    """The ``le`` labels, spelled as prometheus-client spells them."""
    return tuple(floatToGoString(bound) for bound in bounds)  # type: ignore[no-untyped-call]


_AUTH_LABELS = _labels(AUTH_BUCKETS)
_DURATION_LABELS = _labels(DURATION_BUCKETS)


@dataclass
class Counts:
    """What processes counted; counts of several processes add up."""

    requests: dict[tuple[str, str], int] = field(default_factory=dict)
    created: dict[tuple[str, str], float] = field(default_factory=dict)
    responses: dict[tuple[str, str], int] = field(default_factory=dict)
    auth_buckets: list[int] = field(
        default_factory=lambda: [0] * (len(AUTH_BUCKETS) + 1)  # the last: +Inf
    )
    auth_sum: float = 0.0
    durations: dict[str, list[int]] = field(default_factory=dict)
    duration_sums: dict[str, float] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)  # summed when merged
    started: float = field(default_factory=time.time)
    workers: int = 1

    def add(self, other: Counts) -> None:
        for key, count in other.requests.items():
            self.requests[key] = self.requests.get(key, 0) + count
            self.created[key] = min(
                self.created.get(key, other.created[key]), other.created[key]
            )
        for key, count in other.responses.items():
            self.responses[key] = self.responses.get(key, 0) + count
        self.auth_buckets = [
            a + b for a, b in zip(self.auth_buckets, other.auth_buckets, strict=True)
        ]
        self.auth_sum += other.auth_sum
        for route, buckets in other.durations.items():
            mine = self.durations.setdefault(route, [0] * len(buckets))
            self.durations[route] = [a + b for a, b in zip(mine, buckets, strict=True)]
            self.duration_sums[route] = (
                self.duration_sums.get(route, 0.0) + other.duration_sums[route]
            )
        for name, number in other.gauges.items():
            self.gauges[name] = self.gauges.get(name, 0.0) + number
        self.started = min(self.started, other.started)
        self.workers += other.workers

    def to_json(self) -> str:
        return json.dumps(
            {
                "requests": [[*key, n] for key, n in self.requests.items()],
                "created": [[*key, t] for key, t in self.created.items()],
                "responses": [[*key, n] for key, n in self.responses.items()],
                "auth_buckets": self.auth_buckets,
                "auth_sum": self.auth_sum,
                "durations": self.durations,
                "duration_sums": self.duration_sums,
                "gauges": self.gauges,
                "started": self.started,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Counts:
        data = json.loads(text)
        return cls(
            requests={(r, o): n for r, o, n in data["requests"]},
            created={(r, o): t for r, o, t in data["created"]},
            responses={(r, c): n for r, c, n in data["responses"]},
            auth_buckets=data["auth_buckets"],
            auth_sum=data["auth_sum"],
            durations=data["durations"],
            duration_sums=data["duration_sums"],
            gauges=data["gauges"],
            started=data["started"],
        )


class Metrics:
    """This process's counts, the scrape that sums every worker's, the registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.own = Counts()
        self._gate: tuple[Gate, GrantCache] | None = None
        self._shared: Path | None = None
        self._written = -1
        self._changes = 0
        self.registry.register(_Collector(self))

    def watch(self, gate: Gate, cache: GrantCache) -> None:
        """Report ``gate``'s token cache and store errors too (at start-up)."""
        self._gate = (gate, cache)

    def share(self, directory: str) -> None:
        """Write this worker's counts into ``directory``; read the others' there."""
        self._shared = Path(directory)

    @property
    def shared(self) -> bool:
        return self._shared is not None

    def count(
        self,
        route: str,
        outcome: str,
        auth_seconds: float | None,
        status: int = 0,
        seconds: float | None = None,
    ) -> None:
        """One request done: ``route`` is "" when no route matched."""
        own = self.own
        self._changes += 1
        key = (route, outcome)
        requests = own.requests
        count = requests.get(key)
        if count is None:
            count = 0
            own.created[key] = time.time()
        requests[key] = count + 1
        if auth_seconds is not None:
            own.auth_buckets[bisect_left(AUTH_BUCKETS, auth_seconds)] += 1
            own.auth_sum += auth_seconds
        if status:
            kind = (route, _STATUS_CLASSES[status // 100 % 10])
            own.responses[kind] = own.responses.get(kind, 0) + 1
        if seconds is not None:
            buckets = own.durations.get(route)
            if buckets is None:
                buckets = own.durations[route] = [0] * (len(DURATION_BUCKETS) + 1)
                own.duration_sums[route] = 0.0
            buckets[bisect_left(DURATION_BUCKETS, seconds)] += 1
            own.duration_sums[route] += seconds

    def snapshot(self) -> Counts:
        """This process's counts now, with its cache, store and process figures."""
        own = self.own
        snap = Counts(
            requests=dict(own.requests),
            created=dict(own.created),
            responses=dict(own.responses),
            auth_buckets=list(own.auth_buckets),
            auth_sum=own.auth_sum,
            durations={route: list(b) for route, b in own.durations.items()},
            duration_sums=dict(own.duration_sums),
            gauges=_process_figures(),
            started=own.started,
        )
        if self._gate is not None:
            gate, cache = self._gate
            stats = cache.stats()
            snap.gauges.update(
                cache_hits=stats.hits,
                cache_misses=stats.misses,
                cache_entries=stats.entries,
                store_errors=gate.store_errors,
            )
        return snap

    def totals(self) -> Counts:
        """Every worker's counts: this one's live, the others' from their files."""
        totals = self.snapshot()
        if self._shared is None:
            return totals
        self.write_share(force=True)
        mine = f"{os.getpid()}.json"
        for path in sorted(self._shared.glob("*.json")):
            if path.name == mine:
                continue
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                totals.add(Counts.from_json(path.read_text()))
        return totals

    def write_share(self, *, force: bool = False) -> None:
        """Write this worker's counts to its file (if they changed)."""
        if self._shared is None or (self._changes == self._written and not force):
            return
        self._written = self._changes
        target = self._shared / f"{os.getpid()}.json"
        partial = target.with_suffix(".partial")
        with contextlib.suppress(OSError):
            partial.write_text(self.snapshot().to_json())
            partial.replace(target)  # readers never see half a file


def _process_figures() -> dict[str, float]:
    """``process_*`` of this process, read as prometheus-client reads them."""
    times = os.times()
    figures = {"cpu_seconds": times.user + times.system}
    with (
        contextlib.suppress(OSError, ValueError, IndexError),
        open("/proc/self/statm", "rb") as statm,
    ):
        figures["resident_bytes"] = int(statm.read().split()[1]) * _PAGE_SIZE
    with contextlib.suppress(OSError):
        figures["open_fds"] = len(os.listdir("/proc/self/fd"))
    return figures


class _Collector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        totals = self.metrics.totals()
        yield _requests(totals)
        yield _auth(totals)
        yield _responses(totals)
        yield _durations(totals)
        yield from _gate_figures(totals)
        yield from _process(totals)


def _requests(totals: Counts) -> Metric:
    family = CounterMetricFamily(
        "patgate_requests",
        "Requests handled, by route and outcome.",
        labels=("route", "outcome"),
    )
    for key, count in totals.requests.items():
        family.add_metric(key, count, created=totals.created.get(key))
    return family


def _auth(totals: Counts) -> Metric:
    cumulative = list(accumulate(totals.auth_buckets))
    family = HistogramMetricFamily(
        "patgate_auth_seconds",
        "Time spent authorising a request (extract to decision).",
        buckets=[
            *zip(_AUTH_LABELS, cumulative, strict=False),
            ("+Inf", cumulative[-1]),
        ],
        sum_value=totals.auth_sum,
    )
    # prometheus-client's own Histogram has a _created sample; so does ours.
    family.samples.append(Sample("patgate_auth_seconds_created", {}, totals.started))
    return family


def _responses(totals: Counts) -> Metric:
    family = CounterMetricFamily(
        "patgate_responses",
        "Responses sent, by route and status class (2xx, 4xx, ...).",
        labels=("route", "status_class"),
    )
    for key, count in sorted(totals.responses.items()):
        family.add_metric(key, count)
    return family


def _durations(totals: Counts) -> Metric:
    family = HistogramMetricFamily(
        "patgate_request_duration_seconds",
        "Time from the request's arrival to its answer's end, by route.",
        labels=("route",),
    )
    for route, buckets in sorted(totals.durations.items()):
        cumulative = list(accumulate(buckets))
        family.add_metric(
            [route],
            [
                *zip(_DURATION_LABELS, cumulative, strict=False),
                ("+Inf", cumulative[-1]),
            ],
            totals.duration_sums[route],
        )
    return family


def _gate_figures(totals: Counts) -> Iterator[Metric]:
    gauges = totals.gauges
    yield CounterMetricFamily(
        "patgate_cache_hits", "Token cache hits.", value=gauges.get("cache_hits", 0)
    )
    yield CounterMetricFamily(
        "patgate_cache_misses",
        "Token cache misses.",
        value=gauges.get("cache_misses", 0),
    )
    yield GaugeMetricFamily(
        "patgate_cache_entries",
        "Entries in the token caches (every worker's).",
        value=gauges.get("cache_entries", 0),
    )
    yield CounterMetricFamily(
        "patgate_store_errors",
        "Store calls that failed (store unavailable).",
        value=gauges.get("store_errors", 0),
    )
    yield GaugeMetricFamily(
        "patgate_workers", "Worker processes counted.", value=totals.workers
    )


def _process(totals: Counts) -> Iterator[Metric]:
    gauges = totals.gauges
    yield CounterMetricFamily(
        "process_cpu_seconds",
        "Total user and system CPU time spent in seconds (every worker's).",
        value=gauges.get("cpu_seconds", 0.0),
    )
    yield GaugeMetricFamily(
        "process_resident_memory_bytes",
        "Resident memory size in bytes (every worker's).",
        value=gauges.get("resident_bytes", 0.0),
    )
    yield GaugeMetricFamily(
        "process_open_fds",
        "Number of open file descriptors (every worker's).",
        value=gauges.get("open_fds", 0.0),
    )
    yield GaugeMetricFamily(
        "process_start_time_seconds",
        "Start time of the first worker since unix epoch in seconds.",
        value=totals.started,
    )


def metrics_handler(metrics: Metrics) -> Any:
    async def handle(request: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        response = web.Response(body=body)
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    return handle


async def share_metrics(app: web.Application, metrics: Metrics) -> AsyncIterator[None]:
    """``cleanup_ctx`` body: write this worker's counts once a second, and at exit."""

    async def write_forever() -> None:
        while True:
            await asyncio.sleep(SHARE_INTERVAL)
            metrics.write_share()

    task = asyncio.create_task(write_forever())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    metrics.write_share(force=True)
