"""A real WebDAV server (wsgidav) behind the gateway, driven by a real client.

The client is webdav4 (httpx) speaking Basic auth with the token as password;
it runs in a thread so the gateway can serve it from the test's event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from cheroot import wsgi
from webdav4.client import Client, ForbiddenOperation, HTTPError
from wsgidav.wsgidav_app import WsgiDAVApp

from tests.conftest import free_port


@pytest.fixture
def dav_root(tmp_path: Path) -> Path:
    root = tmp_path / "dav"
    (root / "projects" / "alpha").mkdir(parents=True)
    (root / "projects" / "beta").mkdir(parents=True)
    (root / "projects" / "beta" / "secret.txt").write_text("beta only")
    return root


@pytest.fixture
def dav_server(dav_root: Path) -> Iterator[str]:
    app = WsgiDAVApp(
        {
            "provider_mapping": {"/dav": str(dav_root)},
            "simple_dc": {"user_mapping": {"*": True}},
            "http_authenticator": {"domain_controller": None},
            "verbose": 0,
            "logging": {"enable": False, "enable_loggers": []},
            "lock_storage": True,
            "property_manager": True,
        }
    )
    port = free_port()
    server = wsgi.Server(("127.0.0.1", port), app, numthreads=4)
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        thread.join(timeout=5)


@contextmanager
def dav_client(base: str, auth: tuple[str, str]) -> Iterator[Client]:
    http = httpx.Client(auth=auth)
    try:
        yield Client(base + "/dav/", http_client=http, retry=False)
    finally:
        http.close()


def files_route(upstream: str) -> str:
    return (
        "  - name: files\n"
        "    prefix: /dav/\n"
        f"    upstream: {upstream}\n"
        "    credentials: [basic, bearer]\n"
        "    realm: files\n"
        "    methods: {GET: files:read, HEAD: files:read, OPTIONS: files:read,\n"
        "              PROPFIND: files:read, '*': files:write}\n"
    )


@pytest.fixture
async def dav_gateway(make_gateway, sqlite_url, dav_server):
    return await make_gateway(sqlite_url, files_route(dav_server))


async def test_client_uploads_lists_moves_and_deletes(dav_gateway, dav_root, tmp_path):
    token = await dav_gateway.token("alice", scopes=["files:read", "files:write"])
    local = tmp_path / "report.txt"
    local.write_bytes(b"quarterly numbers\n" * 1000)

    def session() -> list[str]:
        with dav_client(dav_gateway.url, ("alice", token)) as client:
            return steps(client)

    def steps(client: Client) -> list[str]:
        client.upload_file(str(local), "projects/alpha/report.txt")
        names = [entry["name"] for entry in client.ls("projects/alpha")]
        client.move("projects/alpha/report.txt", "projects/alpha/final.txt")
        client.copy("projects/alpha/final.txt", "projects/alpha/copy.txt")
        client.remove("projects/alpha/copy.txt")
        client.mkdir("projects/alpha/sub")
        return names

    names = await asyncio.to_thread(session)
    assert any(name.endswith("report.txt") for name in names)
    alpha = dav_root / "projects" / "alpha"
    assert (alpha / "final.txt").read_bytes() == local.read_bytes()
    assert not (alpha / "report.txt").exists()
    assert not (alpha / "copy.txt").exists()
    assert (alpha / "sub").is_dir()


async def test_unauthenticated_options_gets_a_basic_challenge(dav_gateway):
    def options() -> httpx.Response:
        return httpx.request("OPTIONS", dav_gateway.url + "/dav/")

    response = await asyncio.to_thread(options)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Basic realm="files"')


async def test_read_only_token_cannot_write(dav_gateway, tmp_path):
    token = await dav_gateway.token("alice", scopes=["files:read"])

    def attempt() -> int:
        with dav_client(dav_gateway.url, ("alice", token)) as client:
            client.ls("projects")
            try:
                client.mkdir("projects/new")
            except ForbiddenOperation as exc:
                cause = exc.__cause__
                assert isinstance(cause, HTTPError)
                return cause.status_code
        return 0

    assert await asyncio.to_thread(attempt) == 403


async def test_node_scope_confines_moves_to_the_subtree(dav_gateway, dav_root):
    token = await dav_gateway.token("alice", scopes=["node:/dav/projects/alpha:rw"])
    (dav_root / "projects" / "alpha" / "mine.txt").write_text("mine")

    def attempts() -> dict[str, int]:
        auth = ("alice", token)
        base = dav_gateway.url
        with httpx.Client(auth=auth) as http:
            return {
                "own": http.get(base + "/dav/projects/alpha/mine.txt").status_code,
                "other": http.get(base + "/dav/projects/beta/secret.txt").status_code,
                "dotdot": http.get(
                    base + "/dav/projects/alpha/%2e%2e/beta/secret.txt"
                ).status_code,
                "move_out": http.request(
                    "MOVE",
                    base + "/dav/projects/alpha/mine.txt",
                    headers={"Destination": base + "/dav/projects/beta/stolen.txt"},
                ).status_code,
            }

    codes = await asyncio.to_thread(attempts)
    assert codes["own"] == 200
    assert codes["other"] == 403
    assert codes["dotdot"] == 403
    assert codes["move_out"] == 403
    assert not (dav_root / "projects" / "beta" / "stolen.txt").exists()
    assert (dav_root / "projects" / "alpha" / "mine.txt").exists()
