"""Observe, then suggest, against a running gateway and real stores.

A token is observed; real requests go through the gateway to a real
upstream; the coalesced usage flush writes what was seen; the suggestion
(API, CLI) names the least scopes; applying it narrows the token, which then
still passes every observed request and is refused the others.
"""

from __future__ import annotations

import base64
import json

import aiohttp

from patgate.routing import Router
from patgate.scopes import ScopeSets
from patgate.service import Actor
from patgate.web.gateway.sync import flush_usage
from patgate.web.manage.tokens import API_PREFIX
from tests.gateway_harness import RecordingUpstream, gateway_yaml, route_yaml
from tests.processes import poll, run_cli

ADMIN = Actor("test-admin", admin=True)
PASSWORD = "correct horse battery staple"
# What the token is used for: read a few files in one project, and read the
# info of environments; never a write, never another project.
OBSERVED = [
    ("GET", "/dav/projects/alpha/report.txt"),
    ("PROPFIND", "/dav/projects/alpha/docs"),
    ("GET", "/dav/projects/alpha/docs/42"),
    ("GET", "/1.0/environment/8d0b1e6f6a2c4b7d9e3f/info"),
    ("GET", "/1.0/environment/9a1c2e3f4b5d6a7b8c9d/info"),
]
# What it was never seen doing, and must be refused once narrowed.
NEVER = [
    ("PUT", "/dav/projects/alpha/report.txt", 403),
    ("GET", "/dav/projects/beta/secret.txt", 403),
    ("POST", "/1.0/environment/control/rest/stopenv", 403),
]


def routes(upstream: RecordingUpstream) -> str:
    return route_yaml(
        "files",
        "/dav/",
        upstream.url,
        "credentials: [bearer]",
        "methods: {GET: files:read, HEAD: files:read, PROPFIND: files:read,"
        ' "*": files:write}',
    ) + route_yaml(
        "paas",
        "/1.0/",
        upstream.url,
        "credentials: [bearer]",
        "paths:",
        "  /1.0/environment/control/rest/stopenv: env:control",
        "  /1.0/environment/*: env:read",
    )


async def send(
    client: aiohttp.ClientSession, url: str, token: str, method: str, path: str
) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    async with client.request(method, url + path, headers=headers) as response:
        await response.read()
        return response.status


async def test_observe_suggest_apply_and_the_narrowed_token(
    make_gateway, store_url, upstream, client
):
    gateway = await make_gateway(store_url, routes(upstream))
    await gateway.add_user("alice", password=PASSWORD)
    value = await gateway.token("alice", name="ci", observe=7 * 86400)
    token_id = value[4:12]
    for method, path in OBSERVED:
        assert await send(client, gateway.url, value, method, path) == 200
    await flush_usage(gateway.app)  # the one coalesced write of this batch

    auth = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    url = f"{gateway.url}{API_PREFIX}/tokens/{token_id}/suggestion"
    async with client.get(url, headers={"Authorization": auth}) as response:
        assert response.status == 200, await response.text()
        body = await response.json()
    assert body["observing"] is True
    found = body["suggestion"]
    assert found["scopes"] == [
        "env:read",
        "files:read",
        "node:/1.0/environment:r",
        "node:/dav/projects/alpha:r",
    ]
    covers = {c["scope"]: c["requests"] for c in found["covers"]}
    assert {(r["method"], r["path"]) for r in covers["env:read"]} == {
        ("GET", "/1.0/environment/*/info")
    }
    assert sum(r["count"] for r in covers["env:read"]) == 2
    # No id and no token value is kept in a pattern.
    assert value not in json.dumps(body)
    assert "8d0b1e6f6a2c4b7d9e3f" not in json.dumps(body)

    config = gateway.config
    router = Router.from_config(config.routes, ScopeSets(config.scope_sets))
    narrowed = await gateway.service.apply_suggestion(ADMIN, token_id, router)
    assert narrowed.scopes == tuple(found["scopes"])

    async def narrowed_here() -> bool:  # the edit's notice reached the gateway
        method, path, status = NEVER[0]
        return await send(client, gateway.url, value, method, path) == status

    await poll(narrowed_here, within=5.0, interval=0.05, what="the narrowing")
    for method, path in OBSERVED:
        assert await send(client, gateway.url, value, method, path) == 200, path
    for method, path, status in NEVER:
        assert await send(client, gateway.url, value, method, path) == status, path


