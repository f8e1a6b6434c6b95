"""Limits (SPEC §3 "Limits", issue 5), on real ``patgate serve`` processes.

- A token's ``rate_limit`` (requests per minute) answers 429 with
  ``Retry-After``; the count is shared by every gateway process: every
  replica on Redis, every process and worker on the machine on SQLite
  (issue 11, finding 8: ``workers: 4`` used to let 4 times the limit in).
- Failed authentication is throttled per client IP (the peer, or the
  ``X-Forwarded-For`` hop named by a trusted proxy): that IP gets 429 with
  ``Retry-After``, even with a good token, while other IPs carry on.
- Oversized header lines and URLs are refused by the HTTP parser with a 4xx,
  nothing reaches the upstream, and the log holds no traceback.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.gateway_harness import RecordingUpstream, gateway_yaml, route_yaml
from tests.processes import GatewayProcess, ProcessGroup, StoreAdmin

WINDOW = 60


async def call(
    client: aiohttp.ClientSession,
    gateway: GatewayProcess,
    token: str,
    forwarded_for: str | None = None,
) -> tuple[int, str | None]:
    headers = {"Authorization": f"Bearer {token}"}
    if forwarded_for:
        headers["X-Forwarded-For"] = forwarded_for
    async with client.get(gateway.url + "/api/x", headers=headers) as response:
        await response.read()
        return response.status, response.headers.get("Retry-After")


def assert_retry_after(value: str | None) -> None:
    assert value is not None, "429 without Retry-After"
    assert 1 <= int(value) <= WINDOW


async def spread(
    client: aiohttp.ClientSession,
    pair: list[GatewayProcess],
    token: str,
    per_gateway: int,
) -> tuple[dict[int, list[int]], bool]:
    """``per_gateway`` calls on each gateway, alternating; whether one window."""
    started = time.time()
    seen: dict[int, list[int]] = {0: [], 1: []}
    for _ in range(per_gateway):
        for index, gateway in enumerate(pair):
            status, retry_after = await call(client, gateway, token)
            seen[index].append(status)
            if status == 429:
                assert_retry_after(retry_after)
    one_window = started // WINDOW == time.time() // WINDOW
    return seen, one_window


async def start_pair(
    gateways: ProcessGroup, store_url: str, upstream: RecordingUpstream
) -> list[GatewayProcess]:
    config = gateway_yaml(store_url, route_yaml("api", "/api/", upstream.url))
    return list(await asyncio.gather(gateways.start(config), gateways.start(config)))


async def test_rate_limit_is_shared_by_gateways(store_url, gateways, client, upstream):
    admin = StoreAdmin(store_url)
    try:
        _, token = await admin.token("alice", rate_limit=5)
    finally:
        await admin.close()
    pair = await start_pair(gateways, store_url, upstream)
    seen, one_window = await spread(client, pair, token, per_gateway=6)
    allowed = sum(status == 200 for statuses in seen.values() for status in statuses)
    assert {s for statuses in seen.values() for s in statuses} == {200, 429}
    # A minute boundary inside the test opens a second window.
    assert allowed == 5 if one_window else allowed <= 10
    assert len(upstream.requests) == allowed


async def test_rate_limit_is_shared_by_the_workers_of_one_gateway_on_sqlite(
    sqlite_url, gateways, upstream
):
    """40 requests at once, each on its own connection, spread by the kernel
    over 4 workers: exactly the limit gets through."""
    admin = StoreAdmin(sqlite_url)
    try:
        _, token = await admin.token("alice", rate_limit=5)
    finally:
        await admin.close()
    gateway = await gateways.start(
        gateway_yaml(sqlite_url, route_yaml("api", "/api/", upstream.url), "workers: 4")
    )
    workers = {e["pid"] for e in gateway.events("gateway_started")}
    assert len(workers) == 4
    await away_from_a_window_end()
    started = time.time()
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    async with aiohttp.ClientSession(connector=connector) as client:
        answers = await asyncio.gather(
            *(call(client, gateway, token) for _ in range(40))
        )
    one_window = started // WINDOW == time.time() // WINDOW
    statuses = [status for status, _ in answers]
    assert sorted(set(statuses)) == [200, 429]
    assert statuses.count(200) == 5 if one_window else statuses.count(200) <= 10
    for status, retry_after in answers:
        if status == 429:
            assert_retry_after(retry_after)
    assert len(upstream.requests) == statuses.count(200)
    lines = await gateway.wait_for_event("request", count=40)
    assert len({line["pid"] for line in lines}) > 1, "one worker served all"
    refused = [line for line in lines if line["status"] == 429]
    assert {line["reason"] for line in refused} == {"token_rate_limit"}


async def away_from_a_window_end(margin: float = 3.0) -> None:
    """Wait out the last ``margin`` seconds of a window, so that the requests
    that follow fall into one window and the count is exact."""
    left = WINDOW - time.time() % WINDOW
    if left < margin:
        await asyncio.sleep(left + 0.05)


async def test_failed_auth_is_throttled_per_client_ip(
    sqlite_url, gateways, client, upstream
):
    admin = StoreAdmin(sqlite_url)
    try:
        _, token = await admin.token("alice")
    finally:
        await admin.close()
    gateway = await gateways.start(
        gateway_yaml(
            sqlite_url,
            route_yaml("api", "/api/", upstream.url),
            "trusted_proxies: [127.0.0.1/32]\nlimits: {failed_auth_per_minute: 3}",
        )
    )
    attacker, bystander = "203.0.113.7", "198.51.100.9"
    for _ in range(3):
        assert (await call(client, gateway, "pgt_guess", attacker))[0] == 401
    status, retry_after = await call(client, gateway, "pgt_guess", attacker)
    assert status == 429
    assert_retry_after(retry_after)
    # Throttled means throttled: a good token from that IP waits too.
    status, retry_after = await call(client, gateway, token, attacker)
    assert status == 429
    assert_retry_after(retry_after)
    # Another client is not punished for it.
    assert (await call(client, gateway, token, bystander))[0] == 200
    assert (await call(client, gateway, "pgt_guess", bystander))[0] == 401
    assert len(upstream.requests) == 1
    lines = await gateway.wait_for_event("request", count=7)  # written in batches
    throttled = [line for line in lines if line["status"] == 429]
    assert [line["reason"] for line in throttled] == ["auth_throttled"] * 2


async def raw_request(gateway: GatewayProcess, head: bytes) -> bytes:
    """Send ``head`` as is; the first line of the answer."""
    host, _, port = gateway.host.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head)
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), timeout=5)
    finally:
        writer.close()


def status_of(line: bytes) -> int:
    version, status, *_ = line.split(b" ", 2)
    assert version in (b"HTTP/1.0", b"HTTP/1.1"), line
    return int(status)


@pytest.mark.parametrize(
    ("what", "head"),
    [
        (
            "header",
            b"GET /api/x HTTP/1.1\r\nHost: gw\r\nX-Big: " + b"a" * 4000 + b"\r\n\r\n",
        ),
        (
            "credential",
            b"GET /api/x HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer pgt_"
            + b"b" * 4000
            + b"\r\n\r\n",
        ),
        ("url", b"GET /api/" + b"c" * 3000 + b" HTTP/1.1\r\nHost: gw\r\n\r\n"),
        (
            "query",
            b"GET /api/x?access_token="
            + b"d" * 3000
            + b" HTTP/1.1\r\nHost: gw\r\n\r\n",
        ),
    ],
)
async def test_oversized_requests_are_refused_quietly(
    what, head, sqlite_url, gateways, client, upstream
):
    admin = StoreAdmin(sqlite_url)
    try:
        _, token = await admin.token("alice")
    finally:
        await admin.close()
    gateway = await gateways.start(
        gateway_yaml(
            sqlite_url,
            route_yaml("api", "/api/", upstream.url),
            "limits: {max_header_bytes: 2048, max_url_bytes: 1024}",
        )
    )
    status = status_of(await raw_request(gateway, head))
    print(f"oversized {what}: {status}")
    assert 400 <= status < 500
    assert upstream.requests == []
    # Still serving; and the log is clean JSON without a traceback.
    assert (await call(client, gateway, token))[0] == 200
    await gateway.wait_for_event("request", count=1)
    stderr = gateway.stderr()
    assert "Traceback" not in stderr
    assert all(line["level"] in ("info", "warning") for line in gateway.logs())
    assert "dddd" not in stderr
    assert "bbbb" not in stderr


# limits.max_body_bytes


async def body_limited_gateway(make_gateway, sqlite_url, upstream):
    routes = (
        "  - name: files\n"
        "    prefix: /files/\n"
        f"    upstream: {upstream.url}\n"
        "    error_style: result\n"
    )
    return await make_gateway(
        sqlite_url, routes, extra="limits: {max_body_bytes: 1000}"
    )


async def test_a_body_announced_over_the_limit_is_413_before_any_token_check(
    make_gateway, sqlite_url, upstream, client
):
    gateway = await body_limited_gateway(make_gateway, sqlite_url, upstream)
    token = await gateway.token()
    for headers in ({}, {"Authorization": f"Bearer {token}"}):
        async with client.put(
            gateway.url + "/files/big", data=b"x" * 1001, headers=headers
        ) as response:
            assert response.status == 413
            assert (await response.json())["result"] == 704
    async with client.put(
        gateway.url + "/files/small",
        data=b"x" * 1000,
        headers={"Authorization": f"Bearer {token}"},
    ) as response:
        assert response.status == 200
    assert [r.raw_path for r in upstream.requests] == ["/files/small"]


async def test_a_chunked_body_over_the_limit_is_cut(
    make_gateway, sqlite_url, upstream, client
):
    gateway = await body_limited_gateway(make_gateway, sqlite_url, upstream)
    token = await gateway.token()

    async def chunks(count: int):
        for _ in range(count):
            yield b"y" * 300
            await asyncio.sleep(0)

    headers = {"Authorization": f"Bearer {token}"}
    async with client.put(
        gateway.url + "/files/streamed", data=chunks(3), headers=headers
    ) as response:
        assert response.status == 200  # 900 bytes: within the limit
    assert upstream.last.body_size == 900
    try:
        async with client.put(
            gateway.url + "/files/over", data=chunks(10), headers=headers
        ) as response:
            assert response.status == 413
    except aiohttp.ClientError:
        pass  # the gateway may close the connection while the body still flows
    assert all(
        r.raw_path != "/files/over" or r.body_size <= 1000 for r in upstream.requests
    )
