"""Micro-benchmark: the in-process auth decision on a cache hit.

Times what the gateway does per request before forwarding, on a token
already in the cache: canonicalise the path, match the route, extract the
Bearer credential, parse and checksum it, hash it with the pepper, look it up
in the cache, decide (hash compare, expiry, owner, scopes) and note usage.
The store is a real SQLite file; after the first request it is not touched.

    .venv/bin/python bench/auth_micro.py [--n 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

from patgate.cache import GrantCache
from patgate.config import parse_config
from patgate.extract import Credential, extract_credential
from patgate.gate import Gate, RequestView
from patgate.paths import normalise_path
from patgate.routing import Router
from patgate.service import Actor, TokenService
from patgate.store import open_store
from patgate.throttle import FailureThrottle
from patgate.usage import UsageRecorder

CONFIG = """
routes:
  - name: files
    prefix: /dav/
    upstream: http://127.0.0.1:1
    methods: {GET: files:read, "*": files:write}
  - name: api
    prefix: /api/
    upstream: http://127.0.0.1:1
    methods: {GET: api:read, "*": api:write}
"""


async def measure(n: int, batch: int) -> list[float]:
    config = parse_config(CONFIG, {"PATGATE_PEPPER": "bench-pepper"}, ".")
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{tmp}/bench.db")
        service = TokenService(store, pepper=config.pepper.value)
        admin = Actor("bench", admin=True)
        await service.add_user(admin, "bench", scopes=["api:*"])
        _, value = await service.create_token(admin, "bench", scopes=["api:read"])
        gate = Gate(
            store=store,
            cache=GrantCache(
                max_entries=100_000,
                ttl=3600,
                negative_ttl=5,
                max_stale=3600,
                clock=time.time,
            ),
            usage=UsageRecorder(),
            throttle=FailureThrottle(30),
            prefix=config.token_prefix,
            pepper=config.pepper.value,
            clock=time.time,
        )
        router = Router.from_config(config.routes)
        authorization = [f"Bearer {value}"]

        async def one() -> None:
            path = normalise_path("/api/v1/items/42")
            route = router.match("127.0.0.1:8080", path)
            assert route is not None
            conf = route.config
            credential = extract_credential(
                authorization, (), "", conf.credentials, conf.query_params
            )
            assert isinstance(credential, Credential)
            view = RequestView("GET", path, "127.0.0.1", credential)
            decision = await gate.authorize(route, view)
            assert decision.allowed

        await one()  # the one cache miss
        samples: list[float] = []
        clock = time.perf_counter_ns
        for _ in range(n // batch):
            started = clock()
            for _ in range(batch):
                await one()
            samples.append((clock() - started) / batch / 1000)
        await store.close()
        return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    samples = asyncio.run(measure(args.n, args.batch))
    samples.sort()
    print(
        f"auth decision on a cache hit, {args.n} requests in batches of"
        f" {args.batch}: median {statistics.median(samples):.2f} us,"
        f" p10 {samples[len(samples) // 10]:.2f} us,"
        f" p90 {samples[len(samples) * 9 // 10]:.2f} us"
    )


if __name__ == "__main__":
    main()
