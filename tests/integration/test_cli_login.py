"""``patgate login URL``: the real CLI acting through a running gateway's API.

The CLI runs as its own process (as a user runs it, from another machine);
the gateway, its store and upstream are real and on loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.gateway_harness import Gateway
from tests.integration.test_api import ALICE_PW, BOB_PW, ROOT_PW, start
from tests.processes import patgate_command


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


class RemoteCli:
    """The CLI with its own session file and no access to the store."""

    def __init__(self, directory: Path) -> None:
        self.session = directory / "config" / "patgate" / "session.json"
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("PATGATE_")
        }
        self.env["XDG_CONFIG_HOME"] = str(directory / "config")
        self.directory = directory

    async def __call__(self, *args: str, stdin: str = "") -> Result:
        process = await asyncio.create_subprocess_exec(
            *patgate_command(),
            *args,
            cwd=self.directory,
            env=self.env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(stdin.encode()), 30)
        assert process.returncode is not None
        return Result(process.returncode, out.decode(), err.decode())

    async def ok(self, *args: str, stdin: str = "") -> str:
        result = await self(*args, stdin=stdin)
        assert result.code == 0, result.stderr
        assert "Traceback" not in result.stderr
        return result.stdout

    async def fails(self, code: int, *args: str, stdin: str = "") -> str:
        result = await self(*args, stdin=stdin)
        assert result.code == code, (result.stdout, result.stderr)
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error: ")
        return lines[0]


@pytest.fixture
def remote(tmp_path) -> RemoteCli:
    return RemoteCli(tmp_path)


@pytest.fixture
async def gateway(make_gateway, upstream, sqlite_url) -> Gateway:
    return await start(make_gateway, sqlite_url, upstream)


async def test_login_then_tokens_act_as_that_user_through_the_api(
    gateway, remote, upstream
):
    out = await remote.ok(
        "login", gateway.url, "-u", "alice", "--password-stdin", stdin=ALICE_PW
    )
    assert "logged in" in out
    # The session file is the owner's alone and holds no password.
    mode = stat.S_IMODE(remote.session.stat().st_mode)
    assert mode == 0o600
    saved = remote.session.read_text()
    assert ALICE_PW not in saved
    assert json.loads(saved)["login"] == "alice"

    value = (
        await remote.ok(
            "token",
            "create",
            "-n",
            "ci",
            "-s",
            "api:read",
            "-e",
            "7d",
            "-q",
            "--password-stdin",
            stdin=ALICE_PW,
        )
    ).strip()
    listed = json.loads(await remote.ok("token", "list", "--json"))
    assert [(t["name"], t["owner"], t["created_by"]) for t in listed] == [
        ("ci", "alice", "alice")
    ]
    token_id = listed[0]["id"]
    assert value.startswith("pgt_")
    assert token_id in value
    async with (
        aiohttp.ClientSession() as client,
        client.get(
            f"{gateway.url}/api/x", headers={"Authorization": f"Bearer {value}"}
        ) as answer,
    ):
        assert answer.status == 200

    shown = json.loads(await remote.ok("token", "show", token_id, "--json"))
    assert shown["scopes"] == ["api:read"]

    out = await remote.ok(
        "token", "revoke", token_id, "--password-stdin", stdin=ALICE_PW
    )
    assert out.strip() == f"revoked {token_id}"
    record = await gateway.store.get_token(token_id)
    assert record is not None
    assert record.status.value == "revoked"


async def test_a_user_cannot_act_for_another_and_changes_need_the_password(
    gateway, remote
):
    await remote.ok("login", gateway.url, "-u", "bob", "--password-stdin", stdin=BOB_PW)
    line = await remote.fails(
        1, "token", "create", "-u", "alice", "--password-stdin", stdin=BOB_PW
    )
    assert "403" in line
    line = await remote.fails(
        1, "token", "create", "-n", "x", "--password-stdin", stdin="wrong-password"
    )
    assert "401" in line
    assert await gateway.store.list_tokens() == []


async def test_an_admin_creates_for_a_user(gateway, remote):
    await remote.ok(
        "login", gateway.url, "-u", "root", "--password-stdin", stdin=ROOT_PW
    )
    await remote.ok(
        "token",
        "create",
        "-u",
        "bob",
        "-s",
        "api:read",
        "-q",
        "--password-stdin",
        stdin=ROOT_PW,
    )
    (record,) = await gateway.store.list_tokens()
    assert record.owner == "bob"


async def test_logout_ends_the_session_on_the_server_too(gateway, remote):
    await remote.ok(
        "login", gateway.url, "-u", "alice", "--password-stdin", stdin=ALICE_PW
    )
    saved = json.loads(remote.session.read_text())
    out = await remote.ok("logout")
    assert "ended on the server" in out
    assert not remote.session.exists()
    # The old cookie is dead, not merely forgotten by this machine.
    async with (
        aiohttp.ClientSession(
            cookies={saved["cookie_name"]: saved["cookie"]}
        ) as client,
        client.get(f"{gateway.url}/_patgate/api/v1/tokens") as answer,
    ):
        assert answer.status == 401
    # Without a session the CLI is back on the store, which it cannot find here.
    assert (await remote("token", "list")).code != 0


async def test_bad_logins_and_unreachable_gateways_are_one_line(gateway, remote):
    line = await remote.fails(
        1, "login", gateway.url, "-u", "alice", "--password-stdin", stdin="nope"
    )
    assert "401" in line
    assert "nope" not in line
    assert not remote.session.exists()
    line = await remote.fails(
        3,
        "login",
        "http://127.0.0.1:9",
        "-u",
        "alice",
        "--password-stdin",
        stdin=ALICE_PW,
    )
    assert "cannot reach" in line
    await remote.fails(2, "login", "ftp://x", "-u", "alice", stdin=ALICE_PW)


async def test_a_token_value_is_never_sent_as_an_id(gateway, remote):
    await remote.ok(
        "login", gateway.url, "-u", "alice", "--password-stdin", stdin=ALICE_PW
    )
    value = await gateway.token("alice")
    line = await remote.fails(2, "token", "show", value)
    assert value not in line
    assert value[4:12] not in line


async def test_a_redirect_is_never_followed_with_the_password(remote, aiohttp_server):
    """SECURITY: a 307 would carry the JSON body (the password) and the
    session cookie to wherever it points."""
    from aiohttp import web

    seen: list[str] = []

    async def elsewhere(request: web.Request) -> web.Response:
        seen.append(await request.text())
        return web.json_response({})

    other = web.Application()
    other.router.add_route("*", "/{tail:.*}", elsewhere)
    target = await aiohttp_server(other)

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(str(target.make_url(request.path)))

    front = web.Application()
    front.router.add_route("*", "/{tail:.*}", redirect)
    server = await aiohttp_server(front)
    line = await remote.fails(
        1,
        "login",
        str(server.make_url("/")),
        "-u",
        "alice",
        "--password-stdin",
        stdin=ALICE_PW,
    )
    assert "307" in line
    assert seen == []
    assert not remote.session.exists()
