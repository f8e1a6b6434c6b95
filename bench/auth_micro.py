"""Micro-benchmark: the in-process auth decision on a cache hit.

Times what the gateway does per request before forwarding, on a token
already in the cache: ``Gate.check`` from the request's facts (Host and query
checks, canonical path, route, client, Bearer credential, parse and checksum,
hash with the pepper, cache, decide, note usage, query stripping) to its
verdict. The store is a real SQLite file; after the first request it is not
touched.

    .venv/bin/python bench/auth_micro.py [--n 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

from multidict import CIMultiDict, CIMultiDictProxy

from patgate.cache import GrantCache
from patgate.config import parse_config
from patgate.gate import Gate, RequestFacts, Rules
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
        rules = Rules.from_config(config)
        headers = CIMultiDictProxy(
            CIMultiDict(
                {
                    "Host": "127.0.0.1:8080",
                    "Authorization": f"Bearer {value}",
                    "Accept": "*/*",
                    "User-Agent": "wrk",
                }
            )
        )

        async def one() -> None:
            facts = RequestFacts(
                "GET", "/api/v1/items/42", headers, "127.0.0.1", "http"
            )
            verdict = await gate.check(facts, rules)
            assert verdict.allowed

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
        f"Gate.check on a cache hit, {args.n} requests in batches of"
        f" {args.batch}: median {statistics.median(samples):.2f} us,"
        f" p10 {samples[len(samples) // 10]:.2f} us,"
        f" p90 {samples[len(samples) * 9 // 10]:.2f} us"
    )


if __name__ == "__main__":
    main()
