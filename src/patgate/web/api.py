"""The management REST API under ``/_patgate/api/v1/`` (SPEC.md sections 4 and 6).

Every operation is a :class:`~patgate.service.TokenService` call; this module
only finds out who is calling, checks the body against
:data:`patgate.web.openapi.REQUEST_SCHEMAS` and turns results and errors into
JSON (``{"error": code, "message": text}``).

Who is calling:

- HTTP Basic with a user's login and password, for people and automation;
- or the web page's session cookie (:mod:`patgate.web.page.session`) with its
  ``X-Patgate-CSRF`` header.

A token value is never accepted, neither as Bearer nor as a Basic password.
Reads need a login; every change needs the password: Basic credentials, or the
session plus a ``password`` field. Password checks are reserved per client IP
before they run (:class:`patgate.throttle.LoginThrottle`). Every
state-changing call needs a JSON body and must not come from another origin,
and browsers never get a Basic challenge (:mod:`patgate.web.origin`).

Each API path answers its other methods with a JSON 405 and unknown paths
under ``/_patgate/api/`` with a JSON 404, so nothing there reaches an upstream.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import secrets
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import hdrs, web

from patgate import scopes, tokens
from patgate.client import client_address, is_trusted, parse_networks
from patgate.config import RouteConfig
from patgate.durations import parse_duration, parse_expiry_time
from patgate.errors import (
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PatgateError,
    PermissionDeniedError,
    StoreUnavailableError,
    UsageError,
)
from patgate.models import TokenRecord, User
from patgate.service import LOGIN_PATTERN, Actor, TokenService
from patgate.throttle import LoginThrottle, ThrottledError
from patgate.web import origin
from patgate.web.app import CONFIG, SERVICE
from patgate.web.openapi import BodyError, Operation, build_document, validate_body
from patgate.web.page import add_page_routes, session

log = structlog.get_logger("patgate.api")

API_PREFIX = "/_patgate/api/v1"
SESSION_COOKIE = "patgate_session"
# The name over HTTPS: a cookie with this prefix can only be set by a secure
# origin, so a plain-http page on the same host cannot plant one.
SECURE_SESSION_COOKIE = "__Secure-" + SESSION_COOKIE
COOKIE_PATH = "/_patgate/"
CSRF_HEADER = "X-Patgate-CSRF"
MAX_BODY_BYTES = 64 * 1024
LOGIN_THROTTLE = web.AppKey("login_throttle", LoginThrottle)
OPENAPI = web.AppKey("openapi", bytes)

Handler = Callable[[web.Request], Awaitable[web.Response]]

_API_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}
_ERRORS: tuple[tuple[type[PatgateError], int, str], ...] = (
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
        for kind, status, error in _ERRORS:
            if isinstance(exc, kind):
                return cls(status, error, str(exc))
        return cls(500, "internal_error", "the server failed; see its log")


def _endpoint(handler: Handler) -> Handler:
    """An API operation: the cross-site rules first for a change, then ``handler``."""

    async def guarded(request: web.Request) -> web.Response:
        if origin.changes_state(request.method):
            _refuse_cross_site(request)
        return await handler(request)

    return functools.wraps(handler)(_answer(guarded))


def _answer(handler: Handler) -> Handler:
    """Errors become JSON; every answer gets the API's security headers."""

    @functools.wraps(handler)
    async def run(request: web.Request) -> web.Response:
        try:
            response = await handler(request)
        except ApiError as exc:
            response = _error_response(request, exc)
        except PatgateError as exc:
            response = _error_response(request, ApiError.from_patgate(exc))
        response.headers.update(_API_HEADERS)
        return response

    return run


