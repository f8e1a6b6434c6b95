"""Stolen store: what the store holds must not be usable as a token.

SPEC §1 "Storage": never the value; ``sha256(pepper || value)``, compared in
constant time (§8 "Weak hashing or comparison"). Stopped in
``patgate.tokens.hash_token`` / ``hashes_match`` and the stores, which only
ever receive the hash. A dump of either store (the SQLite file, every Redis
key) is searched for each value and its secret part, and a gateway with
another pepper in front of the same store must refuse every token.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from patgate.web.gateway.sync import flush_usage
from tests.conftest import RedisServer
from tests.gateway_harness import ADMIN, Gateway, RecordingUpstream
from tests.security.conftest import ROUTES, StartGateway, bearer, send_raw
from tests.security.conftest import request as http_request


def sqlite_dump(store_url: str) -> bytes:
    path = Path(store_url.removeprefix("sqlite:///"))
    return b"".join(
        candidate.read_bytes()
        for candidate in path.parent.iterdir()
        if candidate.name.startswith(path.name)
    )


def redis_dump(server: RedisServer, store_url: str) -> bytes:
    db = int(urlsplit(store_url).path.strip("/") or 0)
    parts: list[str] = []
    with server.client_sync(db) as client:
        for key in client.scan_iter():
            parts.append(key)
            kind = client.type(key)
            if kind == "hash":
                parts.extend(f"{k}={v}" for k, v in client.hgetall(key).items())
            elif kind == "set":
                parts.extend(client.smembers(key))
            elif kind == "string":
                parts.append(str(client.get(key)))
            elif kind == "list":
                parts.extend(client.lrange(key, 0, -1))
            elif kind == "zset":
                parts.extend(client.zrange(key, 0, -1))
    return "\n".join(parts).encode("utf-8", "replace")


async def test_store_holds_no_token_value(
    make_gateway: StartGateway,
    upstream: RecordingUpstream,
    store_url: str,
    request: pytest.FixtureRequest,
) -> None:
    gateway: Gateway = await make_gateway(
        store_url, ROUTES.format(upstream=upstream.url)
    )
    values = [await gateway.token("alice") for _ in range(3)]
    regenerated = await gateway.service.regenerate_token(ADMIN, values[0][4:12])
    values.append(regenerated[1])
    for value in values[1:]:
        (response,) = await send_raw(gateway, http_request("/api/x", bearer(value)))
        assert response.status == 200
    await flush_usage(gateway.app)  # the coalesced usage writes land too
    if store_url.startswith("redis"):
        server = request.getfixturevalue("redis_server")
        dump = await asyncio.to_thread(redis_dump, server, store_url)
    else:
        dump = await asyncio.to_thread(sqlite_dump, store_url)
    assert values[1][4:12].encode() in dump  # the dump is the real thing
    for value in values:
        assert value.encode() not in dump
        assert value[12:44].encode() not in dump  # the secret part


async def test_token_is_worthless_behind_another_pepper(
    make_gateway: StartGateway, upstream: RecordingUpstream, sqlite_url: str
) -> None:
    routes = ROUTES.format(upstream=upstream.url)
    first = await make_gateway(sqlite_url, routes, env={"PATGATE_PEPPER": "one"})
    token = await first.token("alice")
    (response,) = await send_raw(first, http_request("/api/x", bearer(token)))
    assert response.status == 200
    second = await make_gateway(sqlite_url, routes, env={"PATGATE_PEPPER": "two"})
    (response,) = await send_raw(second, http_request("/api/x", bearer(token)))
    assert response.status == 401
    assert len(upstream.requests) == 1
