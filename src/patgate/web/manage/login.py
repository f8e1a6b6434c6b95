"""The page's session: log in, read it (with its CSRF token), log out."""

from __future__ import annotations

import secrets

import structlog
from aiohttp import web

from patgate.web.keys import CONFIG
from patgate.web.manage.bodies import fields_of, read_body
from patgate.web.manage.caller import (
    check_password,
    cookie_name,
    service_of,
    session_cookie,
    session_user,
)
from patgate.web.manage.endpoint import ApiError, endpoint, is_https
from patgate.web.manage.page import session

log = structlog.get_logger("patgate.api")

COOKIE_PATH = "/_patgate/"


@endpoint
async def open_session(request: web.Request) -> web.Response:
    fields = fields_of("Login", await read_body(request))
    user = await check_password(request, fields["login"], fields["password"])
    service = service_of(request)
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
        cookie_name(request),
        cookie,
        path=COOKIE_PATH,
        httponly=True,
        samesite="Strict",
        secure=is_https(request),
    )
    log.info("session_opened", login=user.login)
    return response


@endpoint
async def read_session(request: web.Request) -> web.Response:
    cookie = session_cookie(request)
    if not cookie:
        raise ApiError(401, "unauthorized", "not logged in")
    user = await session_user(request, cookie, csrf=False)
    key = session.session_key(
        request.app[CONFIG].pepper.value, user.password_hash or ""
    )
    return web.json_response(
        {"user": user.to_public(), "csrf": session.csrf_token(key, cookie)}
    )


@endpoint
async def close_session(request: web.Request) -> web.Response:
    """Log out: the session ends on the server too, not only in this browser."""
    fields_of("Logout", await read_body(request))
    cookie = session_cookie(request)
    if cookie:
        try:
            await session_user(request, cookie, csrf=False)
        except ApiError:
            pass  # ended already (expired, forged, revoked): nothing to record
        else:
            claim = session.read_session(cookie)
            assert claim is not None  # session_user read it
            await service_of(request).store.revoke_session(
                claim.session_id, claim.expires_at
            )
            log.info("session_closed", login=claim.login)
    response = web.json_response({"status": "logged out"})
    response.del_cookie(cookie_name(request), path=COOKIE_PATH)
    return response
