"""Online password guessing against the management API (issue 11, finding 6).

The attack: the login throttle was checked before the password hash and
counted after it, so 120 concurrent wrong logins from one address all passed
the check before the first failure was counted, and all were verified
(~500 guesses a minute instead of 30); with ``workers: N`` or replicas each
process kept its own count.

Stopped in ``patgate.throttle.LoginThrottle``: each password check is
reserved in the store's shared counter (``Store.take_rate``) before it runs,
at most two run at once per address in a process, and an address over its
budget is refused in the process without asking the store. Every check
counts, a right password too: a right password after the budget is spent is
refused until the window passes. Checks are counted by the ``login_failed``
line each wrong password logs after its argon2 verification.
"""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path

import aiohttp
import pytest
from structlog.testing import capture_logs

from patgate.store import Store
from patgate.store.base import RateVerdict
from patgate.throttle import LoginThrottle, ThrottledError
from patgate.web.manage.tokens import API_PREFIX
from tests.conftest import RedisServer
from tests.gateway_harness import (
    ADMIN,
    Gateway,
    RecordingUpstream,
    gateway_yaml,
    route_yaml,
)
from tests.processes import ProcessGroup, StoreAdmin
from tests.security.conftest import ROUTES, StartGateway

PASSWORD = "alice-password-for-guessing"
LIMIT = 5
WINDOW = 60
ATTEMPTS = 40


def basic(password: str) -> dict[str, str]:
    value = base64.b64encode(f"alice:{password}".encode()).decode()
    return {"Authorization": f"Basic {value}"}


WRONG = basic("not-the-password")
RIGHT = basic(PASSWORD)


