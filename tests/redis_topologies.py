"""Highly available Redis set-ups on loopback, started by the tests themselves.

- :class:`LocalCluster`: a Redis Cluster of ``masters`` masters (and
  ``replicas`` replicas each), made with ``redis-cli --cluster create``.
- :class:`LocalSentinel`: a master, a replica and one sentinel (quorum 1)
  watching the master under the service name ``patgate``.

Every process is ours, on free loopback ports, in a temporary directory;
nothing touches the machine's Redis on 6379. Short timeouts make failovers
take a second or two instead of the defaults' half a minute.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import RedisServer, free_port

NODE_TIMEOUT_MS = 1000
SERVICE = "patgate"


def redis_executable() -> str:
    found = shutil.which("redis-server")
    if found is None:
        pytest.fail("redis-server is not installed: run scripts/setup --test")
    return found


def redis_cli() -> str:
    found = shutil.which("redis-cli")
    if found is None:
        pytest.fail("redis-cli is not installed (Debian's redis-tools)")
    return found


def wait_until(check: object, what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within}s waiting for {what}", pytrace=False)
        time.sleep(0.1)


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too.

    Cluster nodes need a port of 55535 or less, and ephemeral ones are higher.
    """
    rng = random.SystemRandom()
    while True:
        port = rng.randrange(20000, 45000)
        if _bindable(port) and _bindable(port + 10000):
            return port


