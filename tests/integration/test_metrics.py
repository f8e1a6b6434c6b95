"""Operations and accounting on a real ``patgate serve`` (SPEC §3 "Operations").

- ``/_patgate/healthz`` is 200 whenever the process runs; ``/_patgate/readyz``
  is 200 only while the store answers.
- ``/_patgate/metrics`` is Prometheus text: requests by route and outcome,
  the auth latency histogram, cache hits and misses, store errors; each
  counter moves by what the requests made should move it.
- stderr holds JSON lines only, exactly one ``request`` line per request,
  with the token id and never the token value or the query string.
- Usage is counted (``token show --json``: use_count, last_used_at,
  last_used_ip) with coalesced writes, and a sliding token's expiry moves.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime

import aiohttp
import redis
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from tests.gateway_harness import RecordingUpstream, gateway_yaml, route_yaml
from tests.processes import GatewayProcess, StoreAdmin, poll, run_cli

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def api_config(store_url: str, upstream: RecordingUpstream, extra: str = "") -> str:
    routes = route_yaml(
        "api", "/api/", upstream.url, "methods: {GET: api:read, '*': api:write}"
    ) + route_yaml("public", "/public/", upstream.url, "auth: none")
    return gateway_yaml(store_url, routes, extra)


async def new_token(store_url: str, **kwargs: object) -> tuple[str, str]:
    admin = StoreAdmin(store_url)
    try:
        return await admin.token("alice", **kwargs)
    finally:
        await admin.close()


async def fetch(
    client: aiohttp.ClientSession,
    url: str | URL,
    token: str | None = None,
    method: str = "GET",
) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with client.request(method, url, headers=headers) as response:
        await response.read()
        return response.status


async def scrape(client: aiohttp.ClientSession, gateway: GatewayProcess) -> Samples:
    async with client.get(gateway.url + "/_patgate/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def test_health_and_readiness(tmp_path, sqlite_url, gateways, client, upstream):
    ready = await gateways.start(api_config(sqlite_url, upstream))
    not_ready = await gateways.start(
        api_config(f"sqlite:///{tmp_path}/missing/patgate.db", upstream)
    )
    for gateway in (ready, not_ready):
        async with client.get(gateway.url + "/_patgate/healthz") as response:
            assert response.status == 200
            assert await response.json() == {"status": "ok"}
    async with client.get(ready.url + "/_patgate/readyz") as response:
        assert response.status == 200
        assert (await response.json())["status"] == "ready"
    async with client.get(not_ready.url + "/_patgate/readyz") as response:
        assert response.status == 503
        assert (await response.json())["status"] == "unavailable"


async def test_metrics_count_what_happened(store_url, gateways, client, upstream):
    _, reader = await new_token(store_url, scopes=["api:read"])
    gateway = await gateways.start(api_config(store_url, upstream))
    url = gateway.url + "/api/x"
    before = await scrape(client, gateway)

    assert await fetch(client, url, reader) == 200  # a miss, then cached
    assert await fetch(client, url, reader) == 200  # a hit
    assert await fetch(client, url, reader) == 200  # a hit
    assert await fetch(client, url, reader, "POST") == 403  # a hit, refused
    assert await fetch(client, url, "pgt_malformed") == 401  # never looked up
    assert await fetch(client, url) == 401  # no credential
    assert await fetch(client, gateway.url + "/public/x") == 200
    assert await fetch(client, gateway.url + "/nowhere") == 404
    after = await scrape(client, gateway)

    requests = "patgate_requests_total"
    assert moved(before, after, requests, route="api", outcome="allowed") == 3
    assert moved(before, after, requests, route="api", outcome="forbidden") == 1
    assert moved(before, after, requests, route="api", outcome="unauthorized") == 2
    assert moved(before, after, requests, route="public", outcome="allowed") == 1
    assert moved(before, after, requests, route="", outcome="no_route") == 1
    # Every authorised request is timed, each in a bucket (how fast is the
    # bench's business: a busy test machine can take 100 ms for one).
    assert moved(before, after, "patgate_auth_seconds_count") == 6
    assert moved(before, after, "patgate_auth_seconds_bucket", le="+Inf") == 6
    assert moved(before, after, "patgate_cache_misses_total") == 1
    assert moved(before, after, "patgate_cache_hits_total") == 3
    assert value(after, "patgate_cache_entries") == 1
    assert moved(before, after, "patgate_store_errors_total") == 0


async def test_metrics_count_store_errors(tmp_path, gateways, client, upstream):
    # The token is real, the gateway's store cannot be opened: 503, counted.
    _, token = await new_token(f"sqlite:///{tmp_path}/real.db")
    gateway = await gateways.start(
        api_config(f"sqlite:///{tmp_path}/missing/patgate.db", upstream)
    )
    before = await scrape(client, gateway)
    for _ in range(3):
        assert await fetch(client, gateway.url + "/api/x", token) == 503
    after = await scrape(client, gateway)
    assert moved(before, after, "patgate_store_errors_total") == 3
    assert (
        moved(
            before, after, "patgate_requests_total", route="api", outcome="unavailable"
        )
        == 3
    )


async def test_one_json_access_line_per_request(sqlite_url, gateways, client, upstream):
    token_id, token = await new_token(sqlite_url, scopes=["api:read"])
    gateway = await gateways.start(api_config(sqlite_url, upstream))
    base = gateway.url
    sent = [
        (URL(f"{base}/api/one?keep=visible-1", encoded=True), token, 200),
        (URL(f"{base}/api/two?access_token={token}&keep=2", encoded=True), None, 200),
        (URL(f"{base}/api/three?session={token}", encoded=True), None, 200),
        (URL(f"{base}/api/four", encoded=True), token + "x", 401),
        (URL(f"{base}/api/five", encoded=True), None, 401),
        (URL(f"{base}/public/six?q=7", encoded=True), None, 200),
        (URL(f"{base}/nowhere?x=8", encoded=True), None, 404),
        (URL(f"{base}/_patgate/healthz", encoded=True), None, 200),
    ]
    for url, bearer, expected in sent:
        assert await fetch(client, url, bearer) == expected
    assert await gateway.stop() == 0

    lines = gateway.logs()  # every stderr line parses as JSON
    access = [line for line in lines if line["event"] == "request"]
    assert len(access) == len(sent)
    assert [line["path"] for line in access] == [
        "/api/one",
        "/api/two",
        "/api/three",
        "/api/four",
        "/api/five",
        "/public/six",
        "/nowhere",
        "/_patgate/healthz",
    ]
    assert [line["status"] for line in access] == [s for _, _, s in sent]
    assert [line["token_id"] for line in access[:3]] == [token_id] * 3
    assert all(line["user"] == "alice" for line in access[:3])
    assert access[3]["token_id"] is None  # a wrong value names no token
    for line in access:
        assert {"method", "route", "client", "duration_ms", "timestamp"} <= set(line)
        assert line["logger"] == "patgate.access"
    stderr = gateway.stderr()
    assert token not in stderr
    assert token[4:] not in stderr  # not even without its prefix
    for query in ("keep=", "access_token", "session=", "q=7", "x=8"):
        assert query not in stderr


async def token_json(directory, token_id: str) -> dict[str, object]:
    shown = await asyncio.to_thread(
        run_cli, directory, "token", "show", token_id, "--json"
    )
    assert shown.returncode == 0, shown.stderr
    data: dict[str, object] = json.loads(shown.stdout)
    return data


async def test_usage_shows_in_token_show(store_url, gateways, client, upstream):
    token_id, token = await new_token(store_url)
    gateway = await gateways.start(
        api_config(store_url, upstream, "usage_flush_interval: 0.2")
    )
    started = time.time()
    for _ in range(5):
        assert await fetch(client, gateway.url + "/api/x", token) == 200

    async def counted() -> dict[str, object] | None:
        shown = await token_json(gateway.directory, token_id)
        return shown if shown["use_count"] == 5 else None

    shown = await poll(counted, within=5, interval=0.1, what="use_count 5")
    assert shown["last_used_ip"] == "127.0.0.1"
    assert isinstance(shown["last_used_at"], str)
    last_used = datetime.fromisoformat(shown["last_used_at"]).timestamp()
    assert started - 1 <= last_used <= time.time() + 1
    assert "token" not in shown


async def test_usage_writes_are_coalesced(redis_server, redis_url, gateways, upstream):
    """Many uses of a token within a flush are one store write."""
    token_id, token = await new_token(redis_url)
    gateway = await gateways.start(
        api_config(redis_url, upstream, "usage_flush_interval: 1")
    )

    def usage_writes() -> int:
        # HINCRBY runs only in the usage script: once per token per flush.
        with redis.Redis(port=redis_server.port) as plain:
            stats = plain.info("commandstats").get("cmdstat_hincrby", {})
        return int(stats.get("calls", 0))

    writes_before = usage_writes()
    connector = aiohttp.TCPConnector(limit=10)
    async with aiohttp.ClientSession(connector=connector) as client:
        for _ in range(30):
            assert await fetch(client, gateway.url + "/api/x", token) == 200
    admin = StoreAdmin(redis_url)
    try:

        async def counted() -> int | None:
            uses = (await admin.get(token_id)).use_count
            return uses if uses == 30 else None

        await poll(counted, within=5, interval=0.05, what="use_count 30")
    finally:
        await admin.close()
    writes = usage_writes() - writes_before
    print(f"30 uses, {writes} usage write(s)")
    assert 1 <= writes <= 2  # two if the uses straddled a flush


async def test_sliding_token_expiry_moves_in_the_store(
    store_url, gateways, client, upstream
):
    admin = StoreAdmin(store_url)
    try:
        await admin.user("alice")
    finally:
        await admin.close()
    gateway = await gateways.start(
        api_config(store_url, upstream, "usage_flush_interval: 0.2")
    )
    made = await asyncio.to_thread(
        run_cli, gateway.directory, "token", "create", "-u", "alice", "-a", "1h",
        "--json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert created["expiry"] == "sliding"

    async def slid() -> dict[str, object] | None:
        # Expiries are shown to the second: use the token until one passes.
        assert await fetch(client, gateway.url + "/api/x", created["token"]) == 200
        shown = await token_json(gateway.directory, created["id"])
        return shown if shown["expires_at"] != created["expires_at"] else None

    shown = await poll(slid, within=6, interval=0.2, what="the expiry to move")
    assert str(shown["expires_at"]) > created["expires_at"]
    moved_to = datetime.fromisoformat(str(shown["expires_at"])).timestamp()
    assert abs(moved_to - (time.time() + 3600)) < 10


async def test_request_metrics_read_as_prometheus_clients_own_would(sqlite_url):
    """The hand-counted families render exactly like a Counter and a Histogram."""
    import re

    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from patgate.cache import GrantCache
    from patgate.gate import Gate
    from patgate.store import open_store
    from patgate.throttle import FailureThrottle
    from patgate.usage import UsageRecorder
    from patgate.web.ops.metrics import AUTH_BUCKETS, Metrics

    store = open_store(sqlite_url)
    try:
        cache = GrantCache(
            max_entries=10, ttl=1, negative_ttl=1, max_stale=1, clock=time.time
        )
        gate = Gate(
            store=store,
            cache=cache,
            usage=UsageRecorder(),
            throttle=FailureThrottle(10),
            prefix="pgt",
            pepper=b"p",
            clock=time.time,
        )
        ours = Metrics()
        ours.watch(gate, cache)
        reference = CollectorRegistry()
        requests = Counter(
            "patgate_requests",
            "Requests handled, by route and outcome.",
            ("route", "outcome"),
            registry=reference,
        )
        auth = Histogram(
            "patgate_auth_seconds",
            "Time spent authorising a request (extract to decision).",
            buckets=AUTH_BUCKETS,
            registry=reference,
        )
        # Bounds exactly, between, above the last; a request with no auth time.
        for route, outcome, seconds in [
            ("api", "allowed", 0.00001),
            ("api", "allowed", 0.00002),
            ("api", "unauthorized", 0.1),
            ("files", "allowed", 3.0),
            ("", "no_route", None),
        ]:
            ours.count(route, outcome, seconds)
            requests.labels(route, outcome).inc()
            if seconds is not None:
                auth.observe(seconds)
    finally:
        await store.close()

    def families(text: str) -> list[str]:
        wanted = ("patgate_requests", "patgate_auth_seconds")
        lines = [
            line for line in text.splitlines() if wanted[0] in line or wanted[1] in line
        ]
        # Creation times differ by the microseconds between the two counts.
        return [re.sub(r"(_created(\{[^}]*\})?) \S+$", r"\1 T", line) for line in lines]

    assert families(generate_latest(ours.registry).decode()) == families(
        generate_latest(reference).decode()
    )


async def test_every_scrape_of_a_two_worker_gateway_counts_every_worker(
    sqlite_url, gateways, upstream
):
    """One view of a multi-worker gateway: whichever worker answers a scrape."""
    _, token = await new_token(sqlite_url, scopes=["api:read"])
    gateway = await gateways.start(api_config(sqlite_url, upstream, "workers: 2"))
    served_by: set[str] = set()
    for _ in range(40):
        # A connection each: SO_REUSEPORT spreads them over both workers.
        async with aiohttp.ClientSession() as fresh:
            assert await fetch(fresh, gateway.url + "/api/x", token) == 200
            assert await fetch(fresh, gateway.url + "/api/nothing-here") == 401
    # Each worker writes its access lines within its flush delay (50 ms).
    lines = await gateway.wait_for_event("request", count=80, within=5.0)
    for line in lines:
        if line.get("path") == "/api/x":
            served_by.add(str(line["pid"]))
    assert len(served_by) == 2, "both workers should have served requests"
    await asyncio.sleep(1.5)  # each worker shares its counts once a second
    totals = []
    for _ in range(12):
        async with aiohttp.ClientSession() as fresh:
            samples = await scrape(fresh, gateway)
        totals.append(
            (
                value(
                    samples, "patgate_requests_total", route="api", outcome="allowed"
                ),
                value(
                    samples,
                    "patgate_requests_total",
                    route="api",
                    outcome="unauthorized",
                ),
                value(
                    samples, "patgate_responses_total", route="api", status_class="2xx"
                ),
                value(samples, "patgate_request_duration_seconds_count", route="api"),
                value(samples, "patgate_workers"),
            )
        )
    assert set(totals) == {(40.0, 40.0, 40.0, 80.0, 2.0)}, totals
    assert value(samples, "process_cpu_seconds_total") > 0
    assert value(samples, "process_resident_memory_bytes") > 0
