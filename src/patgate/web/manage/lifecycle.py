"""The API's end of a token's life and its renewal: remove (one or many),
purge the dead ones, renew an expired one."""

from __future__ import annotations

from aiohttp import web

from patgate.service import Purge
from patgate.web.manage.bodies import duration, expiry_args, fields_of, read_body
from patgate.web.manage.caller import caller_of, service_of
from patgate.web.manage.endpoint import endpoint
from patgate.web.manage.tokens import new_token, token_id_of, token_json


@endpoint
async def remove_token(request: web.Request) -> web.Response:
    """``DELETE /tokens/{id}``: revoked, then gone from every list."""
    body = await read_body(request)
    caller = await caller_of(request, body, change=True)
    fields_of("Confirm", body)
    service = service_of(request)
    removed = await service.remove_tokens(caller.actor, [token_id_of(request)])
    return web.json_response(token_json(removed[0], service.now()))


@endpoint
async def remove_many(request: web.Request) -> web.Response:
    body = await read_body(request)
    caller = await caller_of(request, body, change=True)
    fields = fields_of("RemoveMany", body)
    removed = await service_of(request).remove_tokens(caller.actor, fields["ids"])
    return web.json_response({"removed": [record.id for record in removed]})


@endpoint
async def purge_tokens(request: web.Request) -> web.Response:
    body = await read_body(request)
    caller = await caller_of(request, body, change=True)
    fields = fields_of("Purge", body)
    older_than = fields.get("older_than")
    purge = Purge(
        revoked=fields.get("revoked", False),
        expired=fields.get("expired", False),
        older_than=None if older_than is None else duration("older_than", older_than),
        owner=fields.get("owner"),
    )
    service = service_of(request)
    purged = await service.purge_tokens(caller.actor, purge)
    now = service.now()
    return web.json_response({"purged": [token_json(r, now) for r in purged]})


@endpoint
async def renew_token(request: web.Request) -> web.Response:
    body = await read_body(request)
    caller = await caller_of(request, body, change=True)
    fields = fields_of("Renew", body)
    service = service_of(request)
    now = service.now()
    record, value = await service.renew_token(
        caller.actor, token_id_of(request), **expiry_args(fields, now)
    )
    return new_token(record, value, now)
