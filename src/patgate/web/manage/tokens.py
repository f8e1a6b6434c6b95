"""The API's token operations: create, list, show, edit, revoke, regenerate,
copy, report a leak; and the scopes the page offers (removal and renewal:
:mod:`patgate.web.manage.lifecycle`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aiohttp import hdrs, web

from patgate import scopes
from patgate.config import RouteConfig
from patgate.durations import parse_moment
from patgate.errors import UsageError
from patgate.gate import Rules
from patgate.models import TokenRecord
from patgate.observe import suggestion_json
from patgate.routing import Router
from patgate.web.keys import CONFIG
from patgate.web.manage.bodies import duration, expiry_args, fields_of, read_body
from patgate.web.manage.caller import caller_of, service_of
from patgate.web.manage.endpoint import ApiError, endpoint

API_PREFIX = "/_patgate/api/v1"


def token_json(record: TokenRecord, now: float) -> dict[str, Any]:
    return record.to_public(now)


def new_token(record: TokenRecord, value: str, now: float) -> web.Response:
    return web.json_response(
        {**record.to_public(now), "token": value},
        status=201,
        headers={hdrs.LOCATION: f"{API_PREFIX}/tokens/{record.id}"},
    )


def token_id_of(request: web.Request) -> str:
    return request.match_info["token_id"]


@endpoint
async def create_token(request: web.Request) -> web.Response:
    body = await read_body(request)
    caller = await caller_of(request, body, change=True)
    fields = fields_of("TokenCreate", body)
    service = service_of(request)
    now = service.now()
    record, value = await service.create_token(
        caller.actor,
        fields.get("owner") or caller.user.login,
        name=fields.get("name", ""),
        scopes=fields.get("scopes", ()),
        allowed_cidrs=fields.get("allowed_cidrs", ()),
        project=fields.get("project"),
        rate_limit=fields.get("rate_limit"),
        canary=bool(fields.get("canary", False)),
        observe=observe_arg(fields["observe"]) if fields.get("observe") else None,
        **expiry_args(fields, now),
    )
    return new_token(record, value, now)


@endpoint
async def list_tokens(request: web.Request) -> web.Response:
    caller = await caller_of(request)
    service = service_of(request)
    owner = request.query.get("owner") or None
    expiring = request.query.get("expiring")
    within = None if not expiring else duration("expiring", expiring)
    records = await service.list_tokens(caller.actor, owner, within)
    now = service.now()
    return web.json_response({"tokens": [token_json(r, now) for r in records]})


@endpoint
async def get_token(request: web.Request) -> web.Response:
    caller = await caller_of(request)
    service = service_of(request)
    record = await service.get_token(caller.actor, token_id_of(request))
    return web.json_response(token_json(record, service.now()))


@endpoint
async def edit_token(request: web.Request) -> web.Response:
    body = await read_body(request)
    caller = await caller_of(request, body, change=True)
    fields = fields_of("TokenEdit", body)
    service = service_of(request)
    now = service.now()
    changes: dict[str, Any] = {
        key: fields[key]
        for key in ("scopes", "allowed_cidrs", "project", "rate_limit")
        if key in fields
    }
    if "name" in fields:
        changes["name"] = fields["name"] or ""
    if "observe" in fields:
        changes["observe"] = observe_arg(fields["observe"])
    changes.update(expiry_args(fields, now))
    record = await service.edit_token(caller.actor, token_id_of(request), **changes)
    return web.json_response(token_json(record, now))


def observe_arg(text: str | None) -> int | None:
    return None if text is None else duration("observe", text)


def _router(request: web.Request) -> Router:
    """The routes as the gateway matches them (one way to build them: Rules)."""
    return Rules.from_config(request.app[CONFIG]).router


@endpoint
async def token_suggestion(request: web.Request) -> web.Response:
    """What an observed token did and the least scopes that cover it."""
    caller = await caller_of(request)
    service = service_of(request)
    record, found = await service.suggestion(
        caller.actor, token_id_of(request), _router(request)
    )
    return web.json_response(suggestion_json(record, found, service.now()))


@endpoint
async def apply_suggestion(request: web.Request) -> web.Response:
    """Narrow a token to its suggestion, never past what it holds."""
    body = await read_body(request)
    caller = await caller_of(request, body, change=True)
    fields_of("Confirm", body)
    service = service_of(request)
    record = await service.apply_suggestion(
        caller.actor, token_id_of(request), _router(request)
    )
    return web.json_response(token_json(record, service.now()))


@endpoint
async def revoke_many(request: web.Request) -> web.Response:
    body = await read_body(request)
    caller = await caller_of(request, body, change=True)
    fields = fields_of("RevokeMany", body)
    revoked = await service_of(request).revoke_tokens(caller.actor, fields["ids"])
    return web.json_response(
        {"revoked": revoked.ids, "already_revoked": revoked.already}
    )


@endpoint
async def revoke_before(request: web.Request) -> web.Response:
    """The button after a stolen laptop: every token made before a time."""
    body = await read_body(request)
    caller = await caller_of(request, body, change=True)
    fields = fields_of("RevokeBefore", body)
    service = service_of(request)
    if fields.get("all_users") and "owner" in fields:
        raise ApiError(422, "invalid_request", "give owner or all_users, not both")
    owner = None if fields.get("all_users") else fields.get("owner", caller.user.login)
    try:
        before = parse_moment(fields["before"], service.now())
    except UsageError as exc:
        raise ApiError(422, "invalid_request", f"before: {exc}") from None
    revoked = await service.revoke_before(caller.actor, before, owner)
    return web.json_response({"revoked": revoked, "count": len(revoked)})


@endpoint
async def delivery_log(request: web.Request) -> web.Response:
    """The last webhook delivery attempts (admins)."""
    caller = await caller_of(request)
    text = request.query.get("limit", "50")
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise ApiError(422, "invalid_request", "limit: expected 1 to 1000")
    attempts = await service_of(request).delivery_log(caller.actor, int(text))
    return web.json_response({"deliveries": [a.to_public() for a in attempts]})


@endpoint
async def regenerate_token(request: web.Request) -> web.Response:
    body = await read_body(request)
    caller = await caller_of(request, body, change=True)
    fields = fields_of("Regenerate", body)
    grace = fields.get("grace")
    service = service_of(request)
    record, value = await service.regenerate_token(
        caller.actor,
        token_id_of(request),
        grace=None if grace is None else duration("grace", grace),
        activate_on_use=bool(fields.get("activate_on_use", False)),
    )
    return new_token(record, value, service.now())


@endpoint
async def copy_token(request: web.Request) -> web.Response:
    body = await read_body(request)
    caller = await caller_of(request, body, change=True)
    fields_of("Confirm", body)
    service = service_of(request)
    record, value = await service.copy_token(caller.actor, token_id_of(request))
    return new_token(record, value, service.now())


@endpoint
async def report_leak(request: web.Request) -> web.Response:
    """No login: whoever finds a leaked token may kill it."""
    fields = fields_of("LeakReport", await read_body(request))
    # SECURITY: a token-validity oracle; the answer depends only on the input's
    # size, never on whether any value was live.
    examined = await service_of(request).report_leak(fields["tokens"])
    return web.json_response({"status": "received", "examined": examined}, status=202)


@endpoint
async def scope_choices(request: web.Request) -> web.Response:
    """What the page offers: the scope sets and the scopes that routes require,
    each grantable or not for the caller (an admin: for ``?owner=``)."""
    caller = await caller_of(request)
    config = request.app[CONFIG]
    held = caller.user.scopes
    owner = request.query.get("owner")
    if owner and owner != caller.user.login:
        # 404 for an unknown user; 403 unless an admin.
        held = (await service_of(request).get_user(caller.actor, owner)).scopes
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
