"""Incident response (issue 15) against a running gateway and a real store.

Revoke-before, ``list --expiring``, the last addresses, canaries, rotation
(activate-on-use, reuse of a rotated-away value) and webhooks: a real aiohttp
receiver on loopback that checks every signature, retries with back-off, and
two ``patgate serve`` processes on one Redis, the delivering one killed
mid-delivery, with exactly one successful delivery per event.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web

from patgate.config import parse_config
from patgate.errors import PermissionDeniedError, StoreUnavailableError
from patgate.events import WEBHOOK_LEASE
from patgate.models import TokenStatus
from patgate.service import Actor, TokenService
from patgate.store import open_store
from patgate.store.redis import lease_key
from patgate.tokens import new_token
from patgate.web.keys import SERVICE
from patgate.webhooks import Publisher, sign, url_for_log, verify_signature
from tests.conftest import RedisServer
from tests.gateway_harness import Gateway, RecordingUpstream, gateway_yaml, route_yaml
from tests.processes import PEPPER, ProcessGroup, poll, run_cli

ADMIN = Actor("admin", admin=True)
SECRET = "incident-webhook-secret-0123456789"


@dataclass
class Received:
    event: dict[str, Any]
    headers: dict[str, str]
    verified: bool
    answered: bool = True


@dataclass
class Receiver:
    """A webhook endpoint on loopback that verifies every signature.

    ``fail`` answers the first N requests with 500; ``stall`` holds the first
    request until ``release`` is set, then records whether its sender was
    still there to read the answer (``answered``).
    """

    fail: int = 0
    stall: bool = False
    got: list[Received] = field(default_factory=list)
    stalled: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""
    runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        verified = verify_signature(
            SECRET.encode(),
            request.headers.get("X-Patgate-Signature", ""),
            body,
            time.time(),
        )
        received = Received(json.loads(body), dict(request.headers), verified)
        self.got.append(received)
        if self.stall and len(self.got) == 1:
            self.stalled.set()
            await self.release.wait()
            transport = request.transport
            for _ in range(100):  # the killed sender's FIN arrives shortly
                if transport is None or transport.is_closing():
                    break
                await asyncio.sleep(0.02)
            received.answered = transport is not None and not transport.is_closing()
        if len(self.got) <= self.fail:
            received.answered = False
            return web.Response(status=500)
        return web.Response(status=204)

    def delivered(self, event_type: str | None = None) -> list[dict[str, Any]]:
        """The events answered 2xx to a sender that read the answer."""
        return [
            r.event
            for r in self.got
            if r.answered and (event_type is None or r.event["type"] == event_type)
        ]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    try:
        yield server
    finally:
        server.release.set()
        assert server.runner is not None
        await server.runner.cleanup()


def routes(upstream: RecordingUpstream) -> str:
    return route_yaml(
        "api", "/api/", upstream.url, "credentials: [bearer, query]"
    ) + route_yaml(
        "dav", "/dav/", upstream.url, "credentials: [basic]", "error_style: result"
    )


def hooks(receiver: Receiver, **delivery: str) -> str:
    options = {"poll": "0.1", "first_retry": "0.1", "lease": "2", "timeout": "1.5"}
    options.update(delivery)
    inner = ", ".join(f"{k}: {v}" for k, v in options.items())
    return (
        f"webhooks:\n  - {{url: {receiver.url}, secret: {SECRET}}}\n"
        f"webhook_delivery: {{{inner}}}\n"
        "usage_flush_interval: 0.1\n"
        "trusted_proxies: [127.0.0.1/32]\n"
    )


async def start(make_gateway, store_url, upstream, receiver, extra="") -> Gateway:
    gateway: Gateway = await make_gateway(
        store_url, routes(upstream), extra=hooks(receiver) + extra
    )
    await gateway.add_user("alice")
    await gateway.add_user("bob")
    return gateway


def service_of(gateway: Gateway) -> TokenService:
    """The app's service: its publisher knows the configured webhooks."""
    return gateway.app[SERVICE]


