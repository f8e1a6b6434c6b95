"""A token granted ``@env-all`` follows the set as gateway.yaml defines it now.

A real ``patgate serve`` process; tokens made with the real CLI on the same
SQLite store; the set is redefined, then removed, and each SIGHUP reload
takes effect on the next request. The subset rule holds against the
expanded set at request time: a member the owner does not hold never counts.
"""

from __future__ import annotations

import json
import signal

import aiohttp

from tests.gateway_harness import RecordingUpstream, gateway_yaml
from tests.processes import GatewayProcess, run_cli

READ = "/1.0/environment/info"
CONTROL = "/1.0/environment/control/stop"


def config(store_url: str, upstream: RecordingUpstream, env_all: str) -> str:
    routes = (
        "  - name: paas\n"
        "    prefix: /1.0/\n"
        f"    upstream: {upstream.url}\n"
        "    credentials: [bearer]\n"
        "    paths:\n"
        "      /1.0/environment/control/*: env:control\n"
        "      /1.0/*: env:read\n"
    )
    sets = f"  files-rw: [files:read]\n{env_all}"
    return gateway_yaml(store_url, routes, scope_sets=sets)


def create_token(gateway: GatewayProcess, owner: str) -> tuple[str, str]:
    made = run_cli(
        gateway.directory, "token", "create", "-u", owner, "-s", "@env-all", "--json"
    )
    assert made.returncode == 0, made.stderr
    record = json.loads(made.stdout)
    assert record["scopes"] == ["@env-all"]
    return record["id"], record["token"]


async def statuses(
    client: aiohttp.ClientSession, gateway: GatewayProcess, token: str
) -> tuple[int, int]:
    found = []
    for path in (READ, CONTROL):
        headers = {"Authorization": f"Bearer {token}"}
        async with client.post(gateway.url + path, headers=headers) as response:
            await response.read()
            found.append(response.status)
    return found[0], found[1]


async def reload(gateway: GatewayProcess, text: str, count: int) -> None:
    gateway.write_config(text)
    gateway.send(signal.SIGHUP)
    await gateway.wait_for_event("config_reloaded", count=count)


async def test_a_token_follows_its_set_across_reloads(
    gateways, sqlite_url, upstream, client
):
    text = config(sqlite_url, upstream, "  env-all: [env:read]\n")
    gateway = await gateways.start(text)
    for login, scope in (("alice", "env:*"), ("bob", "env:read")):
        added = run_cli(gateway.directory, "user", "add", login, "-s", scope)
        assert added.returncode == 0, added.stderr
    alice_id, alice = create_token(gateway, "alice")
    _, bob = create_token(gateway, "bob")
    assert await statuses(client, gateway, alice) == (200, 403)

    await reload(
        gateway, config(sqlite_url, upstream, "  env-all: [env:read, env:control]\n"), 1
    )
    assert await statuses(client, gateway, alice) == (200, 200)
    assert upstream.last.headers["X-Patgate-Scopes"] == "env:read,env:control"
    # bob does not hold env:control: the set cannot give it to his token.
    assert await statuses(client, gateway, bob) == (200, 403)
    headers = {"Authorization": f"Bearer {bob}"}
    async with client.post(gateway.url + CONTROL, headers=headers) as refused:
        assert refused.headers["X-Patgate-Accepted-Scopes"] == (
            "env:control, env:*, @env-all"
        )
    explained = run_cli(
        gateway.directory, "explain", "POST", CONTROL, "--token-id", alice_id, "--json"
    )
    assert json.loads(explained.stdout)["status"] == 200, explained.stderr

    # Removed from the file: the token keeps the name and is granted nothing.
    await reload(gateway, config(sqlite_url, upstream, ""), 2)
    assert await statuses(client, gateway, alice) == (403, 403)
    shown = run_cli(gateway.directory, "token", "show", alice_id, "--json")
    assert json.loads(shown.stdout)["scopes"] == ["@env-all"]