class Node(RedisServer):
    """A redis-server with extra arguments, in a directory of its own."""

    def __init__(self, directory: Path, *extra: str, port: int | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        super().__init__(redis_executable(), directory)
        if port is not None:
            self.port = port
        # The base class appends ``persistence`` to its command line.
        self.persistence = ("--appendonly", "no", *extra)

    def client(self) -> redis.Redis:
        return self.client_sync()


class LocalCluster:
    """A Redis Cluster on loopback; :meth:`url` is patgate's store URL for it."""

    def __init__(self, directory: Path, masters: int = 3, replicas: int = 0) -> None:
        self.directory = directory
        self.replicas = replicas
        self.nodes = [
            Node(
                directory / f"node{index}",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(NODE_TIMEOUT_MS),
                # Keep answering for the slots that are still served.
                "--cluster-require-full-coverage",
                "no",
                port=cluster_port(),
            )
            for index in range(masters * (1 + replicas))
        ]

    def start(self) -> LocalCluster:
        for node in self.nodes:
            node.start()
        addresses = [f"{node.host}:{node.port}" for node in self.nodes]
        subprocess.run(
            [
                redis_cli(),
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_until(self.healthy, "the cluster to cover every slot")
        return self

    def healthy(self) -> bool:
        for node in self.running_nodes():
            with node.client() as client:
                info = client.execute_command("CLUSTER", "INFO")
                text = info if isinstance(info, str) else str(info)
                if "cluster_state:ok" not in text:
                    return False
        return True

    def running_nodes(self) -> list[Node]:
        return [node for node in self.nodes if node.running]

    def url(self, user: str = "", password: str = "") -> str:
        auth = f"{user}:{password}@" if user or password else ""
        hosts = ",".join(f"{n.host}:{n.port}" for n in self.nodes[:3])
        return f"redis+cluster://{auth}{hosts}"

    def master_of(self, key: str) -> Node:
        """The node that serves ``key``'s slot now."""
        with self.running_nodes()[0].client() as client:
            slot = client.execute_command("CLUSTER", "KEYSLOT", key)
            port = _slot_owner_port(client, slot)
        return next(node for node in self.nodes if node.port == port)

    def flush(self) -> None:
        for node in self.running_nodes():
            with node.client() as client, contextlib.suppress(redis.RedisError):
                client.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _slot_owner_port(client: redis.Redis, slot: int) -> int:
    for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
        if start <= slot <= end:
            return int(master[1])
    raise AssertionError(f"slot {slot} is not served")


class LocalSentinel:
    """A master, a replica and one sentinel (quorum 1) for service ``patgate``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.master = Node(directory / "master")
        self.replica = Node(directory / "replica")
        self.sentinel_port = free_port()
        self.sentinel_dir = directory / "sentinel"
        self.sentinel_dir.mkdir(parents=True, exist_ok=True)
        self._sentinel: subprocess.Popen[bytes] | None = None

    def start(self) -> LocalSentinel:
        self.master.start()
        self.replica.persistence = (
            *self.replica.persistence,
            "--replicaof", self.master.host, str(self.master.port),
        )  # fmt: skip
        self.replica.start()
        self._start_sentinel()
        wait_until(self._replica_in_sync, "the replica to sync")
        wait_until(self._sentinel_knows_replica, "the sentinel to see the replica")
        return self

    def _start_sentinel(self) -> None:
        config = self.sentinel_dir / "sentinel.conf"
        config.write_text(
            f"port {self.sentinel_port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.sentinel_dir}\n"
            f"sentinel monitor {SERVICE} {self.master.host} {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} {NODE_TIMEOUT_MS}\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        log = (self.sentinel_dir / "sentinel.log").open("ab")
        self._sentinel = subprocess.Popen(
            [redis_executable(), str(config), "--sentinel"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.sentinel_dir,
        )
        log.close()
        wait_until(self._sentinel_answers, "the sentinel to answer")

    def sentinel_client(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.sentinel_port, decode_responses=True
        )

    def _sentinel_answers(self) -> bool:
        with self.sentinel_client() as client:
            return bool(client.ping())

    def _replica_in_sync(self) -> bool:
        with self.replica.client() as client:
            info = client.info("replication")
            return info.get("master_link_status") == "up"

    def _sentinel_knows_replica(self) -> bool:
        with self.sentinel_client() as client:
            return bool(client.execute_command("SENTINEL", "REPLICAS", SERVICE))

    def current_master_port(self) -> int:
        with self.sentinel_client() as client:
            _, port = client.execute_command(
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE
            )
            return int(port)

    def url(self, db: int = 0) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{SERVICE}/{db}"

    def stop(self) -> None:
        if self._sentinel is not None and self._sentinel.poll() is None:
            self._sentinel.kill()
            self._sentinel.wait(timeout=10)
        self.replica.stop()
        self.master.stop()


@contextlib.contextmanager
def local_cluster(
    directory: Path, masters: int = 3, replicas: int = 0
) -> Iterator[LocalCluster]:
    cluster = LocalCluster(directory, masters, replicas)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@contextlib.contextmanager
def local_sentinel(directory: Path) -> Iterator[LocalSentinel]:
    sentinel = LocalSentinel(directory)
    try:
        yield sentinel.start()
    finally:
        sentinel.stop()


# A least-privilege Redis user for patgate: the rules docs/redis.md documents
# (tests/unit/test_docs.py checks they are the same). Every Redis set-up of the
# contract suite but the plain one runs as this user.
ACL_USER = "patgate"
ACL_PASSWORD = "acl-test-password"
ACL_RULES = (
    "resetkeys ~patgate:* resetchannels &patgate:changes -@all"
    " +ping +select +exists +get +set +hgetall +smembers +sadd"
    " +evalsha +script|load +subscribe +unsubscribe"
    " +hset +hdel +hget +hincrby +incr +expire +publish"
    " +del +hexists +hmget +hsetnx +lpush +ltrim +lrange +srem"
    " +zadd +zrangebyscore +zrem"
    " +cluster|slots +cluster|shards +command"
    " +hlen"
)


def add_acl_user(client: redis.Redis) -> None:
    """Create (or reset) patgate's least-privilege user on one server.

    ACL users are not replicated: every node of a set-up needs this.
    """
    client.execute_command(
        "ACL", "SETUSER", ACL_USER, "reset", "on", f">{ACL_PASSWORD}",
        *ACL_RULES.split(),
    )  # fmt: skip


def acl_userinfo() -> str:
    return f"{ACL_USER}:{ACL_PASSWORD}@"


class TlsFiles:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client
    certificate, made with the openssl command line."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.ca = directory / "ca.pem"
        self.server_cert = directory / "server.pem"
        self.server_key = directory / "server.key"
        self.client_cert = directory / "client.pem"
        self.client_key = directory / "client.key"

    def make(self) -> TlsFiles:
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.fail("openssl is not installed (it makes the test certificates)")
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        d = self.directory

        def run(*args: str) -> None:
            subprocess.run([openssl, *args], check=True, capture_output=True, cwd=d)

        run("req", "-x509", *ec, "-keyout", "ca.key", "-out", str(self.ca),
            "-days", "2", "-subj", "/CN=patgate test CA")  # fmt: skip
        (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
        for name, subject in (("server", "/CN=127.0.0.1"), ("client", "/CN=patgate")):
            run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", subject)  # fmt: skip
            run("x509", "-req", "-in", f"{name}.csr", "-CA", str(self.ca),
                "-CAkey", "ca.key", "-CAcreateserial", "-out", f"{name}.pem",
                "-days", "2", "-extfile", "san.cnf")  # fmt: skip
        return self


class TlsRedis(Node):
    """A redis-server that speaks TLS (clients must show a certificate) on
    :attr:`tls_port`, and plain TCP on :attr:`port` for the tests' own admin."""

    def __init__(self, directory: Path, files: TlsFiles) -> None:
        self.tls_port = free_port()
        super().__init__(
            directory,
            "--tls-port", str(self.tls_port),
            "--tls-cert-file", str(files.server_cert),
            "--tls-key-file", str(files.server_key),
            "--tls-ca-cert-file", str(files.ca),
            "--tls-auth-clients", "yes",
        )  # fmt: skip
        self.files = files

    def tls_url(self, db: int = 0, userinfo: str = "") -> str:
        f = self.files
        return (
            f"rediss://{userinfo}{self.host}:{self.tls_port}/{db}"
            f"?ssl_ca_certs={f.ca}&ssl_certfile={f.client_cert}"
            f"&ssl_keyfile={f.client_key}"
        )