class Clock:
    """A settable clock for the gateway; starts one second into a window."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0 - 1_800_000_000.0 % WINDOW + 1.0

    def __call__(self) -> float:
        return self.now


async def start(
    make_gateway: StartGateway,
    upstream: RecordingUpstream,
    store_url: str,
    *,
    extra: str = "",
    clock: Clock | None = None,
) -> Gateway:
    # The budget's windows are aligned on the minute: a real clock could
    # cross into the next one halfway through a test. Time stands still here
    # unless the test moves it.
    gateway = await make_gateway(
        store_url,
        ROUTES.format(upstream=upstream.url),
        extra=f"limits: {{failed_auth_per_minute: {LIMIT}}}\n{extra}",
        clock=clock or Clock(),
    )
    await gateway.service.add_user(ADMIN, "alice", password=PASSWORD)
    return gateway


async def whoami(
    client: aiohttp.ClientSession, url: str, auth: dict[str, str], **headers: str
) -> aiohttp.ClientResponse:
    async with client.get(
        url + API_PREFIX + "/whoami", headers={**auth, **headers}
    ) as response:
        await response.read()
        return response


def checks(logs: list[dict[str, object]]) -> int:
    """Password verifications that failed (each logs one line, after argon2)."""
    return sum(1 for entry in logs if entry["event"] == "login_failed")


def assert_throttled(response: aiohttp.ClientResponse) -> None:
    assert response.status == 429
    assert 1 <= int(response.headers["Retry-After"]) <= WINDOW


async def test_concurrent_wrong_logins_verify_at_most_the_limit(
    make_gateway: StartGateway,
    upstream: RecordingUpstream,
    store_url: str,
    client: aiohttp.ClientSession,
) -> None:
    gateway = await start(make_gateway, upstream, store_url)
    with capture_logs() as logs:
        burst = await asyncio.gather(
            *(whoami(client, gateway.url, WRONG) for _ in range(ATTEMPTS))
        )
        # Then one after another, until the budget is spent for good.
        rest = [await whoami(client, gateway.url, WRONG) for _ in range(LIMIT + 3)]
    statuses = sorted(response.status for response in [*burst, *rest])
    assert set(statuses) == {401, 429}
    assert statuses.count(401) == LIMIT
    for response in [*burst, *rest]:
        if response.status == 429:
            assert_throttled(response)
    assert checks(logs) == LIMIT
    assert all(response.status == 429 for response in rest[-3:])


async def test_right_password_after_the_limit_waits_for_the_window(
    make_gateway: StartGateway,
    upstream: RecordingUpstream,
    sqlite_url: str,
    client: aiohttp.ClientSession,
) -> None:
    clock = Clock()
    gateway = await start(make_gateway, upstream, sqlite_url, clock=clock)
    for _ in range(LIMIT):
        assert (await whoami(client, gateway.url, WRONG)).status == 401
    refused = await whoami(client, gateway.url, RIGHT)
    assert_throttled(refused)
    assert int(refused.headers["Retry-After"]) == WINDOW - 1
    async with client.post(
        gateway.url + API_PREFIX + "/session",
        json={"login": "alice", "password": PASSWORD},
    ) as login:
        assert login.status == 429
    clock.now += WINDOW - 1.5  # still the same window
    assert (await whoami(client, gateway.url, RIGHT)).status == 429
    clock.now += 1.0  # the next window
    assert (await whoami(client, gateway.url, RIGHT)).status == 200


async def test_other_addresses_keep_their_own_budget(
    make_gateway: StartGateway,
    upstream: RecordingUpstream,
    sqlite_url: str,
    client: aiohttp.ClientSession,
) -> None:
    gateway = await start(make_gateway, upstream, sqlite_url)
    for _ in range(LIMIT):
        await whoami(client, gateway.url, WRONG)
    assert (await whoami(client, gateway.url, RIGHT)).status == 429
    # A spoofed X-Forwarded-For from an untrusted peer changes nothing.
    spoofed = await whoami(client, gateway.url, RIGHT, **{"X-Forwarded-For": "1.2.3.4"})
    assert spoofed.status == 429
    # Another loopback source address (all of 127/8 is loopback on Linux).
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as elsewhere:
        assert (await whoami(elsewhere, gateway.url, RIGHT)).status == 200


async def test_clients_behind_a_trusted_proxy_are_told_apart(
    make_gateway: StartGateway,
    upstream: RecordingUpstream,
    sqlite_url: str,
    client: aiohttp.ClientSession,
) -> None:
    gateway = await start(
        make_gateway, upstream, sqlite_url, extra="trusted_proxies: [127.0.0.0/8]"
    )
    guesser = {"X-Forwarded-For": "198.51.100.7"}
    with capture_logs() as logs:
        answers = await asyncio.gather(
            *(whoami(client, gateway.url, WRONG, **guesser) for _ in range(ATTEMPTS))
        )
        for _ in range(LIMIT):
            await whoami(client, gateway.url, WRONG, **guesser)
    assert checks(logs) == LIMIT
    assert sum(response.status == 401 for response in answers) <= LIMIT
    assert (await whoami(client, gateway.url, RIGHT, **guesser)).status == 429
    other = {"X-Forwarded-For": "198.51.100.8"}
    assert (await whoami(client, gateway.url, RIGHT, **other)).status == 200


# --------------------------------------------------------------------------
# Several processes: workers and replicas share one budget


async def early_in_a_window(margin: float = 25.0) -> None:
    """Wait, if need be, until ``margin`` seconds of this window are left.

    Real processes run on the real clock, and the budget's windows are
    aligned on the minute: a test that crossed into the next window would
    see a fresh budget halfway through.
    """
    left = WINDOW - time.time() % WINDOW
    if left < margin:
        await asyncio.sleep(left + 0.5)


def process_config(store_url: str, upstream: RecordingUpstream) -> str:
    return gateway_yaml(
        store_url,
        route_yaml("api", "/api/", upstream.url),
        f"workers: 2\nlimits: {{failed_auth_per_minute: {LIMIT}}}",
    )


async def test_workers_and_replicas_share_one_budget(
    tmp_path: Path,
    store_url: str,
    upstream: RecordingUpstream,
    gateways: ProcessGroup,
    client: aiohttp.ClientSession,
) -> None:
    # Two processes of two workers each, on one store: Redis, or one SQLite
    # file (its rate counters live in the file, shared by every process).
    admin = StoreAdmin(store_url)
    try:
        await admin.service.add_user(ADMIN, "alice", password=PASSWORD)
    finally:
        await admin.close()
    replicas = [
        await gateways.start(process_config(store_url, upstream)) for _ in range(2)
    ]
    await early_in_a_window()

    async def guess(url: str) -> int:
        # A connection of its own each, so the kernel spreads them on workers.
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True)
        ) as own:
            return (await whoami(own, url, WRONG)).status

    statuses = await asyncio.gather(
        *(guess(replica.url) for replica in replicas for _ in range(ATTEMPTS // 2))
    )
    for replica in replicas:
        for _ in range(LIMIT):
            statuses.append(await guess(replica.url))
    assert set(statuses) <= {401, 429}
    assert statuses.count(401) <= LIMIT
    await asyncio.sleep(0.5)  # let the last log lines reach the files
    verified = sum(len(replica.events("login_failed")) for replica in replicas)
    assert verified == statuses.count(401)
    assert 1 <= verified <= LIMIT
    for replica in replicas:
        assert (await whoami(client, replica.url, RIGHT)).status == 429


# --------------------------------------------------------------------------
# The throttle itself, on real stores


class CountingCounter:
    """A real store's take_rate, counted: did a check reach the store?"""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.calls = 0

    async def take_rate(
        self, key: str, limit: int, window: int, now: float
    ) -> RateVerdict:
        self.calls += 1
        return await self.store.take_rate(key, limit, window, now)


