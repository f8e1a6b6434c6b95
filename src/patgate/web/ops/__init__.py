"""Operations: health and readiness, Prometheus metrics, the access log.

- :mod:`~patgate.web.ops.health`: ``/_patgate/healthz`` and ``readyz``.
- :mod:`~patgate.web.ops.metrics`: the metrics and ``/_patgate/metrics``.
- :mod:`~patgate.web.ops.access`: the access log and library logs as JSON.
"""

from __future__ import annotations

from aiohttp import web

from patgate.web.keys import METRICS, STORE
from patgate.web.ops.health import healthz, readyz_handler
from patgate.web.ops.metrics import metrics_handler

OPS_PREFIX = "/_patgate/"


def add_ops_routes(app: web.Application) -> None:
    """``/_patgate/healthz``, ``readyz`` and ``metrics`` on ``app``."""
    app.router.add_get(OPS_PREFIX + "healthz", healthz)
    app.router.add_get(OPS_PREFIX + "readyz", readyz_handler(app[STORE]))
    app.router.add_get(OPS_PREFIX + "metrics", metrics_handler(app[METRICS]))
