"""``patgate serve`` as an operator runs it: signals, reloads, workers.

SIGTERM drains (in-flight requests and uploads finish, new connections are
refused, exit 0); SIGHUP reloads routes without dropping connections and
refuses a broken file with ``config_reload_failed``; ``workers: 2`` spreads
connections over two processes that stop together.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.conftest import free_port
from tests.gateway_harness import RecordingUpstream, gateway_yaml, route_yaml
from tests.processes import GatewayProcess, StoreAdmin, poll, process_env, run_cli


@pytest.fixture
async def admin(sqlite_url: str) -> AsyncIterator[StoreAdmin]:
    admin = StoreAdmin(sqlite_url)
    try:
        yield admin
    finally:
        await admin.close()


@pytest.fixture
async def token(admin: StoreAdmin) -> str:
    _, value = await admin.token("alice")
    return value


def api_config(store_url: str, upstream: RecordingUpstream, *more_routes: str) -> str:
    routes = route_yaml("api", "/api/", upstream.url) + "".join(more_routes)
    return gateway_yaml(store_url, routes)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def get_status(client: aiohttp.ClientSession, url: str, token: str) -> int:
    async with client.get(url, headers=bearer(token)) as response:
        await response.read()
        return response.status


def refuses_connections(gateway: GatewayProcess) -> bool:
    host, _, port = gateway.host.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


async def arrived(upstream: RecordingUpstream, path: str) -> bool:
    return any(r.raw_path.startswith(path) for r in upstream.requests)


async def test_sigterm_right_after_listening_is_a_clean_stop(gateways, sqlite_url):
    gateway = await gateways.start(
        gateway_yaml(sqlite_url, route_yaml("a", "/a/", "http://127.0.0.1:9"))
    )
    gateway.send(signal.SIGTERM)
    assert await gateway.wait() == 0
    assert [e["event"] for e in gateway.logs()][-2:] == [
        "gateway_draining",
        "gateway_stopped",
    ]


async def test_sigterm_drains_an_in_flight_request(
    gateways, sqlite_url, upstream, client, token
):
    gateway = await gateways.start(api_config(sqlite_url, upstream))
    slow = asyncio.create_task(
        get_status(client, gateway.url + "/api/slow?delay=1.5", token)
    )
    # The upstream has the request only after its delay; wait for the gateway
    # to be forwarding it instead: its connection to us is then open.
    await asyncio.sleep(0.3)
    assert not slow.done()
    gateway.send(signal.SIGTERM)
    await poll(lambda: refuses_connections(gateway), what="the port to close")
    assert not slow.done(), "the in-flight request was cut"
    assert await slow == 200
    assert await gateway.wait() == 0
    assert upstream.last.raw_path == "/api/slow?delay=1.5"


async def test_sigterm_lets_a_slow_upload_finish(
    gateways, sqlite_url, upstream, client, token
):
    gateway = await gateways.start(api_config(sqlite_url, upstream))
    halfway = asyncio.Event()
    chunk = b"u" * 65536

    async def body() -> AsyncIterator[bytes]:
        for number in range(12):
            if number == 4:
                halfway.set()
            yield chunk
            await asyncio.sleep(0.05)

    async def upload() -> int:
        async with client.put(
            gateway.url + "/api/upload", data=body(), headers=bearer(token)
        ) as response:
            return response.status

    sending = asyncio.create_task(upload())
    await halfway.wait()
    gateway.send(signal.SIGTERM)
    assert await sending == 200
    assert upstream.last.body_size == 12 * len(chunk)
    assert await gateway.wait() == 0


async def test_sighup_adds_a_route_without_dropping_connections(
    gateways, sqlite_url, upstream, client, token
):
    gateway = await gateways.start(api_config(sqlite_url, upstream))
    assert await get_status(client, gateway.url + "/more/x", token) == 404
    in_flight = asyncio.create_task(
        get_status(client, gateway.url + "/api/slow?delay=1", token)
    )
    await asyncio.sleep(0.2)
    gateway.write_config(
        api_config(sqlite_url, upstream, route_yaml("more", "/more/", upstream.url))
    )
    gateway.send(signal.SIGHUP)
    reloaded = await gateway.wait_for_event("config_reloaded")
    assert reloaded[0]["routes"] == 2
    assert await get_status(client, gateway.url + "/more/x", token) == 200
    assert await in_flight == 200
    assert gateway.returncode is None


async def test_broken_config_on_reload_keeps_the_old_routes(
    gateways, sqlite_url, upstream, client, token
):
    gateway = await gateways.start(api_config(sqlite_url, upstream))
    gateway.write_config(
        "routes:\n  - name: api\n    prefix: /api/\n    upstream: nowhere\n"
    )
    gateway.send(signal.SIGHUP)
    (failed,) = await gateway.wait_for_event("config_reload_failed")
    assert failed["level"] == "error"
    assert str(gateway.config_path) in failed["error"]
    assert "routes[0] (api)" in failed["error"]
    assert "upstream" in failed["error"]
    assert await get_status(client, gateway.url + "/api/x", token) == 200
    assert gateway.returncode is None
    # Fixed again, the next SIGHUP takes it.
    gateway.write_config(
        api_config(sqlite_url, upstream, route_yaml("more", "/more/", upstream.url))
    )
    gateway.send(signal.SIGHUP)
    await gateway.wait_for_event("config_reloaded")
    assert await get_status(client, gateway.url + "/more/x", token) == 200


async def test_two_workers_share_the_port_and_stop_together(
    gateways, sqlite_url, upstream, token
):
    gateway = await gateways.start(
        api_config(sqlite_url, upstream), args=["--workers", "2"]
    )
    assert "2 workers" in gateway.stdout()
    started = {e["pid"] for e in gateway.events("gateway_started")}
    assert len(started) == 2
    assert gateway.pid not in started
    # One connection per request, so the kernel picks a worker each time.
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as client:
        for _ in range(40):
            assert await get_status(client, gateway.url + "/api/x", token) == 200
    await gateway.wait_for_event("request", count=40)
    served = {e["pid"] for e in gateway.events("request")}
    assert served == started
    gateway.send(signal.SIGTERM)
    assert await gateway.wait() == 0
    assert len(gateway.events("gateway_stopped")) == 2
    for pid in started:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_sighup_reaches_every_worker(gateways, sqlite_url, upstream, token):
    gateway = await gateways.start(
        api_config(sqlite_url, upstream), args=["--workers", "2"]
    )
    gateway.write_config(
        api_config(sqlite_url, upstream, route_yaml("more", "/more/", upstream.url))
    )
    gateway.send(signal.SIGHUP)
    await gateway.wait_for_event("config_reloaded", count=2)
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as client:
        for _ in range(10):
            assert await get_status(client, gateway.url + "/more/x", token) == 200


async def test_a_dead_worker_stops_the_gateway(gateways, sqlite_url, upstream):
    gateway = await gateways.start(
        api_config(sqlite_url, upstream), args=["--workers", "2"]
    )
    victim, survivor = sorted(e["pid"] for e in gateway.events("gateway_started"))
    os.kill(victim, signal.SIGKILL)
    assert await gateway.wait() == 1
    (died,) = gateway.events("worker_died")
    assert died["pid"] == victim
    with pytest.raises(ProcessLookupError):
        os.kill(survivor, 0)


async def test_port_in_use_is_one_clear_error(tmp_path, sqlite_url):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        gateway = GatewayProcess(
            tmp_path / "gw",
            gateway_yaml(sqlite_url, route_yaml("a", "/a/", "http://127.0.0.1:9")),
            args=["--listen", f"127.0.0.1:{port}"],
            env=process_env(),
        )
        with pytest.raises(AssertionError, match="exited with 1"):
            await gateway.start()
    assert gateway.stderr().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


async def test_sigterm_closes_websockets_at_once(
    gateways, sqlite_url, upstream, client, token
):
    gateway = await gateways.start(api_config(sqlite_url, upstream))
    async with client.ws_connect(gateway.url + "/api/ws", headers=bearer(token)) as ws:
        await ws.send_str("hi")
        assert await ws.receive_str(timeout=5) == "echo:hi"
        gateway.send(signal.SIGTERM)
        message = await ws.receive(timeout=5)
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert await gateway.wait(within=5) == 0
    access = [(line["path"], line["status"]) for line in gateway.events("request")]
    assert access == [("/api/ws", 101)]


async def test_healthcheck_command_asks_the_configured_port(gateways, sqlite_url):
    """``patgate healthcheck`` (the container's HEALTHCHECK) reads the config."""
    port = free_port()
    config = gateway_yaml(sqlite_url, route_yaml("api", "/api/", "http://127.0.0.1:9"))
    config = config.replace("listen: 127.0.0.1:0", f"listen: 0.0.0.0:{port}")
    gateway = await gateways.start(config)
    healthy = run_cli(gateway.directory, "healthcheck")
    assert (healthy.returncode, healthy.stdout, healthy.stderr) == (0, "", "")
    await gateway.stop()
    sick = run_cli(gateway.directory, "healthcheck", "--timeout", "1")
    assert sick.returncode == 1
    (line,) = sick.stderr.splitlines()
    assert line.startswith(
        f"error: unhealthy: http://127.0.0.1:{port}/_patgate/healthz"
    )


async def test_the_decision_listener_serves_in_every_worker_and_stops(
    gateways, sqlite_url, upstream, token
):
    """forward_auth.listen under `serve`: uvloop, two workers, SIGTERM."""
    port = free_port()
    gateway = await gateways.start(
        decisions_config(sqlite_url, upstream, port), args=["--workers", "2"]
    )
    url = f"http://127.0.0.1:{port}/_patgate/auth"
    assert f"patgate serves the decision endpoint on {url}" in gateway.stdout()
    asked = {"X-Original-Method": "GET", "X-Original-URI": "/api/x"}
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as client:
        for _ in range(20):
            async with client.get(url, headers={**asked, **bearer(token)}) as answer:
                assert answer.status == 200
            async with client.get(url, headers=asked) as answer:
                assert answer.status == 401
        # The main listener no longer answers there.
        async with client.get(gateway.url + "/_patgate/auth", headers=asked) as answer:
            assert answer.status == 404
    await gateway.wait_for_event("request", count=40)
    lines = [e for e in gateway.events("request") if e["path"] == "/api/x"]
    assert {e["status"] for e in lines} == {200, 401}
    assert len({e["pid"] for e in lines}) == 2  # both workers decided
    gateway.send(signal.SIGTERM)
    assert await gateway.wait() == 0
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


def decisions_config(
    store_url: str, upstream: RecordingUpstream, port: int, *more_routes: str
) -> str:
    return api_config(store_url, upstream, *more_routes).replace(
        "routes:",
        "trusted_proxies: [127.0.0.1/32]\n"
        f"forward_auth: {{listen: 127.0.0.1:{port}}}\nroutes:",
    )


async def test_sighup_reaches_the_decision_listener(
    gateways, sqlite_url, upstream, client, token
):
    port = free_port()
    gateway = await gateways.start(decisions_config(sqlite_url, upstream, port))
    url = f"http://127.0.0.1:{port}/_patgate/auth"
    asked = {"X-Original-Method": "GET", "X-Original-URI": "/more/x", **bearer(token)}
    async with client.get(url, headers=asked) as answer:
        assert answer.status == 404
    more = route_yaml("more", "/more/", upstream.url)
    gateway.write_config(decisions_config(sqlite_url, upstream, port, more))
    gateway.send(signal.SIGHUP)
    await gateway.wait_for_event("config_reloaded")
    async with client.get(url, headers=asked) as answer:
        assert answer.status == 200
        assert answer.headers["X-Patgate-Uri"] == "/more/x"
