"""The API's route table: one :class:`~patgate.web.manage.openapi.Operation`
per route, from which both the router and the OpenAPI document are built."""

from __future__ import annotations

import json

from aiohttp import hdrs, web

from patgate.throttle import LoginThrottle
from patgate.web.keys import CONFIG, LOGIN_THROTTLE, OPENAPI, SERVICE
from patgate.web.manage.endpoint import (
    ApiError,
    Handler,
    answer,
    endpoint,
    error_response,
)
from patgate.web.manage.lifecycle import (
    purge_tokens,
    remove_many,
    remove_token,
    renew_token,
)
from patgate.web.manage.login import close_session, open_session, read_session
from patgate.web.manage.openapi import Operation, build_document
from patgate.web.manage.page import add_page_routes
from patgate.web.manage.tokens import (
    API_PREFIX,
    apply_suggestion,
    copy_token,
    create_token,
    delivery_log,
    edit_token,
    get_token,
    list_tokens,
    regenerate_token,
    report_leak,
    revoke_before,
    revoke_many,
    scope_choices,
    token_suggestion,
)
from patgate.web.manage.users import (
    create_user,
    edit_user,
    get_user,
    list_users,
    whoami,
)
from patgate.web.protocol import continue_at_once


@endpoint
async def openapi_document(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


_PUBLIC = "none"
_CHANGE = "change"
_ID = ("token_id",)

ROUTES: tuple[tuple[Operation, Handler], ...] = (
    (Operation("POST", "/tokens", "createToken", "Create a token; its value is"
               " returned once", 201, "TokenCreate", "NewToken", _CHANGE,
               errors=(400, 401, 403, 404, 413, 415, 422, 429, 503)), create_token),
    (Operation("GET", "/tokens", "listTokens", "List tokens (never their values)",
               response="TokenList", parameters=("owner", "expiring")), list_tokens),
    (Operation("POST", "/tokens/revoke-before", "revokeBefore", "Revoke every"
               " token of a user (or, admins, of everyone) created before a"
               " time", request="RevokeBefore", response="RevokedBefore",
               auth=_CHANGE), revoke_before),
    (Operation("POST", "/tokens/revoke", "revokeTokens", "Revoke several tokens:"
               " all, or none if any id is unknown", request="RevokeMany",
               response="Revoked", auth=_CHANGE), revoke_many),
    (Operation("POST", "/tokens/remove", "removeTokens", "Remove several"
               " tokens: revoked, then gone from every list; all, or none if"
               " any id is unknown", request="RemoveMany", response="Removed",
               auth=_CHANGE), remove_many),
    (Operation("POST", "/tokens/purge", "purgeTokens", "Remove revoked and/or"
               " expired tokens, optionally only those dead for a while (admins:"
               " anyone's; users: their own)", request="Purge",
               response="Purged", auth=_CHANGE), purge_tokens),
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
    # The operationId predates removal; kept so generated clients keep working.
    (Operation("DELETE", "/tokens/{token_id}", "revokeToken", "Remove a token:"
               " revoked, then gone from every list (the audit log keeps it);"
               " answers it as it was last", request="Confirm", response="Token",
               auth=_CHANGE, parameters=_ID), remove_token),
    (Operation("GET", "/tokens/{token_id}/suggestion", "tokenSuggestion", "The"
               " least scopes (and node scopes) covering what an observed"
               " token did, with the requests each covers",
               response="Suggestion", parameters=_ID), token_suggestion),
    (Operation("POST", "/tokens/{token_id}/apply-suggestion", "applySuggestion",
               "Narrow a token to its suggestion, never past what it holds",
               request="Confirm", response="Token", auth=_CHANGE,
               parameters=_ID, errors=(400, 401, 403, 404, 409, 415, 422, 429)),
     apply_suggestion),
    (Operation("POST", "/tokens/{token_id}/regenerate", "regenerateToken", "A new"
               " value for the same token; the old one dies (after the grace)",
               201, "Regenerate", "NewToken", _CHANGE, _ID,
               (400, 401, 403, 404, 409, 415, 422, 429)), regenerate_token),
    (Operation("POST", "/tokens/{token_id}/renew", "renewToken", "A new expiry"
               " and a new value (an expired token lives again); without an"
               " expiry, the same model counted from now", 201, "Renew",
               "NewToken", _CHANGE, _ID, (400, 401, 403, 404, 409, 415, 422, 429)),
     renew_token),
    (Operation("POST", "/tokens/{token_id}/copy", "copyToken", "A new token with"
               " the same settings", 201, "Confirm", "NewToken", _CHANGE, _ID),
     copy_token),
    (Operation("GET", "/webhooks/deliveries", "webhookDeliveries", "The last"
               " webhook delivery attempts, newest first (admins)",
               response="DeliveryList", parameters=("limit",)), delivery_log),
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
               " routes require, for the page's picker (admins: grantable to"
               " ?owner=)", response="ScopeChoices", parameters=("owner",)),
     scope_choices),
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
            # SECURITY: aiohttp's own 417 quotes the Expect value it refuses.
            resource.add_route(method, handler, expect_handler=continue_at_once)
        resource.add_route("*", _method_not_allowed(tuple(handlers)))
    app.router.add_route("*", "/_patgate/api/{tail:.*}", _no_such_route)
    add_page_routes(app)


def _method_not_allowed(methods: tuple[str, ...]) -> Handler:
    @answer
    async def refuse(request: web.Request) -> web.Response:
        response = error_response(
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


@answer
async def _no_such_route(request: web.Request) -> web.Response:
    raise ApiError(
        404,
        "not_found",
        f"no API route {request.path}; see {API_PREFIX}/openapi.json",
    )