async def test_observing_stops_and_other_tokens_are_not_observed(
    make_gateway, store_url, upstream, client
):
    gateway = await make_gateway(store_url, routes(upstream))
    observed = await gateway.token("alice", observe=3600)
    plain = await gateway.token("alice")
    for value in (observed, plain):
        assert await send(client, gateway.url, value, "GET", "/dav/a.txt") == 200
    await flush_usage(gateway.app)
    assert [s.pattern for s in await gateway.store.observed(observed[4:12])] == [
        "/dav/a.txt"
    ]
    assert await gateway.store.observed(plain[4:12]) == []
    # Stopped: once the change reaches the gateway (its notice), requests
    # are no longer noted; what was seen is kept.
    await gateway.service.edit_token(ADMIN, observed[4:12], observe=None)
    sent: list[str] = []

    async def last_not_noted() -> bool:
        path = f"/dav/after-{len(sent)}.txt"
        sent.append(path)
        assert await send(client, gateway.url, observed, "GET", path) == 200
        await flush_usage(gateway.app)
        noted = {s.pattern for s in await gateway.store.observed(observed[4:12])}
        return path not in noted

    await poll(last_not_noted, within=5.0, interval=0.05, what="observing to stop")
    noted = {s.pattern for s in await gateway.store.observed(observed[4:12])}
    assert "/dav/a.txt" in noted


async def test_the_cli_observes_suggests_and_applies(
    gateways, sqlite_url, upstream, client
):
    text = gateway_yaml(sqlite_url, routes(upstream), "usage_flush_interval: 0.1")
    gateway = await gateways.start(text)
    added = run_cli(gateway.directory, "user", "add", "alice")
    assert added.returncode == 0, added.stderr
    made = run_cli(
        gateway.directory, "token", "create", "-u", "alice", "--observe", "7d", "--json"
    )
    assert made.returncode == 0, made.stderr
    record = json.loads(made.stdout)
    token_id, value = record["id"], record["token"]
    assert record["observe_until"] is not None
    empty = run_cli(gateway.directory, "token", "suggest", token_id)
    assert "nothing observed" in empty.stdout, empty.stderr
    refused = run_cli(
        gateway.directory, "token", "edit", token_id, "--apply-suggestion"
    )
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1
    assert "nothing observed" in refused.stderr
    for method, path in OBSERVED[:3]:
        assert await send(client, gateway.url, value, method, path) == 200

    def suggested() -> dict | None:
        shown = run_cli(gateway.directory, "token", "suggest", token_id, "--json")
        assert shown.returncode == 0, shown.stderr
        data = json.loads(shown.stdout)
        return data if len(data["suggestion"]["covers"]) == 2 else None

    data = await poll(suggested, within=10.0, interval=0.1, what="the flush")
    assert data["suggestion"]["scopes"] == ["files:read", "node:/dav/projects/alpha:r"]
    text_out = run_cli(gateway.directory, "token", "suggest", token_id).stdout
    assert "files:read covers:" in text_out
    assert "GET /dav/projects/alpha/docs/* (files, 1 time" in text_out

    applied = run_cli(
        gateway.directory, "token", "edit", token_id, "--apply-suggestion"
    )
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout == (
        f"narrowed {token_id}: * -> files:read, node:/dav/projects/alpha:r\n"
    )
    stopped = run_cli(gateway.directory, "token", "edit", token_id, "--no-observe")
    assert stopped.returncode == 0, stopped.stderr
    assert "observe_until:" in stopped.stdout

    async def narrowed_here() -> bool:
        return await send(client, gateway.url, value, "PUT", OBSERVED[0][1]) == 403

    await poll(narrowed_here, within=5.0, interval=0.05, what="the narrowing")
    for method, path in OBSERVED[:3]:
        assert await send(client, gateway.url, value, method, path) == 200, path


async def test_the_api_takes_observe_on_create_and_patch(
    make_gateway, sqlite_url, upstream, client
):
    gateway = await make_gateway(sqlite_url, routes(upstream))
    await gateway.add_user("alice", password=PASSWORD)
    auth = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    headers = {"Authorization": auth}
    api = f"{gateway.url}{API_PREFIX}"
    body = {"name": "ci", "observe": "7d"}
    async with client.post(f"{api}/tokens", json=body, headers=headers) as made:
        assert made.status == 201, await made.text()
        record = await made.json()
    assert record["observe_until"] is not None
    url = f"{api}/tokens/{record['id']}"
    for wrong in ("0s", "400d", "soon"):
        async with client.patch(url, json={"observe": wrong}, headers=headers) as bad:
            assert bad.status == 422, wrong
            assert "observe" in (await bad.json())["message"]
    async with client.patch(url, json={"observe": None}, headers=headers) as done:
        assert done.status == 200
        assert (await done.json())["observe_until"] is None
    # Nothing observed: nothing to apply (409), and the token is unchanged.
    async with client.post(
        f"{url}/apply-suggestion", json={}, headers=headers
    ) as refused:
        assert refused.status == 409
    async with client.get(f"{url}/suggestion", headers=headers) as shown:
        assert (await shown.json())["suggestion"]["scopes"] == []
    assert (await gateway.store.get_token(record["id"])).scopes == ("*",)
