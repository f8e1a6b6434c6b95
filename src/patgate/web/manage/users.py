"""The API's users: who am I, and (admins) list, create, show and edit users."""

from __future__ import annotations

from aiohttp import web

from patgate import scopes
from patgate.errors import PermissionDeniedError
from patgate.web.keys import CONFIG
from patgate.web.manage.bodies import fields_of, read_body
from patgate.web.manage.caller import caller_of, service_of
from patgate.web.manage.endpoint import ApiError, endpoint


@endpoint
async def whoami(request: web.Request) -> web.Response:
    caller = await caller_of(request)
    return web.json_response({**caller.user.to_public(), "auth": caller.via})


@endpoint
async def list_users(request: web.Request) -> web.Response:
    caller = await caller_of(request)
    users = await service_of(request).list_users(caller.actor)
    return web.json_response({"users": [user.to_public() for user in users]})


@endpoint
async def create_user(request: web.Request) -> web.Response:
    body = await read_body(request)
    caller = await caller_of(request, body, change=True, basic_only=True)
    fields = fields_of("UserCreate", body)
    user = await service_of(request).add_user(
        caller.actor,
        fields["login"],
        admin=fields.get("admin", False),
        scopes=fields.get("scopes", (scopes.ALL,)),
        password=fields.get("password"),
    )
    return web.json_response(user.to_public(), status=201)


@endpoint
async def get_user(request: web.Request) -> web.Response:
    caller = await caller_of(request)
    user = await service_of(request).get_user(caller.actor, request.match_info["login"])
    return web.json_response(user.to_public())


@endpoint
async def edit_user(request: web.Request) -> web.Response:
    """Admins change anything here; a user only their own password."""
    body = await read_body(request)
    caller = await caller_of(request, body, change=True, basic_only=True)
    fields = fields_of("UserEdit", body)
    login = request.match_info["login"]
    service = service_of(request)
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
