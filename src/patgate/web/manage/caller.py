"""Who is calling the API: HTTP Basic, or the page's session and its CSRF header.

A token value is never accepted, neither as Bearer nor as a Basic password.
Every password check is reserved per client IP before it runs
(:class:`patgate.throttle.LoginThrottle`).
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from aiohttp import hdrs, web

from patgate import tokens
from patgate.client import client_address, parse_networks
from patgate.errors import AuthenticationError
from patgate.extract import CredentialError, parse_basic_authorization
from patgate.models import User
from patgate.service import LOGIN_PATTERN, Actor, TokenService
from patgate.throttle import ThrottledError
from patgate.web.keys import CONFIG, LOGIN_THROTTLE, SERVICE
from patgate.web.manage.endpoint import (
    CSRF_HEADER,
    SECURE_SESSION_COOKIE,
    SESSION_COOKIE,
    ApiError,
    is_https,
)
from patgate.web.manage.page import session

log = structlog.get_logger("patgate.api")


@dataclass(frozen=True, slots=True)
class Caller:
    user: User
    via: str  # "basic" or "session"

    @property
    def actor(self) -> Actor:
        return Actor.from_user(self.user)


async def caller_of(
    request: web.Request,
    body: object = None,
    *,
    change: bool = False,
    basic_only: bool = False,
) -> Caller:
    """The logged-in user; for a change, with the password just confirmed."""
    header = request.headers.get(hdrs.AUTHORIZATION)
    if header is not None:
        login, password = basic_credentials(header)
        return Caller(await check_password(request, login, password), "basic")
    cookie = session_cookie(request)
    if not cookie:
        raise ApiError(
            401,
            "unauthorized",
            "log in: send your login and password with HTTP Basic authentication",
        )
    user = await session_user(request, cookie)
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
        user = await check_password(request, user.login, confirmation)
    return Caller(user, "session")


def basic_credentials(header: str) -> tuple[str, str]:
    """Login and password of an ``Authorization: Basic`` header (the one parser
    the gateway uses too, :func:`patgate.extract.parse_basic_authorization`)."""
    parsed = parse_basic_authorization(header)
    if parsed is None:
        # SECURITY: a token alone must never mint, widen or regenerate tokens;
        # this API takes no Bearer tokens at all.
        raise ApiError(
            401,
            "invalid_credentials",
            "this API takes your login and password (HTTP Basic), never a token",
        )
    if isinstance(parsed, CredentialError):
        raise ApiError(
            401, "invalid_credentials", "malformed Basic credentials: login:password"
        )
    return parsed


async def check_password(request: web.Request, login: str, password: str) -> User:
    """The user with this login and password; each check reserved per client IP."""
    service = request.app[SERVICE]
    client = client_ip(request)
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


async def session_user(request: web.Request, cookie: str, *, csrf: bool = True) -> User:
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


def session_cookie(request: web.Request) -> str | None:
    """The session cookie under the name this scheme uses."""
    return request.cookies.get(cookie_name(request))


def cookie_name(request: web.Request) -> str:
    return SECURE_SESSION_COOKIE if is_https(request) else SESSION_COOKIE


def client_ip(request: web.Request) -> str:
    trusted = parse_networks(request.app[CONFIG].trusted_proxies)
    return client_address(request.remote, request.headers, trusted) or "unknown"


def service_of(request: web.Request) -> TokenService:
    return request.app[SERVICE]
