"""The store goes away and comes back (SPEC §3 "Store down", §8, issue 5).

Never fail open, never call an outage a bad token: while the store is down a
token the gateway confirmed recently keeps working for at most
``cache.max_stale``, every other request gets 503, and the gateway recovers
by itself when the store returns, without losing what was stored (a Redis
with an fsynced append-only file, killed with SIGKILL) or the usage counted
meanwhile. A revocation made as the store returns is honoured at once.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from tests.gateway_harness import RecordingUpstream, gateway_yaml, route_yaml
from tests.processes import (
    DurableRedis,
    GatewayProcess,
    StoreAdmin,
    durable_redis,
    poll,
)

TTL = 1.0
MAX_STALE = 2.0
# Process scheduling and the 20 ms traffic pace, on a busy 2-core machine.
SLACK = 0.4


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[DurableRedis]:
    executable = shutil.which("redis-server")
    assert executable is not None, "redis-server is not installed"
    with durable_redis(executable, tmp_path / "redis") as server:
        yield server


def outage_config(store_url: str, upstream: RecordingUpstream, cache: str) -> str:
    return gateway_yaml(
        store_url,
        route_yaml("api", "/api/", upstream.url),
        f"cache: {cache}\nusage_flush_interval: 0.1",
    )


async def get(
    client: aiohttp.ClientSession, url: str, token: str | None = None
) -> tuple[int, dict[str, object]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with client.get(url, headers=headers) as response:
        body = await response.json(content_type=None)
        return response.status, body


async def ready_status(client: aiohttp.ClientSession, gateway: GatewayProcess) -> int:
    status, _ = await get(client, gateway.url + "/_patgate/readyz")
    return status


async def readiness_is(
    client: aiohttp.ClientSession, gateway: GatewayProcess, expected: int
) -> bool:
    return await ready_status(client, gateway) == expected


@dataclass
class Traffic:
    """One token used every 20 ms; every answer kept with its time."""

    client: aiohttp.ClientSession
    url: str
    token: str
    seen: list[tuple[float, int]] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            status, _ = await get(self.client, self.url, self.token)
            self.seen.append((time.monotonic(), status))
            await asyncio.sleep(0.02)

    def between(self, start: float, end: float) -> list[tuple[float, int]]:
        return [(at, status) for at, status in self.seen if start <= at < end]


def stored_facts(records: list) -> set[tuple[object, ...]]:
    return {(r.id, r.owner, r.token_hash, r.status, r.scopes) for r in records}


async def test_redis_outage_mid_traffic(redis, gateways, client, upstream):
    admin = StoreAdmin(redis.url())
    gateway = await gateways.start(
        outage_config(redis.url(), upstream, f"{{ttl: {TTL}, max_stale: {MAX_STALE}}}")
    )
    try:
        cached_id, cached = await admin.token("alice")
        _, uncached = await admin.token("bob")
        tokens_before = stored_facts(await admin.store.list_tokens())
        users_before = {u.login for u in await admin.store.list_users()}
        traffic = Traffic(client, gateway.url + "/api/x", cached)
        confirmed_at = time.monotonic()  # the first use asks the store
        pump = asyncio.create_task(traffic.run())
        await poll(lambda: len(traffic.seen) >= 10, what="traffic")

        redis.stop()  # SIGKILL, mid-traffic
        killed_at = time.monotonic()
        # Killed within the TTL: the store confirmed the token once, at first use.
        assert killed_at - confirmed_at < TTL
        await poll(lambda: readiness_is(client, gateway, 503), what="readyz 503")
        status, body = await get(client, gateway.url + "/api/x", uncached)
        assert status == 503, "a token the gateway cannot check is not a bad token"
        assert body["error"] == "temporarily_unavailable"

        # The cached token outlives the TTL, then stops at max_stale.
        await poll(
            lambda: traffic.seen[-1][1] == 503,
            within=MAX_STALE + 2,
            what="the cached token to expire",
        )
        await asyncio.sleep(0.3)
        redis.start()
        restarted_at = time.monotonic()
        await poll(
            lambda: readiness_is(client, gateway, 200),
            within=5,
            what="readyz 200 after the restart",
        )
        print(f"readyz back {time.monotonic() - restarted_at:.3f} s after restart")
        await poll(
            lambda: traffic.seen[-1][1] == 200,
            within=2,
            what="the cached token to work again",
        )
        pump.cancel()

        during = traffic.between(killed_at, restarted_at)
        assert {status for _, status in traffic.seen} <= {200, 503}
        last_ok = max(at for at, status in during if status == 200)
        first_refused = min(at for at, status in during if status == 503)
        print(
            f"confirmed once, killed {killed_at - confirmed_at:.3f} s later; served"
            f" until {last_ok - confirmed_at:.3f} s, 503 from"
            f" {first_refused - confirmed_at:.3f} s (ttl {TTL}, max_stale {MAX_STALE})"
        )
        assert last_ok - confirmed_at > TTL, "the stale grace was not used"
        assert last_ok - confirmed_at < MAX_STALE + SLACK, "served past max_stale"
        assert all(status == 503 for at, status in during if at > first_refused), (
            "once past max_stale, a token stays refused until the store is back"
        )

        # Recovery: everyone works again, new tokens too; nothing was lost.
        assert (await get(client, gateway.url + "/api/x", uncached))[0] == 200
        _, fresh = await admin.token("carol")
        assert (await get(client, gateway.url + "/api/x", fresh))[0] == 200
        assert tokens_before <= stored_facts(await admin.store.list_tokens())
        assert users_before <= {u.login for u in await admin.store.list_users()}
        served = sum(1 for _, status in traffic.seen if status == 200)

        async def counted() -> int | None:
            uses = (await admin.get(cached_id)).use_count
            return uses if uses == served else None

        await poll(counted, within=3, what=f"use_count == {served}")
        assert not any(line.get("level") == "error" for line in gateway.logs())
        assert gateway.events("change_feed_lost")
        await gateway.wait_for_event("change_feed_reconnected", within=3)
    finally:
        await admin.close()


async def test_token_revoked_as_the_store_returns_is_refused_at_once(
    redis, gateways, client, upstream
):
    admin = StoreAdmin(redis.url())
    # A long TTL: only the gateway's distrust of its cache can catch this.
    gateway = await gateways.start(
        outage_config(redis.url(), upstream, "{ttl: 60s, max_stale: 60s}")
    )
    try:
        token_id, token = await admin.token("alice")
        url = gateway.url + "/api/x"
        assert (await get(client, url, token))[0] == 200
        redis.stop()
        await gateway.wait_for_event("change_feed_lost")
        assert (await get(client, url, token))[0] == 200  # from the cache
        # Let the change feed back off, so it is not listening yet when the
        # store returns and the revocation notice goes out.
        await asyncio.sleep(1.2)
        redis.start()
        await admin.revoke(token_id)
        status, _ = await get(client, url, token)
        assert status == 401
        await gateway.wait_for_event("change_feed_reconnected", within=5)
        assert (await get(client, url, token))[0] == 401
    finally:
        await admin.close()


async def test_unopenable_sqlite_store_is_503_until_it_appears(
    tmp_path, gateways, client, upstream
):
    # The token lives in a store the gateway cannot open yet.
    prepared = tmp_path / "prepared" / "patgate.db"
    prepared.parent.mkdir()
    admin = StoreAdmin(f"sqlite:///{prepared}")
    try:
        _, token = await admin.token("alice")
    finally:
        await admin.close()
    missing = tmp_path / "not-yet" / "patgate.db"
    gateway = await gateways.start(
        outage_config(f"sqlite:///{missing}", upstream, "{ttl: 1s, max_stale: 2s}")
    )
    url = gateway.url + "/api/x"
    assert await ready_status(client, gateway) == 503
    for _ in range(3):
        status, body = await get(client, url, token)
        assert status == 503
        assert body["error"] == "temporarily_unavailable"
    assert upstream.requests == []

    missing.parent.mkdir()
    shutil.copy(prepared, missing)
    await poll(lambda: readiness_is(client, gateway, 200), what="readyz 200")
    assert (await get(client, url, token))[0] == 200


async def test_corrupt_sqlite_file_is_503_not_401(tmp_path, gateways, client, upstream):
    elsewhere = tmp_path / "elsewhere.db"
    admin = StoreAdmin(f"sqlite:///{elsewhere}")
    try:
        _, token = await admin.token("alice")
    finally:
        await admin.close()
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"this is not an SQLite database" * 100)
    gateway = await gateways.start(
        outage_config(f"sqlite:///{broken}", upstream, "{ttl: 1s, max_stale: 2s}")
    )
    assert await ready_status(client, gateway) == 503
    status, _ = await get(client, gateway.url + "/api/x", token)
    assert status == 503
    assert upstream.requests == []
