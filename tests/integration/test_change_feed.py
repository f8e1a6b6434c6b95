"""A change feed that cannot miss (issue 14): a dropped subscription is renewed
and the cache distrusted, since notices sent meanwhile are lost.

``CLIENT KILL TYPE pubsub`` on the test Redis drops the gateway's subscription.
A revocation whose notice nobody hears is made by writing the token's hash
directly (no PUBLISH), as a notice lost in the gap would be: the gateway must
refuse the token once it notices the drop, and after it has subscribed again
it must hear the next notice within the 100 ms bound.
"""

from __future__ import annotations

import time

import aiohttp
import pytest

from patgate.models import TokenStatus
from patgate.store.redis import token_key
from patgate.web.keys import CACHE
from tests.conftest import RedisServer
from tests.gateway_harness import Gateway, RecordingUpstream, StartGateway, route_yaml
from tests.processes import ADMIN, poll

pytestmark = pytest.mark.timing  # wall-clock bounds: run alone (scripts/test)

LONG_CACHE = "cache: {ttl: 60s, max_stale: 120s}"


async def status(client: aiohttp.ClientSession, gateway: Gateway, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    async with client.get(gateway.url + "/api/x", headers=headers) as response:
        return response.status


async def new_token(gateway: Gateway) -> tuple[str, str]:
    if await gateway.store.get_user("alice") is None:
        await gateway.add_user("alice")
    record, value = await gateway.service.create_token(ADMIN, "alice")
    return record.id, value


def subscribers(server: RedisServer) -> int:
    with server.client_sync() as admin:
        (_, count), *_ = admin.pubsub_numsub("patgate:changes")
        return int(count)


async def test_a_killed_subscription_is_renewed_and_nothing_missed_is_served(
    make_gateway: StartGateway,
    upstream: RecordingUpstream,
    redis_server: RedisServer,
    redis_url: str,
    client: aiohttp.ClientSession,
) -> None:
    gateway = await make_gateway(
        redis_url, route_yaml("api", "/api/", upstream.url), extra=LONG_CACHE
    )
    cache = gateway.app[CACHE]
    await poll(lambda: subscribers(redis_server) == 1 or None, what="the subscription")
    await poll(lambda: not cache.suspended or None, what="the feed to listen")
    lost_id, lost = await new_token(gateway)
    heard_id, heard = await new_token(gateway)
    for token in (lost, heard):
        assert await status(client, gateway, token) == 200  # now cached
    db = int(redis_url.rpartition("/")[2])
    with redis_server.client_sync(db) as admin:
        # Revoked with no notice: the cache alone keeps serving it...
        admin.hset(token_key(lost_id), "status", TokenStatus.REVOKED.value)
        assert await status(client, gateway, lost) == 200
        # ...until the subscription drops, and notices may have been missed.
        killed = admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        dropped_at = time.monotonic()
    assert killed >= 1

    async def refused() -> bool | None:
        return await status(client, gateway, lost) == 401 or None

    await poll(refused, what="the unheard revocation to be honoured", within=5.0)
    refused_after = time.monotonic() - dropped_at
    await poll(lambda: subscribers(redis_server) == 1 or None, what="resubscribed")
    await poll(lambda: not cache.suspended or None, what="the feed to listen again")
    renewed_after = time.monotonic() - dropped_at
    print(
        f"pubsub killed: unheard revocation refused after {refused_after * 1000:.0f}"
        f" ms, subscribed again after {renewed_after * 1000:.0f} ms"
    )
    # Subscribed again: a revocation is heard, within the 100 ms bound.
    assert await status(client, gateway, heard) == 200
    await gateway.service.revoke_tokens(ADMIN, [heard_id])
    revoked_at = time.monotonic()
    while await status(client, gateway, heard) == 200:
        assert time.monotonic() - revoked_at < 0.1, "the revocation went unheard"
    assert await status(client, gateway, lost) == 401