async def new_value(gateway: Gateway, owner: str = "alice", **kwargs: Any):
    return await service_of(gateway).create_token(ADMIN, owner, **kwargs)


async def answer(
    client: aiohttp.ClientSession,
    gateway: Gateway,
    value: str,
    how: str = "bearer",
    path: str = "/api/x",
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers (Date left out) and body, exactly as sent."""
    headers = {"User-Agent": "curl/8.0 (thief)"}
    url = f"{gateway.url}{path}"
    if how == "bearer":
        headers["Authorization"] = f"Bearer {value}"
    elif how == "basic":
        login = base64.b64encode(f"alice:{value}".encode()).decode()
        headers["Authorization"] = f"Basic {login}"
        url = f"{gateway.url}/dav/file.txt"
    else:
        url = f"{url}?access_token={value}&keep=1"
    async with client.get(url, headers=headers) as response:
        body = await response.read()
        raw = [(k.decode(), v.decode()) for k, v in response.raw_headers]
        return response.status, [(k, v) for k, v in raw if k != "Date"], body


def unknown_value() -> str:
    """A well-formed value (right checksum) of no token."""
    return new_token("pgt").value


async def status(client, gateway, value: str) -> int:
    return (await answer(client, gateway, value))[0]


async def refused_soon(client, gateway, value: str, within: float = 2.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await status(client, gateway, value) == 401:
            return True
        await asyncio.sleep(0.05)
    return False


# revoke everything before T


async def test_revoke_before_stops_older_tokens_and_reports_how_many(
    make_gateway, store_url, upstream, receiver, client, tmp_path: Path
):
    gateway = await start(make_gateway, store_url, upstream, receiver)
    _, old1 = await new_value(gateway)
    _, old2 = await new_value(gateway)
    _, bobs = await new_value(gateway, "bob")
    for value in (old1, old2, bobs):
        assert await status(client, gateway, value) == 200
    await asyncio.sleep(0.01)
    cut = time.time()
    _, newer = await new_value(gateway)

    (tmp_path / "cli").mkdir()
    (tmp_path / "cli" / "gateway.yaml").write_text(f"store: {store_url}\n")
    before = datetime.fromtimestamp(cut, UTC).isoformat()
    done = run_cli(
        tmp_path / "cli", "token", "revoke", "--user", "alice", "--before", before
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith(
        "revoked 2 tokens of alice created before"
    )

    for value in (old1, old2):
        assert await refused_soon(client, gateway, value)
    assert await status(client, gateway, newer) == 200
    assert await status(client, gateway, bobs) == 200
    # Everyone's, for admins, through the service the API calls.
    revoked = await service_of(gateway).revoke_before(ADMIN, time.time(), None)
    assert len(revoked) == 2
    assert await refused_soon(client, gateway, bobs)
    with pytest.raises(PermissionDeniedError, match="only an admin"):
        await service_of(gateway).revoke_before(Actor("alice"), time.time(), None)


async def test_list_expiring_shows_only_tokens_that_expire_soon(
    make_gateway, sqlite_url, upstream, receiver
):
    gateway = await start(make_gateway, sqlite_url, upstream, receiver)
    service = service_of(gateway)
    now = time.time()
    soon, _ = await new_value(gateway, expires_at=now + 3 * 86400)
    sooner, _ = await new_value(gateway, expires_at=now + 3600)
    await new_value(gateway, expires_at=now + 30 * 86400)
    await new_value(gateway)
    listed = await service.list_tokens(ADMIN, None, expiring=7 * 86400)
    assert [r.id for r in listed] == [sooner.id, soon.id]


# last addresses


async def test_the_last_five_addresses_with_first_and_last_seen(
    make_gateway, store_url, upstream, receiver, client
):
    gateway = await start(make_gateway, store_url, upstream, receiver)
    record, value = await new_value(gateway)
    headers = {"Authorization": f"Bearer {value}"}
    for ip in ("192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5",
               "192.0.2.6", "192.0.2.1"):  # fmt: skip
        async with client.get(
            f"{gateway.url}/api/x", headers={**headers, "X-Forwarded-For": ip}
        ) as response:
            assert response.status == 200

    async def shown() -> list[dict[str, Any]] | None:
        token = await service_of(gateway).get_token(ADMIN, record.id)
        public = token.to_public(time.time())["last_ips"]
        return public if len(public) == 5 and token.use_count == 7 else None

    last = await poll(shown, within=5, what="five addresses")
    assert [seen["ip"] for seen in last] == [
        "192.0.2.1", "192.0.2.6", "192.0.2.5", "192.0.2.4", "192.0.2.3"
    ]  # fmt: skip
    assert last[0]["first_seen"] <= last[0]["last_seen"]
    # The first use and each new address were news: events, once each.
    await poll(
        lambda: len(receiver.delivered("token.new_ip")) == 6 or None,
        within=5,
        what="new_ip events",
    )
    assert len(receiver.delivered("token.first_used")) == 1
    assert all(r.verified for r in receiver.got)


# canaries


async def test_a_canary_is_refused_byte_for_byte_like_an_unknown_token(
    make_gateway, store_url, upstream, receiver, client
):
    gateway = await start(make_gateway, store_url, upstream, receiver)
    record, canary = await new_value(gateway, canary=True)
    assert canary.startswith("pgt_")
    assert len(canary) == len(unknown_value())
    for how in ("bearer", "basic", "query"):
        unknown = await answer(client, gateway, unknown_value(), how)
        assert unknown[0] == 401
        # Twice: from the store, then from the cache.
        assert await answer(client, gateway, canary, how) == unknown
        assert await answer(client, gateway, canary, how) == unknown
    assert upstream.requests == []

    def six_uses() -> list[dict[str, Any]] | None:
        used = receiver.delivered("canary.used")
        return used if len(used) == 6 else None

    used = await poll(six_uses, within=5, what="canary events")
    (data,) = [e["data"] for e in used if e["data"]["path"] == "/api/x"][:1]
    assert data["token_id"] == record.id
    assert data["ip"] == "127.0.0.1"
    assert (data["method"], data["path"]) == ("GET", "/api/x")
    assert data["user_agent"] == "curl/8.0 (thief)"
    assert all(r.verified for r in receiver.got)
    assert all(canary not in json.dumps(r.event) for r in receiver.got)
    stored = await gateway.store.get_token(record.id)
    assert stored is not None
    assert stored.use_count == 0


# rotation


async def test_a_reused_rotated_value_revokes_the_family_like_an_unknown_token(
    make_gateway, store_url, upstream, receiver, client
):
    gateway = await start(make_gateway, store_url, upstream, receiver)
    service = service_of(gateway)
    record, first = await new_value(gateway)
    _, second = await service.regenerate_token(ADMIN, record.id)
    _, third = await service.regenerate_token(ADMIN, record.id, grace=3600)
    assert await status(client, gateway, third) == 200
    assert await status(client, gateway, second) == 200  # in its grace

    unknown = await answer(client, gateway, unknown_value())
    assert await answer(client, gateway, first) == unknown  # rotated away: reuse
    for value in (second, third):
        assert await refused_soon(client, gateway, value)
    stored = await gateway.store.get_token(record.id)
    assert stored is not None
    assert stored.status is TokenStatus.REVOKED

    await poll(
        lambda: receiver.delivered("token.revoked") or None, within=5, what="revoked"
    )
    (reuse,) = receiver.delivered("token.rotation_reuse")
    assert reuse["data"]["token_id"] == record.id
    assert reuse["data"]["action"] == "revoked"
    (revoked,) = receiver.delivered("token.revoked")
    assert revoked["data"]["reason"] == "rotation_reuse"


async def test_rotation_reuse_alert_only_reports(
    make_gateway, sqlite_url, upstream, receiver, client
):
    gateway = await start(
        make_gateway, sqlite_url, upstream, receiver, "rotation_reuse: alert\n"
    )
    record, first = await new_value(gateway)
    _, second = await service_of(gateway).regenerate_token(ADMIN, record.id)
    assert await status(client, gateway, first) == 401
    await poll(
        lambda: receiver.delivered("token.rotation_reuse") or None,
        within=5,
        what="reuse event",
    )
    assert receiver.delivered("token.rotation_reuse")[0]["data"]["action"] == "alert"
    assert await status(client, gateway, second) == 200


async def test_activate_on_use_keeps_the_old_value_until_the_new_one_is_used(
    make_gateway, store_url, upstream, receiver, client
):
    gateway = await start(
        make_gateway, store_url, upstream, receiver, "rotation_reuse: ignore\n"
    )
    record, old = await new_value(gateway)
    _, new = await service_of(gateway).regenerate_token(
        ADMIN, record.id, activate_on_use=True
    )
    for _ in range(3):
        assert await status(client, gateway, old) == 200
    assert await status(client, gateway, new) == 200
    assert await refused_soon(client, gateway, old)
    assert await status(client, gateway, new) == 200
    stored = await gateway.store.get_token(record.id)
    assert stored is not None
    assert (stored.activate_on_use, stored.previous_hash) == (False, None)


# webhooks


async def test_webhooks_are_signed_and_retried_with_back_off(
    make_gateway, sqlite_url, upstream, receiver, tmp_path: Path
):
    receiver.fail = 2
    gateway = await start(make_gateway, sqlite_url, upstream, receiver)
    record, _ = await new_value(gateway)
    await poll(lambda: receiver.delivered() or None, within=10, what="a delivery")
    assert [r.answered for r in receiver.got] == [False, False, True]
    assert all(r.verified for r in receiver.got)
    event = receiver.got[-1].event
    assert (event["type"], event["data"]["token_id"]) == ("token.created", record.id)
    assert receiver.got[-1].headers["X-Patgate-Event"] == "token.created"
    log = await service_of(gateway).delivery_log(ADMIN)
    assert [(a.attempt, a.ok, a.final) for a in log] == [
        (3, True, True), (2, False, False), (1, False, False)
    ]  # fmt: skip
    # Doubling: 0.1 s, then 0.2 s.
    assert log[0].at - log[1].at >= 0.19
    assert log[1].at - log[2].at >= 0.09

    (tmp_path / "gateway.yaml").write_text(f"store: {sqlite_url}\n")
    table = run_cli(tmp_path, "webhook", "deliveries")
    assert table.returncode == 0, table.stderr
    rows = table.stdout.splitlines()[1:]
    assert [row.split("  ")[-1].strip() for row in rows] == [
        "delivered (204)", "will retry: HTTP 500", "will retry: HTTP 500"
    ]  # fmt: skip
    as_json = json.loads(run_cli(tmp_path, "webhook", "deliveries", "--json").stdout)
    assert [a["ok"] for a in as_json] == [True, False, False]
    assert as_json[2]["error"] == "HTTP 500"


async def test_the_delivery_log_line_names_the_endpoint_by_its_origin_only(
    make_gateway, sqlite_url, upstream, receiver
):
    """A key in a webhook URL (user info, path, query) never reaches the log."""
    secret_url = receiver.url.replace("http://", "http://hook:pa55word@") + "?key=k3y"
    with structlog.testing.capture_logs() as logs:
        gateway: Gateway = await make_gateway(
            sqlite_url,
            routes(upstream),
            extra=hooks(receiver).replace(receiver.url, f"'{secret_url}'"),
        )
        await gateway.add_user("alice")
        await new_value(gateway)
        await poll(lambda: receiver.delivered() or None, within=10, what="a delivery")
        lines = await poll(
            lambda: [e for e in logs if e["event"] == "webhook_delivered"] or None,
            within=5,
            what="the delivery's log line",
        )
    port = receiver.url.split(":")[2].split("/")[0]
    assert lines[0]["url"] == f"http://127.0.0.1:{port}/..."
    text = repr(logs)
    for secret in ("pa55word", "k3y", "/hook"):
        assert secret not in text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://hooks.example.com/services/T0/B0/s3cret",
            "https://hooks.example.com/...",
        ),
        ("https://u:p@example.com:8443/h?token=t#f", "https://example.com:8443/..."),
        ("http://[::1]:9/h", "http://[::1]:9/..."),
        ("http://example.com:99999/h", "[unparsable URL]"),
        ("not a url", "[unparsable URL]"),
    ],
)
def test_url_for_log_keeps_only_scheme_host_and_port(url: str, shown: str) -> None:
    assert url_for_log(url) == shown


def test_a_forged_or_stale_signature_does_not_verify():
    body = b'{"id": "evt_1"}'
    now = time.time()
    header = sign(b"k" * 20, int(now), body)
    assert verify_signature(b"k" * 20, header, body, now)
    assert not verify_signature(b"k" * 20, header, body + b" ", now)
    assert not verify_signature(b"x" * 20, header, body, now)
    assert not verify_signature(b"k" * 20, header, body, now + 301)
    assert not verify_signature(b"k" * 20, "v1=abc", body, now)


@pytest.mark.parametrize(
    "header",
    ["t=1,v1=é", "t=²,v1=" + "a" * 64, "t=,v1=", "", "garbage", "t=1" + "0" * 30],
)
def test_a_malformed_signature_header_is_false_not_an_error(header: str) -> None:
    assert not verify_signature(b"k" * 20, header, b"{}", time.time())


async def test_the_delivering_replica_killed_mid_delivery_leaves_one_delivery_each(
    gateways: ProcessGroup,
    redis_server: RedisServer,
    redis_url: str,
    upstream: RecordingUpstream,
    receiver: Receiver,
):
    receiver.stall = True
    routes = route_yaml("api", "/api/", upstream.url)
    config = gateway_yaml(redis_url, routes, hooks(receiver))
    replicas = list(
        await asyncio.gather(gateways.start(config), gateways.start(config))
    )

    store = open_store(redis_url)
    try:
        parsed = parse_config(config, {"PATGATE_PEPPER": PEPPER}, ".")
        service = TokenService(
            store, pepper=PEPPER.encode(), publisher=Publisher(store, parsed.webhooks)
        )
        await service.add_user(ADMIN, "alice")
        created = [(await service.create_token(ADMIN, "alice"))[0].id for _ in range(3)]
        await asyncio.wait_for(receiver.stalled.wait(), 10)
        admin = redis_server.client_sync(int(redis_url.rsplit("/", 1)[1]))
        holder = admin.get(lease_key(WEBHOOK_LEASE))
        admin.close()
        pid = int(holder.split(":")[1])
        (delivering,) = [r for r in replicas if r.pid == pid]
        delivering.send(signal.SIGKILL)
        await delivering.wait()
        receiver.release.set()

        def every_event() -> bool | None:
            kinds = [e for e in receiver.delivered() if e["type"] == "token.created"]
            return True if len(kinds) >= 3 else None

        await poll(every_event, within=15, what="every event delivered")
        await asyncio.sleep(0.5)  # a duplicate would come now
        delivered = [e["data"]["token_id"] for e in receiver.delivered("token.created")]
        assert sorted(delivered) == sorted(created)  # each exactly once
        assert receiver.got[0].answered is False  # the killed one's
        assert all(r.verified for r in receiver.got)
        log = await store.delivery_log(100)
        ok = [a.event_id for a in log if a.ok]
        assert len(ok) == len(set(ok)) == 3
    finally:
        await store.close()


async def test_expiring_and_expired_events_fire_once_across_replicas(store_url):
    store = open_store(store_url)
    clock = [time.time()]
    hook = parse_config(
        f"webhooks: [{{url: 'http://127.0.0.1:9/h', secret: {SECRET}}}]", {}, "."
    ).webhooks
    replicas = [
        TokenService(store, clock=lambda: clock[0], publisher=Publisher(store, hook))
        for _ in range(2)
    ]
    try:
        await replicas[0].add_user(ADMIN, "alice")
        week = 7 * 86400
        record, _ = await replicas[0].create_token(
            ADMIN, "alice", expires_at=clock[0] + 10 * 86400
        )
        # A sliding token's expiry moves with use: no notice, only its end.
        await replicas[0].create_token(ADMIN, "alice", sliding=8 * 86400)
        leads = (week, 86400)
        seen: list[str] = []

        async def scan_all() -> None:
            for replica in replicas:
                await replica.scan_expiry(leads)
            due = await store.due_deliveries(clock[0] + 1, 100)
            seen[:] = [d.event_type for d in due]

        await scan_all()
        assert seen == ["token.created", "token.created"]
        clock[0] += 4 * 86400  # 6 days left: the 7-day notice
        await scan_all()
        await scan_all()
        assert seen == ["token.created", "token.created", "token.expiring"]
        clock[0] += 5.5 * 86400  # half a day left: the 1-day notice
        await scan_all()
        assert seen.count("token.expiring") == 2
        clock[0] += 86400  # expired
        await scan_all()
        await scan_all()
        assert seen.count("token.expired") == 2  # the sliding one too
        stored = await store.get_token(record.id)
        assert stored is not None
        assert stored.status is TokenStatus.EXPIRED
    finally:
        await store.close()


async def test_a_canary_alert_and_a_reuse_wait_out_a_store_outage(
    redis_server: RedisServer, redis_url: str
) -> None:
    """An incident's event is its only trace: with the outbox down, the
    service raises (the incident worker keeps it and retries), and once the
    store is back the event is queued and the reused token revoked."""
    store = open_store(redis_url)
    hook = parse_config(
        f"webhooks: [{{url: 'http://127.0.0.1:9/h', secret: {SECRET}}}]", {}, "."
    ).webhooks
    service = TokenService(store, publisher=Publisher(store, hook))
    try:
        await service.add_user(ADMIN, "alice")
        record, _ = await service.create_token(ADMIN, "alice")
        redis_server.stop()
        try:
            with pytest.raises(StoreUnavailableError):
                await service.canary_used(
                    record.id,
                    "alice",
                    ip="10.0.0.9",
                    method="GET",
                    path="/x",
                    user_agent=None,
                )
            with pytest.raises(StoreUnavailableError):
                await service.rotation_reused(record.id, "revoke", ip="10.0.0.9")
        finally:
            redis_server.start()
        await poll(lambda: _answers(store))
        # The test server keeps nothing across a restart: the token again.
        await service.add_user(ADMIN, "alice")
        record, _ = await service.create_token(ADMIN, "alice")
        await service.canary_used(
            record.id,
            "alice",
            ip="10.0.0.9",
            method="GET",
            path="/x",
            user_agent=None,
        )
        await service.rotation_reused(record.id, "revoke", ip="10.0.0.9")
        due = await store.due_deliveries(time.time() + 1, 100)
        types = [d.event_type for d in due]
        assert "canary.used" in types
        assert "token.rotation_reuse" in types
        stored = await store.get_token(record.id)
        assert stored is not None
        assert stored.status is TokenStatus.REVOKED
    finally:
        await store.close()


async def _answers(store: Any) -> bool:
    try:
        await store.get_user("nobody")
    except StoreUnavailableError:
        return False
    return True
