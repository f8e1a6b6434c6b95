"""What wraps every API endpoint: the cross-site rules, errors as JSON, headers.

:func:`endpoint` applies, before the handler runs, the JSON-and-same-origin
rule to every change (:mod:`patgate.web.manage.origin`); :func:`answer` turns
:class:`ApiError` and :class:`~patgate.errors.PatgateError` into
``{"error": code, "message": text}`` and adds the API's security headers. A
browser never gets a Basic challenge.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import hdrs, web

from patgate.client import is_trusted, parse_networks
from patgate.errors import (
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PatgateError,
    PermissionDeniedError,
    StoreUnavailableError,
    UsageError,
)
from patgate.web.keys import CONFIG
from patgate.web.manage import origin

log = structlog.get_logger("patgate.api")

SESSION_COOKIE = "patgate_session"
# The name over HTTPS: a cookie with this prefix can only be set by a secure
# origin, so a plain-http page on the same host cannot plant one.
SECURE_SESSION_COOKIE = "__Secure-" + SESSION_COOKIE
CSRF_HEADER = "X-Patgate-CSRF"

Handler = Callable[[web.Request], Awaitable[web.Response]]

API_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}
ERRORS: tuple[tuple[type[PatgateError], int, str], ...] = (
    (UsageError, 422, "invalid_request"),
    (NotFoundError, 404, "not_found"),
    (ConflictError, 409, "conflict"),
    (PermissionDeniedError, 403, "forbidden"),
    (AuthenticationError, 401, "invalid_credentials"),
    (StoreUnavailableError, 503, "store_unavailable"),
)
# SECURITY: internal addresses disclosed; the store's own message names its
# host and port (or file), so it goes to the log, never into an answer.
STORE_DOWN_MESSAGE = "the token store is unavailable; retry shortly"


class ApiError(Exception):
    """An answer other than success: status, error code, one line for a person."""

    def __init__(
        self, status: int, error: str, message: str, *, retry_after: float = 0.0
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.retry_after = retry_after

    @classmethod
    def from_patgate(cls, exc: PatgateError) -> ApiError:
        if isinstance(exc, StoreUnavailableError):
            log.warning("store_unavailable", error=str(exc))
            return cls(503, "store_unavailable", STORE_DOWN_MESSAGE)
        for kind, status, error in ERRORS:
            if isinstance(exc, kind):
                return cls(status, error, str(exc))
        return cls(500, "internal_error", "the server failed; see its log")


def endpoint(handler: Handler) -> Handler:
    """An API operation: the cross-site rules first for a change, then ``handler``."""

    async def guarded(request: web.Request) -> web.Response:
        if origin.changes_state(request.method):
            refuse_cross_site(request)
        return await handler(request)

    return functools.wraps(handler)(answer(guarded))


def answer(handler: Handler) -> Handler:
    """Errors become JSON; every answer gets the API's security headers."""

    @functools.wraps(handler)
    async def run(request: web.Request) -> web.Response:
        try:
            response = await handler(request)
        except ApiError as exc:
            response = error_response(request, exc)
        except PatgateError as exc:
            response = error_response(request, ApiError.from_patgate(exc))
        response.headers.update(API_HEADERS)
        return response

    return run


def refuse_cross_site(request: web.Request) -> None:
    """Rules 1 and 2 of :mod:`patgate.web.manage.origin`, before anything is read."""
    # SECURITY: CSRF; a cross-site form or no-cors fetch carrying the page's
    # cookie or the browser's cached Basic credentials must change nothing.
    reason = origin.cross_origin_reason(
        request.headers, own_hosts(request), https=is_https(request)
    )
    if reason is not None:
        log.info("cross_origin_refused", method=request.method, reason=reason)
        raise ApiError(
            403,
            "cross_origin",
            f"changes must come from this API's own origin ({reason})",
        )
    if not origin.is_json(request.headers.get(hdrs.CONTENT_TYPE, "")):
        raise ApiError(
            415,
            "unsupported_media_type",
            "send a JSON body with Content-Type: application/json"
            " ({} when there is nothing else to send)",
        )


def own_hosts(request: web.Request) -> list[str]:
    """The names this request was sent to: Host, and a trusted proxy's word."""
    hosts = request.headers.getall(hdrs.HOST, [])
    trusted = parse_networks(request.app[CONFIG].trusted_proxies)
    if is_trusted(request.remote, trusted):
        for value in request.headers.getall("X-Forwarded-Host", []):
            hosts.extend(part.strip() for part in value.split(","))
    return hosts


def error_response(request: web.Request, exc: ApiError) -> web.Response:
    response = web.json_response(
        {"error": exc.error, "message": exc.message}, status=exc.status
    )
    # SECURITY: CSRF through cached Basic credentials; a browser is never
    # asked for them, so it never keeps them for cross-site requests to send.
    if exc.status == 401 and not from_browser(request):
        response.headers[hdrs.WWW_AUTHENTICATE] = (
            'Basic realm="patgate", charset="UTF-8"'
        )
    if exc.retry_after > 0:
        response.headers[hdrs.RETRY_AFTER] = str(max(1, math.ceil(exc.retry_after)))
    return response


def from_browser(request: web.Request) -> bool:
    """A request from a browser: a navigation, a subresource, or the page's own
    fetch() (where a challenge would also stall the script)."""
    return (
        origin.from_browser(request.headers)
        or CSRF_HEADER in request.headers
        or SESSION_COOKIE in request.cookies
        or SECURE_SESSION_COOKIE in request.cookies
    )


def is_https(request: web.Request) -> bool:
    trusted = parse_networks(request.app[CONFIG].trusted_proxies)
    forwarded = request.headers.get("X-Forwarded-Proto", "").lower() == "https"
    return request.secure or (forwarded and is_trusted(request.remote, trusted))
