"""The access log: one line per request, and library logs as JSON.

The access log replaces aiohttp's, whose request line carries the query
string (and with it ``?session=TOKEN``): ours logs the path without the query,
the route, the token id and the outcome — never a credential. The proxy
handler tells it what happened through an :class:`Exchange`.
:func:`route_library_logs` sends aiohttp's and asyncio's own log records
through structlog as well, so ``serve`` writes JSON lines only.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import ClassVar

import structlog
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

from patgate.gate import Verdict
from patgate.logs import AccessLog
from patgate.policy import Decision
from patgate.web.ops.metrics import Metrics

http_log = structlog.get_logger("patgate.http")


@dataclass(slots=True)
class Exchange:
    """What the proxy handler tells the access log and metrics of one request.

    One object under one request key: each ``request[key]`` read or write is
    a Python-level mapping call, and a request made a dozen of them.
    """

    route: str = ""  # "" while no route matched
    decision: Decision | None = None
    reason: str | None = None  # why a request was refused besides the decision
    auth_seconds: float | None = None
    response: web.StreamResponse | None = None  # a streamed one, once prepared
    # The request the line is about, when not this one: the decision
    # endpoint logs the original method and target it decided on.
    method: str | None = None
    target: str | None = None

    def note(self, verdict: Verdict) -> None:
        """What the gate decided: the route, the token decision, why."""
        route = verdict.route
        if route is not None:
            self.route = route.config.name
        self.decision = verdict.decision
        self.reason = verdict.reason
        self.auth_seconds = verdict.auth_seconds

    def count(self, metrics: Metrics, status: int, seconds: float) -> None:
        """This request in the metrics, once answered with ``status``."""
        outcome = self.outcome(status)
        metrics.count(self.route, outcome, self.auth_seconds, status, seconds)

    def outcome(self, status: int) -> str:
        """What the gateway did with the request, for the ``outcome`` label.

        A refusal is labelled by the gateway's decision, so an upstream's own
        401 or 404 counts as forwarded ("allowed"), not as a refusal.
        """
        decision = self.decision
        if decision is not None and not decision.allowed:
            return _REFUSALS.get(decision.status, "refused")
        if self.reason is not None:
            return "bad_request"
        if not self.route:
            return "no_route" if status == 404 else _REFUSALS.get(status, "other")
        if status == 502:
            return "upstream_error"
        if status == 504:
            return "upstream_timeout"
        return "allowed"


EXCHANGE = web.RequestKey("patgate_exchange", Exchange)


# The gateway's own refusals, by status; the label of what it did.
_REFUSALS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    413: "too_large",
    429: "throttled",
    503: "unavailable",
}


class AccessLogger(AbstractAccessLogger):
    """One structured line per request into :attr:`sink`; never the query.

    aiohttp makes its access logger from a class, so each server binds its
    own :class:`~patgate.logs.AccessLog` with :func:`access_logger_class`.
    """

    sink: ClassVar[AccessLog]

    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        super().__init__(logger, log_format)
        self.pid = os.getpid()  # made in the worker: tells workers apart

    def log(
        self, request: web.BaseRequest, response: web.StreamResponse, time: float
    ) -> None:
        log_exchange(
            self.sink,
            request.get(EXCHANGE),  # None: the management API, ops
            request.method,
            request.raw_path,
            response.status,
            request.remote,
            time,
            self.pid,
        )

    @property
    def enabled(self) -> bool:
        return self.sink.enabled


def log_exchange(
    sink: AccessLog,
    exchange: Exchange | None,
    method: str,
    target: str,
    status: int,
    client: str | None,
    seconds: float,
    pid: int,
) -> None:
    """The access line of one request: ``method`` and ``target`` are the
    request's own, unless the exchange names the one it is about."""
    route = token_id = user = reason = None
    if exchange is not None:
        if exchange.target is not None:
            method, target = exchange.method or method, exchange.target
        route = exchange.route or None
        decision = exchange.decision
        reason = exchange.reason
        if decision is not None:
            token_id, user = decision.token_id, decision.user
            reason = reason or decision.reason
    sink.request(
        method,
        target.partition("?")[0],
        status,
        route,
        token_id,
        user,
        reason,
        client,
        round(seconds * 1000, 3),
        pid,
    )


def access_logger_class(sink: AccessLog) -> type[AccessLogger]:
    """An :class:`AccessLogger` that writes to ``sink``, for aiohttp's runner."""
    return type("BoundAccessLogger", (AccessLogger,), {"sink": sink})


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