def _refuse_cross_site(request: web.Request) -> None:
    """Rules 1 and 2 of :mod:`patgate.web.origin`, before anything is read."""
    # SECURITY: CSRF; a cross-site form or no-cors fetch carrying the page's
    # cookie or the browser's cached Basic credentials must change nothing.
    reason = origin.cross_origin_reason(
        request.headers, _own_hosts(request), https=_is_https(request)
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


def _own_hosts(request: web.Request) -> list[str]:
    """The names this request was sent to: Host, and a trusted proxy's word."""
    hosts = request.headers.getall(hdrs.HOST, [])
    trusted = parse_networks(request.app[CONFIG].trusted_proxies)
    if is_trusted(request.remote, trusted):
        for value in request.headers.getall("X-Forwarded-Host", []):
            hosts.extend(part.strip() for part in value.split(","))
    return hosts


def _error_response(request: web.Request, exc: ApiError) -> web.Response:
    response = web.json_response(
        {"error": exc.error, "message": exc.message}, status=exc.status
    )
    # SECURITY: CSRF through cached Basic credentials; a browser is never
    # asked for them, so it never keeps them for cross-site requests to send.
    if exc.status == 401 and not _from_browser(request):
        response.headers[hdrs.WWW_AUTHENTICATE] = (
            'Basic realm="patgate", charset="UTF-8"'
        )
    if exc.retry_after > 0:
        response.headers[hdrs.RETRY_AFTER] = str(max(1, math.ceil(exc.retry_after)))
    return response


def _from_browser(request: web.Request) -> bool:
    """A request from a browser: a navigation, a subresource, or the page's own
    fetch() (where a challenge would also stall the script)."""
    return (
        origin.from_browser(request.headers)
        or CSRF_HEADER in request.headers
        or SESSION_COOKIE in request.cookies
        or SECURE_SESSION_COOKIE in request.cookies
    )


# --------------------------------------------------------------------------
# Request bodies


async def _read_body(request: web.Request) -> object:
    """The parsed JSON body of a change (``_endpoint`` checked its type)."""
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise _too_large()
    data = bytearray()
    async for chunk in request.content.iter_any():
        data.extend(chunk)
        if len(data) > MAX_BODY_BYTES:
            raise _too_large()
    if not data.strip():
        raise ApiError(
            400,
            "invalid_json",
            "the body is empty: send a JSON object ({} when there is nothing"
            " else to send)",
        )
    try:
        return json.loads(bytes(data))
    except (ValueError, RecursionError) as exc:
        raise ApiError(
            400, "invalid_json", f"the body is not valid JSON: {exc}"
        ) from None


def _too_large() -> ApiError:
    return ApiError(
        413, "payload_too_large", f"the body is larger than {MAX_BODY_BYTES} bytes"
    )


def _fields(schema: str, body: object) -> dict[str, Any]:
    try:
        return validate_body(schema, body)
    except BodyError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None


def _duration(field: str, text: str) -> int:
    try:
        return parse_duration(text)
    except UsageError as exc:
        raise ApiError(422, "invalid_request", f"{field}: {exc}") from None


def _expiry_args(fields: dict[str, Any], now: float) -> dict[str, Any]:
    """The service's expiry arguments for the expiry fields that were given."""
    given = [key for key in ("expires_at", "expires_in", "sliding") if key in fields]
    if len(given) > 1:
        raise ApiError(
            422,
            "invalid_request",
            f"choose one expiry: {' and '.join(given)} were both given",
        )
    args: dict[str, Any] = {}
    at = fields.get("expires_at")
    if "expires_at" in fields:
        try:
            args["expires_at"] = None if at is None else parse_expiry_time(at, now)
        except UsageError as exc:
            raise ApiError(422, "invalid_request", f"expires_at: {exc}") from None
    if "expires_in" in fields:
        within = fields["expires_in"]
        args["expires_at"] = (
            None if within is None else now + _duration("expires_in", within)
        )
    for key in ("sliding", "max_lifetime"):
        if key in fields:
            value = fields[key]
            args[key] = None if value is None else _duration(key, value)
    return args


# --------------------------------------------------------------------------
# Who is calling


@dataclass(frozen=True, slots=True)
class Caller:
    user: User
    via: str  # "basic" or "session"

    @property
    def actor(self) -> Actor:
        return Actor.from_user(self.user)


async def _caller(
    request: web.Request,
    body: object = None,
    *,
    change: bool = False,
    basic_only: bool = False,
) -> Caller:
    """The logged-in user; for a change, with the password just confirmed."""
    header = request.headers.get(hdrs.AUTHORIZATION)
    if header is not None:
        login, password = _basic_credentials(header)
        return Caller(await _login(request, login, password), "basic")
    cookie = _session_cookie(request)
    if not cookie:
        raise ApiError(
            401,
            "unauthorized",
            "log in: send your login and password with HTTP Basic authentication",
        )
    user = await _session_user(request, cookie)
    if change:
        if basic_only:
            raise ApiError(
                401,
                "basic_required",
                "managing users needs HTTP Basic credentials (login and password)",
            )
        confirmation = body.get("password") if isinstance(body, dict) else None
        if not isinstance(confirmation, str) or not confirmation:
            raise ApiError(
                401, "password_required", "confirm this change with your password"
            )
        user = await _login(request, user.login, confirmation)
    return Caller(user, "session")


def _basic_credentials(header: str) -> tuple[str, str]:
    scheme, _, param = header.strip().partition(" ")
    if scheme.lower() != "basic":
        # SECURITY: a token alone must never mint, widen or regenerate tokens;
        # this API takes no Bearer tokens at all.
        raise ApiError(
            401,
            "invalid_credentials",
            "this API takes your login and password (HTTP Basic), never a token",
        )
    try:
        decoded = base64.b64decode(param.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        decoded = ""
    login, sep, password = decoded.partition(":")
    if not sep:
        raise ApiError(
            401, "invalid_credentials", "malformed Basic credentials: login:password"
        )
    return login, password


async def _login(request: web.Request, login: str, password: str) -> User:
    """The user with this login and password; each check reserved per client IP."""
    service = request.app[SERVICE]
    client = _client_ip(request)
    # SECURITY: a leaked token must not stand in for its owner's password.
    if tokens.parse_token(password, service.prefix) is not None:
        log.info("login_failed", client=client, reason="token_as_password")
        raise ApiError(
            401, "invalid_credentials", "a token is not a password: use your password"
        )
    try:
        # SECURITY: online password guessing; the check is counted before it
        # runs, so concurrent guesses cannot outrun the count.
        async with request.app[LOGIN_THROTTLE].check(client, service.now()):
            return await service.authenticate(login, password)
    except ThrottledError as exc:
        log.info("login_throttled", client=client, reason=exc.reason)
        raise ApiError(
            429,
            "too_many_requests",
            "too many logins from your address; retry later",
            retry_after=exc.retry_after,
        ) from None
    except AuthenticationError as exc:
        log.info("login_failed", client=client)
        raise ApiError(401, "invalid_credentials", str(exc)) from None


async def _session_user(
    request: web.Request, cookie: str, *, csrf: bool = True
) -> User:
    service = request.app[SERVICE]
    ended = ApiError(401, "unauthorized", "your session has ended; log in again")
    claim = session.read_session(cookie)
    if claim is None or not LOGIN_PATTERN.fullmatch(claim.login):
        raise ended
    user = await service.store.get_user(claim.login)
    if user is None or user.disabled or user.password_hash is None:
        raise ended
    key = session.session_key(request.app[CONFIG].pepper.value, user.password_hash)
    if not session.verify_session(cookie, key, now=service.now()):
        raise ended
    # SECURITY: a cookie stolen before its logout; the logout is recorded in
    # the store, so every worker and replica refuses it until it expires.
    if await service.store.session_revoked(claim.session_id):
        raise ended
    if csrf and not session.csrf_matches(key, cookie, request.headers.get(CSRF_HEADER)):
        raise ApiError(
            403,
            "csrf_failed",
            f"missing or wrong {CSRF_HEADER} header; reload the page",
        )
    return user


def _session_cookie(request: web.Request) -> str | None:
    """The session cookie under the name this scheme uses."""
    return request.cookies.get(_cookie_name(request))


def _cookie_name(request: web.Request) -> str:
    return SECURE_SESSION_COOKIE if _is_https(request) else SESSION_COOKIE


def _client_ip(request: web.Request) -> str:
    trusted = parse_networks(request.app[CONFIG].trusted_proxies)
    return client_address(request.remote, request.headers, trusted) or "unknown"


def _is_https(request: web.Request) -> bool:
    trusted = parse_networks(request.app[CONFIG].trusted_proxies)
    forwarded = request.headers.get("X-Forwarded-Proto", "").lower() == "https"
    return request.secure or (forwarded and is_trusted(request.remote, trusted))


# --------------------------------------------------------------------------
# Answers


def _service(request: web.Request) -> TokenService:
    return request.app[SERVICE]


def _token_json(record: TokenRecord, now: float) -> dict[str, Any]:
    return record.to_public(now)


def _new_token(record: TokenRecord, value: str, now: float) -> web.Response:
    return web.json_response(
        {**record.to_public(now), "token": value},
        status=201,
        headers={hdrs.LOCATION: f"{API_PREFIX}/tokens/{record.id}"},
    )


def _token_id(request: web.Request) -> str:
    return request.match_info["token_id"]


# --------------------------------------------------------------------------
# Tokens


@_endpoint
async def create_token(request: web.Request) -> web.Response:
    body = await _read_body(request)
    caller = await _caller(request, body, change=True)
    fields = _fields("TokenCreate", body)
    service = _service(request)
    now = service.now()
    record, value = await service.create_token(
        caller.actor,
        fields.get("owner") or caller.user.login,
        name=fields.get("name", ""),
        scopes=fields.get("scopes", ()),
        allowed_cidrs=fields.get("allowed_cidrs", ()),
        project=fields.get("project"),
        rate_limit=fields.get("rate_limit"),
        **_expiry_args(fields, now),
    )
    return _new_token(record, value, now)


@_endpoint
async def list_tokens(request: web.Request) -> web.Response:
    caller = await _caller(request)
    service = _service(request)
    owner = request.query.get("owner") or None
    records = await service.list_tokens(caller.actor, owner)
    now = service.now()
    return web.json_response({"tokens": [_token_json(r, now) for r in records]})


@_endpoint
async def get_token(request: web.Request) -> web.Response:
    caller = await _caller(request)
    service = _service(request)
    record = await service.get_token(caller.actor, _token_id(request))
    return web.json_response(_token_json(record, service.now()))


@_endpoint
async def edit_token(request: web.Request) -> web.Response:
    body = await _read_body(request)
    caller = await _caller(request, body, change=True)
    fields = _fields("TokenEdit", body)
    service = _service(request)
    now = service.now()
    changes: dict[str, Any] = {
        key: fields[key]
        for key in ("scopes", "allowed_cidrs", "project", "rate_limit")
        if key in fields
    }
    if "name" in fields:
        changes["name"] = fields["name"] or ""
    changes.update(_expiry_args(fields, now))
    record = await service.edit_token(caller.actor, _token_id(request), **changes)
    return web.json_response(_token_json(record, now))


@_endpoint
async def revoke_token(request: web.Request) -> web.Response:
    body = await _read_body(request)
    caller = await _caller(request, body, change=True)
    _fields("Confirm", body)
    service = _service(request)
    token_id = _token_id(request)
    await service.revoke_tokens(caller.actor, [token_id])
    record = await service.get_token(caller.actor, token_id)
    return web.json_response(_token_json(record, service.now()))


@_endpoint
async def revoke_many(request: web.Request) -> web.Response:
    body = await _read_body(request)
    caller = await _caller(request, body, change=True)
    fields = _fields("RevokeMany", body)
    revoked = await _service(request).revoke_tokens(caller.actor, fields["ids"])
    return web.json_response(
        {"revoked": revoked.ids, "already_revoked": revoked.already}
    )


@_endpoint
async def regenerate_token(request: web.Request) -> web.Response:
    body = await _read_body(request)
    caller = await _caller(request, body, change=True)
    fields = _fields("Regenerate", body)
    grace = fields.get("grace")
    service = _service(request)
    record, value = await service.regenerate_token(
        caller.actor,
        _token_id(request),
        grace=None if grace is None else _duration("grace", grace),
    )
    return _new_token(record, value, service.now())


@_endpoint
async def copy_token(request: web.Request) -> web.Response:
    body = await _read_body(request)
    caller = await _caller(request, body, change=True)
    _fields("Confirm", body)
    service = _service(request)
    record, value = await service.copy_token(caller.actor, _token_id(request))
    return _new_token(record, value, service.now())


@_endpoint
async def report_leak(request: web.Request) -> web.Response:
    """No login: whoever finds a leaked token may kill it."""
    fields = _fields("LeakReport", await _read_body(request))
    # SECURITY: a token-validity oracle; the answer depends only on the input's
    # size, never on whether any value was live.
    examined = await _service(request).report_leak(fields["tokens"])
    return web.json_response({"status": "received", "examined": examined}, status=202)


# --------------------------------------------------------------------------
# Users


@_endpoint
async def whoami(request: web.Request) -> web.Response:
    caller = await _caller(request)
    return web.json_response({**caller.user.to_public(), "auth": caller.via})


@_endpoint
async def list_users(request: web.Request) -> web.Response:
    caller = await _caller(request)
    users = await _service(request).list_users(caller.actor)
    return web.json_response({"users": [user.to_public() for user in users]})


@_endpoint
async def create_user(request: web.Request) -> web.Response:
    body = await _read_body(request)
    caller = await _caller(request, body, change=True, basic_only=True)
    fields = _fields("UserCreate", body)
    user = await _service(request).add_user(
        caller.actor,
        fields["login"],
        admin=fields.get("admin", False),
        scopes=fields.get("scopes", (scopes.ALL,)),
        password=fields.get("password"),
    )
    return web.json_response(user.to_public(), status=201)


@_endpoint
async def get_user(request: web.Request) -> web.Response:
    caller = await _caller(request)
    user = await _service(request).get_user(caller.actor, request.match_info["login"])
    return web.json_response(user.to_public())


@_endpoint
async def edit_user(request: web.Request) -> web.Response:
    """Admins change anything here; a user only their own password."""
    body = await _read_body(request)
    caller = await _caller(request, body, change=True, basic_only=True)
    fields = _fields("UserEdit", body)
    login = request.match_info["login"]
    service = _service(request)
    if not fields:
        raise ApiError(422, "invalid_request", "nothing to change")
    if not caller.actor.admin and (
        set(fields) - {"password"} or login != caller.user.login
    ):
        raise PermissionDeniedError("only an admin may manage users")
    if "scopes" in fields:
        # Checked before anything changes, so a bad scope changes nothing.
        scopes.expand_scopes(fields["scopes"], request.app[CONFIG].scope_sets)
    user = await service.get_user(caller.actor, login)
    if "password" in fields:
        user = await service.set_password(caller.actor, login, fields["password"])
    if "scopes" in fields:
        user = await service.set_user_scopes(caller.actor, login, fields["scopes"])
    if "admin" in fields:
        user = await service.set_admin(caller.actor, login, fields["admin"])
    if fields.get("disabled") is True:
        user = await service.disable_user(caller.actor, login)
    elif fields.get("disabled") is False:
        user = await service.enable_user(caller.actor, login)
    return web.json_response(user.to_public())


# --------------------------------------------------------------------------
# The page's session and scope picker


@_endpoint
async def open_session(request: web.Request) -> web.Response:
    fields = _fields("Login", await _read_body(request))
    user = await _login(request, fields["login"], fields["password"])
    service = _service(request)
    assert user.password_hash is not None  # authenticate() refuses users without
    key = session.session_key(request.app[CONFIG].pepper.value, user.password_hash)
    cookie = session.issue_session(
        user.login, key, now=service.now(), nonce=secrets.token_bytes(16)
    )
    response = web.json_response(
        {"user": user.to_public(), "csrf": session.csrf_token(key, cookie)}
    )
    # SECURITY: session theft and CSRF; HttpOnly keeps it from scripts,
    # SameSite=Strict from cross-site requests, and the path keeps the browser
    # from sending it to the upstreams behind the gateway: cookies ignore
    # ports, so it reaches every listener on this host, and only under
    # /_patgate/ does the gateway answer itself. (Hence no __Host- prefix,
    # which demands Path=/.) Over HTTPS the __Secure- prefix keeps plain-http
    # pages on the same host from planting a session of their own.
    response.set_cookie(
        _cookie_name(request),
        cookie,
        path=COOKIE_PATH,
        httponly=True,
        samesite="Strict",
        secure=_is_https(request),
    )
    log.info("session_opened", login=user.login)
    return response


@_endpoint
async def read_session(request: web.Request) -> web.Response:
    cookie = _session_cookie(request)
    if not cookie:
        raise ApiError(401, "unauthorized", "not logged in")
    user = await _session_user(request, cookie, csrf=False)
    key = session.session_key(
        request.app[CONFIG].pepper.value, user.password_hash or ""
    )
    return web.json_response(
        {"user": user.to_public(), "csrf": session.csrf_token(key, cookie)}
    )


@_endpoint
async def close_session(request: web.Request) -> web.Response:
    """Log out: the session ends on the server too, not only in this browser."""
    _fields("Logout", await _read_body(request))
    cookie = _session_cookie(request)
    if cookie:
        try:
            await _session_user(request, cookie, csrf=False)
        except ApiError:
            pass  # ended already (expired, forged, revoked): nothing to record
        else:
            claim = session.read_session(cookie)
            assert claim is not None  # _session_user read it
            await _service(request).store.revoke_session(
                claim.session_id, claim.expires_at
            )
            log.info("session_closed", login=claim.login)
    response = web.json_response({"status": "logged out"})
    response.del_cookie(_cookie_name(request), path=COOKIE_PATH)
    return response


@_endpoint
async def scope_choices(request: web.Request) -> web.Response:
    """What the page offers: the scope sets and the scopes that routes require."""
    caller = await _caller(request)
    config = request.app[CONFIG]
    held = caller.user.scopes
    sets = [
        {
            "name": f"@{name}",
            "scopes": list(members),
            "grantable": not scopes.uncovered(members, held),
        }
        for name, members in sorted(config.scope_sets.items())
    ]
    uses: dict[str, list[str]] = {}
    for route in config.routes:
        for scope, use in _route_scopes(route):
            uses.setdefault(scope, []).append(use)
    required = [
        {"scope": scope, "used_by": used, "grantable": scopes.covered_by(scope, held)}
        for scope, used in sorted(uses.items())
    ]
    return web.json_response(
        {"held": list(held), "scope_sets": sets, "scopes": required}
    )


def _route_scopes(route: RouteConfig) -> Iterator[tuple[str, str]]:
    if route.auth == "none":
        return
    for pattern, rule in route.paths:
        if isinstance(rule, str):
            yield rule, f"{route.name}: {pattern}"
        else:
            for method, scope in rule.items():
                yield scope, f"{route.name}: {_method(method)} {pattern}"
    for method, scope in route.methods.items():
        yield scope, f"{route.name}: {_method(method)} {route.prefix}"
    if route.scope:
        yield route.scope, f"{route.name}: {route.prefix}"


def _method(method: str) -> str:
    return "other methods" if method == "*" else method


@_endpoint
async def openapi_document(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


# --------------------------------------------------------------------------
# Routes

_PUBLIC = "none"
_CHANGE = "change"
_ID = ("token_id",)

ROUTES: tuple[tuple[Operation, Handler], ...] = (
    (Operation("POST", "/tokens", "createToken", "Create a token; its value is"
               " returned once", 201, "TokenCreate", "NewToken", _CHANGE,
               errors=(400, 401, 403, 404, 413, 415, 422, 429, 503)), create_token),
    (Operation("GET", "/tokens", "listTokens", "List tokens (never their values)",
               response="TokenList", parameters=("owner",)), list_tokens),
    (Operation("POST", "/tokens/revoke", "revokeTokens", "Revoke several tokens:"
               " all, or none if any id is unknown", request="RevokeMany",
               response="Revoked", auth=_CHANGE), revoke_many),
    (Operation("POST", "/tokens/report-leak", "reportLeak", "Report leaked token"
               " values; live ones are revoked. No login; the same answer"
               " always", 202, "LeakReport", "LeakReceived", _PUBLIC,
               errors=(400, 403, 413, 415, 422)), report_leak),
    (Operation("GET", "/tokens/{token_id}", "getToken", "Show a token",
               response="Token", parameters=_ID), get_token),
    (Operation("PATCH", "/tokens/{token_id}", "editToken", "Change a token's"
               " name, scopes, expiry, networks, project or rate limit",
               request="TokenEdit", response="Token", auth=_CHANGE,
               parameters=_ID, errors=(400, 401, 403, 404, 409, 415, 422, 429)),
     edit_token),
    (Operation("DELETE", "/tokens/{token_id}", "revokeToken", "Revoke a token",
               request="Confirm", response="Token", auth=_CHANGE,
               parameters=_ID), revoke_token),
    (Operation("POST", "/tokens/{token_id}/regenerate", "regenerateToken", "A new"
               " value for the same token; the old one dies (after the grace)",
               201, "Regenerate", "NewToken", _CHANGE, _ID,
               (400, 401, 403, 404, 409, 415, 422, 429)), regenerate_token),
    (Operation("POST", "/tokens/{token_id}/copy", "copyToken", "A new token with"
               " the same settings", 201, "Confirm", "NewToken", _CHANGE, _ID),
     copy_token),
    (Operation("GET", "/whoami", "whoami", "The logged-in user", response="User"),
     whoami),
    (Operation("GET", "/users", "listUsers", "List users (admins)",
               response="UserList"), list_users),
    (Operation("POST", "/users", "createUser", "Create a user (admins, HTTP"
               " Basic)", 201, "UserCreate", "User", _CHANGE,
               errors=(400, 401, 403, 409, 415, 422, 429)), create_user),
    (Operation("GET", "/users/{login}", "getUser", "Show a user (yourself, or"
               " anyone for admins)", response="User", parameters=("login",)),
     get_user),
    (Operation("PATCH", "/users/{login}", "editUser", "Change a user's scopes,"
               " disabled flag or password (admins; a user their own password;"
               " HTTP Basic)", request="UserEdit", response="User", auth=_CHANGE,
               parameters=("login",)), edit_user),
    (Operation("POST", "/session", "openSession", "Log in the web page: sets an"
               " HttpOnly session cookie, returns the CSRF token",
               request="Login", response="Session", auth=_PUBLIC,
               errors=(400, 401, 403, 415, 422, 429)), open_session),
    (Operation("GET", "/session", "readSession", "The page's session and CSRF"
               " token", response="Session", errors=(401,)), read_session),
    (Operation("DELETE", "/session", "closeSession", "Log the web page out;"
               " the session ends on the server too", request="Logout",
               response="Empty", auth=_PUBLIC, errors=(400, 403, 415, 503)),
     close_session),
    (Operation("GET", "/scopes", "scopeChoices", "The scope sets and the scopes"
               " routes require, for the page's picker",
               response="ScopeChoices"), scope_choices),
    (Operation("GET", "/openapi.json", "openapi", "This document",
               response="OpenAPI", auth=_PUBLIC, errors=()), openapi_document),
)  # fmt: skip


def setup_management(app: web.Application) -> None:
    """Register the API and the web page; call before the gateway's catch-all."""
    config = app[CONFIG]
    if not config.api:
        return
    app[LOGIN_THROTTLE] = LoginThrottle(app[SERVICE].store, config.limits.login_limit)
    document = build_document([op for op, _ in ROUTES], API_PREFIX)
    app[OPENAPI] = json.dumps(document, indent=1).encode()
    by_path: dict[str, dict[str, Handler]] = {}
    for op, handler in ROUTES:
        by_path.setdefault(op.path, {})[op.method] = handler
    for path, handlers in by_path.items():
        resource = app.router.add_resource(API_PREFIX + path)
        for method, handler in handlers.items():
            resource.add_route(method, handler)
        resource.add_route("*", _method_not_allowed(tuple(handlers)))
    app.router.add_route("*", "/_patgate/api/{tail:.*}", _no_such_route)
    add_page_routes(app)


def _method_not_allowed(methods: tuple[str, ...]) -> Handler:
    @_answer
    async def refuse(request: web.Request) -> web.Response:
        response = _error_response(
            request,
            ApiError(
                405,
                "method_not_allowed",
                f"{request.method} is not allowed here; use {', '.join(methods)}",
            ),
        )
        response.headers[hdrs.ALLOW] = ", ".join(methods)
        return response

    return refuse


@_answer
async def _no_such_route(request: web.Request) -> web.Response:
    raise ApiError(
        404,
        "not_found",
        f"no API route {request.path}; see {API_PREFIX}/openapi.json",
    )
