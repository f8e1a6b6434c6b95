"""The contract suite's stores: SQLite, and Redis in every set-up patgate supports.

``store_url`` here overrides the one of tests/conftest.py: besides SQLite and
plain Redis (default user), the suite runs on Redis as the least-privilege
ACL user (``redis-acl``), over TLS with client certificates (``rediss``),
behind Sentinel (master, replica, sentinel) and on a Cluster of three
masters, all as that ACL user. Each set-up is started once per session and
emptied before every test.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RedisServer
from tests.redis_topologies import (
    LocalCluster,
    LocalSentinel,
    TlsFiles,
    TlsRedis,
    acl_userinfo,
    add_acl_user,
    local_cluster,
    local_sentinel,
)

SETUPS = ["sqlite", "redis", "redis-acl", "rediss", "sentinel", "cluster"]


@pytest.fixture
def acl_redis_server(redis_server: RedisServer) -> RedisServer:
    # Each test: ACL users live in memory, and the outage tests restart
    # this server.
    with redis_server.client_sync() as client:
        add_acl_user(client)
    return redis_server


@pytest.fixture(scope="session")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    directory = tmp_path_factory.mktemp("tls")
    server = TlsRedis(directory / "server", TlsFiles(directory / "certs").make())
    server.start()
    try:
        with server.client() as client:
            add_acl_user(client)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def sentinel_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSentinel]:
    with local_sentinel(tmp_path_factory.mktemp("sentinel")) as sentinel:
        for node in (sentinel.master, sentinel.replica):
            with node.client() as client:
                add_acl_user(client)
        yield sentinel


@pytest.fixture(scope="session")
def cluster_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        for node in cluster.nodes:
            with node.client() as client:
                add_acl_user(client)
        yield cluster


_dbs = itertools.cycle(range(1, 16))


def _setup_url(request: pytest.FixtureRequest, setup: str, tmp: Path) -> str:
    if setup in ("sqlite", "redis"):
        url: str = request.getfixturevalue(f"{setup}_url")
        return url
    if setup == "redis-acl":
        request.getfixturevalue("acl_redis_server")
        plain: str = request.getfixturevalue("redis_url")
        return plain.replace("redis://", f"redis://{acl_userinfo()}", 1)
    if setup == "rediss":
        tls: TlsRedis = request.getfixturevalue("tls_redis")
        db = next(_dbs)
        with tls.client_sync(db) as client:
            client.flushdb()
        return tls.tls_url(db, acl_userinfo())
    if setup == "sentinel":
        sentinel: LocalSentinel = request.getfixturevalue("sentinel_setup")
        db = next(_dbs)
        with sentinel.master.client_sync(db) as client:
            client.flushdb()
        return sentinel.url(db).replace("://", f"://{acl_userinfo()}", 1)
    cluster: LocalCluster = request.getfixturevalue("cluster_setup")
    cluster.flush()
    return cluster.url(*acl_userinfo().rstrip("@").split(":"))


@pytest.fixture(params=SETUPS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _setup_url(request, request.param, tmp_path)
