"""The 403 hint (``X-Patgate-Accepted-Scopes``) tells nothing to a caller
without a valid token.

A refusal for a missing scope names what would have worked: the scopes, the
wildcards and the scope sets that cover them. That is only sent with a 403
``insufficient_scope``, which only a valid, live token of an enabled owner
can get; a missing, unknown, revoked, expired, regenerated-away or
malformed token, a disabled owner, a wrong address, a public route or no
route never get it. Stopped in ``patgate.answers.refusal_answer`` (the
hint only on 403 ``insufficient_scope``) and ``patgate.gate.Rules.refusal``.
"""

from __future__ import annotations

import json

import pytest

from patgate.answers import ACCEPTED_SCOPES
from tests.gateway_harness import RecordingUpstream
from tests.security.conftest import StartGateway, bearer, request, send_raw
from tests.security.test_error_oracle import refused_tokens

ROUTES = """\
  - name: api
    prefix: /api/
    upstream: {upstream}
    methods: {{GET: api:read, HEAD: api:read, '*': api:write}}
  - name: paas
    prefix: /1.0/
    upstream: {upstream}
    credentials: [bearer, query]
    error_style: result
    paths:
      /1.0/environment/control/*: env:control
      /1.0/*: env:read
  - name: public
    prefix: /public/
    upstream: {upstream}
    auth: none
"""
SETS = "  env-all: [env:read, env:control]\n  api-rw: [api:read, api:write]\n"
TARGETS = ("/api/x", "/1.0/environment/control/stop", "/public/x", "/nowhere")


def has_hint(response) -> bool:
    return ACCEPTED_SCOPES.lower() in {k.lower() for k in response.headers}


def assert_no_hint(response, where: str) -> None:
    assert not has_hint(response), where
    assert b"accepted" not in response.body, where
    for scope in (b"api:write", b"env:control", b"env-all", b"api-rw"):
        assert scope not in response.body, where


@pytest.fixture
async def gateway(make_gateway: StartGateway, upstream: RecordingUpstream, store_url):
    routes = ROUTES.format(upstream=upstream.url)
    return await make_gateway(store_url, routes, scope_sets=SETS)


async def test_a_missing_scope_names_what_would_have_worked(gateway, upstream):
    token = await gateway.token("alice", scopes=["api:read", "env:read"])
    (put,) = await send_raw(gateway, request("/api/x", bearer(token), method="PUT"))
    assert put.status == 403
    assert put.headers[ACCEPTED_SCOPES] == "api:write, api:*, @api-rw"
    body = json.loads(put.body)
    assert body["error"] == "insufficient_scope"
    assert body["accepted_scopes"] == ["api:write", "api:*", "@api-rw"]
    (stop,) = await send_raw(
        gateway, request("/1.0/environment/control/stop", bearer(token))
    )
    assert stop.status == 403
    assert stop.headers[ACCEPTED_SCOPES] == "env:control, env:*, @env-all"
    result = json.loads(stop.body)
    assert (result["result"], result["accepted_scopes"][0]) == (702, "env:control")
    assert upstream.requests == []


async def test_no_hint_without_a_valid_token(gateway, upstream):
    refused = await refused_tokens(gateway)
    for target in TARGETS:
        for method in ("GET", "PUT"):
            (bare,) = await send_raw(gateway, request(target, method=method))
            assert_no_hint(bare, f"{method} {target} without a token")
            for reason, value in refused.items():
                where = f"{method} {target} with a token: {reason}"
                (response,) = await send_raw(
                    gateway, request(target, bearer(value), method=method)
                )
                assert response.status in (200, 401, 404, 429), where
                assert_no_hint(response, where)


async def test_no_hint_for_a_token_refused_for_its_address(gateway):
    token = await gateway.token(
        "alice", scopes=["api:read"], allowed_cidrs=["10.9.9.0/24"]
    )
    (response,) = await send_raw(
        gateway, request("/api/x", bearer(token), method="PUT")
    )
    assert (response.status, json.loads(response.body)["error"]) == (403, "forbidden")
    assert_no_hint(response, "ip_not_allowed")


async def test_node_refusals_name_only_a_grantable_node_scope(gateway):
    token = await gateway.token("alice", scopes=["node:/api/mine:rw"])
    (plain,) = await send_raw(
        gateway, request("/api/other", bearer(token), method="PUT")
    )
    assert plain.status == 403
    assert plain.headers[ACCEPTED_SCOPES] == "node:/api/other:w"
    # SECURITY: a "," in the path would forge a list element in the header.
    (comma,) = await send_raw(gateway, request("/api/a,*", bearer(token), method="PUT"))
    assert comma.status == 403
    assert not has_hint(comma)