async def test_an_address_over_its_budget_does_not_reach_the_store(
    store: Store,
) -> None:
    counter = CountingCounter(store)
    throttle = LoginThrottle(counter, LIMIT)
    now = Clock().now
    for _ in range(LIMIT):
        async with throttle.check("198.51.100.1", now):
            pass
    assert counter.calls == LIMIT
    for _ in range(100):
        with pytest.raises(ThrottledError) as refused:
            async with throttle.check("198.51.100.1", now + 1):
                pass
        assert refused.value.retry_after == pytest.approx(WINDOW - 2)
    assert counter.calls == LIMIT
    # Another process (another throttle, same store) learns it from the store
    # once, then refuses locally too.
    other = LoginThrottle(CountingCounter(store), LIMIT)
    for _ in range(10):
        with pytest.raises(ThrottledError):
            async with other.check("198.51.100.1", now + 2):
                pass
    assert isinstance(other.counter, CountingCounter)
    assert other.counter.calls == 1


async def test_at_most_two_checks_run_at_once_per_address(store: Store) -> None:
    throttle = LoginThrottle(store, 100)
    now = Clock().now
    release = asyncio.Event()
    entered = [asyncio.Event(), asyncio.Event()]

    async def slow_check(inside: asyncio.Event) -> None:
        async with throttle.check("198.51.100.1", now):
            inside.set()
            await release.wait()

    running = [asyncio.create_task(slow_check(inside)) for inside in entered]
    for inside in entered:
        await inside.wait()
    with pytest.raises(ThrottledError) as refused:
        async with throttle.check("198.51.100.1", now):
            pass
    assert (refused.value.reason, refused.value.retry_after) == ("concurrent", 1.0)
    async with throttle.check("198.51.100.2", now):
        pass  # another address is not held up
    release.set()
    await asyncio.gather(*running)
    async with throttle.check("198.51.100.1", now):
        pass


async def test_a_store_outage_refuses_logins_never_lets_them_through(
    make_gateway: StartGateway,
    upstream: RecordingUpstream,
    redis_url: str,
    redis_server: RedisServer,
    client: aiohttp.ClientSession,
) -> None:
    gateway = await start(make_gateway, upstream, redis_url)
    assert (await whoami(client, gateway.url, RIGHT)).status == 200
    redis_server.stop()
    try:
        with capture_logs() as logs:
            for auth in (WRONG, RIGHT):
                assert (await whoami(client, gateway.url, auth)).status == 503
        assert checks(logs) == 0  # nothing was verified unreserved
    finally:
        redis_server.start()
