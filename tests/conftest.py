"""Fixtures shared by every test: real stores on real servers.

- ``redis_server`` (session): our own ``redis-server`` on a free loopback port,
  never the machine's 6379. ``stop()``/``start()`` simulate an outage.
- ``redis_url`` / ``sqlite_url``: a clean store URL for one test.
- ``store_url`` (parametrised sqlite, redis) and ``store``: an open store for
  the contract suite and anything else that must work on both adapters.
"""

from __future__ import annotations

import atexit
import gc
import itertools
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
import redis

from patgate.store import Store, open_store
from tests.gateway_harness import (
    Gateway,
    RecordingUpstream,
    StartGateway,
    start_gateway,
)

if TYPE_CHECKING:
    from tests.processes import ProcessGroup

REDIS_START_TIMEOUT = 10.0


@pytest.fixture(autouse=True)
def _no_collector_pause_in_timing_tests(
    request: pytest.FixtureRequest,
) -> Iterator[None]:
    """A ``timing`` test measures the gateway, not this process's collector.

    With the whole suite collected, one full collection here takes about
    110 ms, and this process is the test's client and upstream: a collection
    during a 100 ms bound failed a revocation test once (both gateways
    "late" by the same 143 ms). Freezing what exists leaves the collector
    only the objects the test itself makes.
    """
    if request.node.get_closest_marker("timing") is None:
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def free_port() -> int:
    """A loopback TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A ``redis-server`` process we own, without persistence."""

    host = "127.0.0.1"
    # No persistence: a kill loses the data (tests/processes.DurableRedis keeps it).
    persistence: tuple[str, ...] = ("--appendonly", "no")

    def __init__(self, executable: str, directory: Path) -> None:
        self.executable = executable
        self.directory = directory
        self.port = free_port()
        self.log_path = directory / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start (again) on the same port; return once it answers PING."""
        if self.running:
            return
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    self.executable,
                    "--port", str(self.port),
                    "--bind", self.host,
                    "--save", "",
                    *self.persistence,
                    "--daemonize", "no",
                    "--dir", str(self.directory),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
            )  # fmt: skip
        deadline = time.monotonic() + REDIS_START_TIMEOUT
        while not self._answers_ping():
            if not self.running or time.monotonic() > deadline:
                self.stop()
                log_text = self.log_path.read_text(errors="replace")[-2000:]
                pytest.fail(
                    f"redis-server on port {self.port} did not start:\n{log_text}",
                    pytrace=False,
                )
            time.sleep(0.02)

    def stop(self) -> None:
        """Kill the server (as a crash would) and wait until it is gone."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait(timeout=10)

    def client_sync(self, db: int = 0) -> redis.Redis:
        """A plain client on our server; close it (``with`` works)."""
        return redis.Redis(host=self.host, port=self.port, db=db, decode_responses=True)

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail(
            "redis-server is not installed (not on PATH): run scripts/setup,"
            " which installs it with apt-get",
            pytrace=False,
        )
    server = RedisServer(executable, tmp_path_factory.mktemp("redis"))
    # A crash or Ctrl-C may skip fixture finalisation; atexit still runs.
    atexit.register(server.stop)
    server.start()
    try:
        yield server
    finally:
        server.stop()


_redis_dbs = itertools.cycle(range(1, 16))


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A URL on our redis-server whose database is empty for this test."""
    redis_server.start()  # a no-op, unless an outage test left it down
    db = next(_redis_dbs)
    with redis_server.client_sync(db) as client:
        client.flushdb()
    return redis_server.url(db)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/patgate.db"


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    opened = open_store(store_url)
    try:
        yield opened
    finally:
        await opened.close()


# Gateways on real sockets (tests/gateway_harness.py), for every test folder.


@pytest.fixture
async def upstream() -> AsyncIterator[RecordingUpstream]:
    """A recording upstream on a free loopback port."""
    server = RecordingUpstream()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def make_gateway() -> AsyncIterator[StartGateway]:
    """``await make_gateway(store_url, routes_yaml, extra=...)``; stopped after."""
    started: list[Gateway] = []

    async def make(store_url: str, routes: str, **kwargs: Any) -> Gateway:
        gateway = await start_gateway(store_url, routes, **kwargs)
        started.append(gateway)
        return gateway

    try:
        yield make
    finally:
        for gateway in reversed(started):
            await gateway.stop()


@pytest.fixture
async def gateways(tmp_path: Path) -> AsyncIterator[ProcessGroup]:
    """Real ``patgate serve`` processes for one test, all stopped after it."""
    from tests.processes import ProcessGroup  # it imports this module

    group = ProcessGroup(tmp_path)
    try:
        yield group
    finally:
        await group.stop_all()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
