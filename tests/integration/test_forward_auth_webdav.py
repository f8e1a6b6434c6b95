"""litmus (the WebDAV conformance suite) through nginx or Caddy + patgate.

litmus runs against a real WebDAV server (wsgidav) directly, then through the
shipped nginx and Caddy configs with patgate deciding: each of its tests
must end the same way both times (the Destination and If checks, locks,
100-continue and the Basic challenge all pass through the decision).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from tests import front_proxies
from tests.integration import test_webdav

# The wsgidav server of test_webdav, as fixtures here too.
dav_root = test_webdav.dav_root
dav_server = test_webdav.dav_server
SUITES = "basic copymove props locks http"
RESULT = re.compile(r"^\s*\d+\.\s+(\w+)\.*\s+(pass|FAIL|SKIPPED|WARNING)", re.M)


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


async def litmus(url: str, login: str, password: str, cwd: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        "litmus",
        url,
        login,
        password,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={"TESTS": SUITES, "HOME": str(cwd), "PATH": "/usr/bin:/bin"},
        cwd=cwd,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace")


def outcomes(text: str) -> list[tuple[str, str]]:
    """Each litmus test and how it ended (a progress line is printed twice)."""
    return RESULT.findall(text.replace("\r", "\n"))


@pytest.mark.parametrize("front", ["nginx", "caddy"])
async def test_litmus_passes_through_the_front_as_it_does_directly(
    make_gateway,
    sqlite_url,
    dav_server,
    tmp_path,
    front,
):
    gateway = await make_gateway(
        sqlite_url,
        files_route(dav_server),
        extra="trusted_proxies: [127.0.0.1/32]\nforward_auth: {listen: 127.0.0.1:0}\n",
    )
    token = await gateway.token("alice", scopes=["files:read", "files:write"])
    code, text = await litmus(dav_server + "/dav/", "alice", "any", tmp_path)
    direct = outcomes(text)
    assert code == 0, text[-2000:]
    assert len(direct) > 90
    start = getattr(front_proxies, front)
    async with start(tmp_path / front, gateway.decisions_url, dav_server) as url:
        code, text = await litmus(url + "/dav/", "alice", token, tmp_path)
        assert outcomes(text) == direct, text[-2000:]
        assert code == 0
        code, text = await litmus(url + "/dav/", "alice", token + "x", tmp_path)
        assert code != 0
        assert ("begin", "pass") not in outcomes(text)
