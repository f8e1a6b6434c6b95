"""Tokens in the logs of a real ``patgate serve`` process.

SPEC §8 "Tokens in logs"; issue 5 "a test runs a realistic session and scans
every log line". The in-process tests (``test_secret_leaks``) see structlog;
only the real process shows everything it writes: its structlog JSON lines
*and* whatever the standard ``logging`` module (aiohttp's own loggers) prints
to stderr. Stopped in ``patgate.logs`` (redaction) and ``web.ops.access.AccessLogger``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from patgate.service import TokenService
from patgate.store import open_store
from tests.gateway_harness import ADMIN, RecordingUpstream
from tests.security.conftest import bearer, request, send_raw

PEPPER = "process-test-pepper"
STARTUP_TIMEOUT = 20.0
_LISTENING = re.compile(r"listening on http://([0-9.]+:[0-9]+)")


@dataclass
class Served:
    """A ``patgate serve`` child process and everything it wrote."""

    process: asyncio.subprocess.Process
    host: str = ""
    tokens: list[str] = field(default_factory=list)
    output: list[str] = field(default_factory=list)

    async def stop(self) -> str:
        """SIGTERM, wait, and return all of stdout and stderr."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        await asyncio.sleep(0)  # let the readers take the last lines
        return "\n".join(self.output)


async def _pump(stream: asyncio.StreamReader | None, into: list[str]) -> None:
    assert stream is not None
    while line := await stream.readline():
        into.append(line.decode("utf-8", "replace").rstrip("\n"))


@pytest.fixture
async def served(tmp_path: Path, upstream: RecordingUpstream) -> AsyncIterator[Served]:
    store_url = f"sqlite:///{tmp_path}/patgate.db"
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "listen: 127.0.0.1:0\n"
        f"store: {store_url}\n"
        "limits: {failed_auth_per_minute: 0}\n"
        "routes:\n"
        "  - name: api\n"
        "    prefix: /api/\n"
        f"    upstream: {upstream.url}\n"
    )
    store = open_store(store_url)
    try:
        service = TokenService(store, pepper=PEPPER.encode())
        await service.add_user(ADMIN, "alice")
        tokens = [(await service.create_token(ADMIN, "alice"))[1] for _ in range(2)]
    finally:
        await store.close()
    env = {**os.environ, "PATGATE_PEPPER": PEPPER, "PATGATE_LOG_LEVEL": "debug"}
    env.pop("PATGATE_STORE", None)
    env.pop("PATGATE_CONFIG", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "patgate", "--config", str(config), "serve",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    child = Served(process, tokens=tokens)
    pumps = [
        asyncio.create_task(_pump(process.stdout, child.output)),
        asyncio.create_task(_pump(process.stderr, child.output)),
    ]
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT):
            while not child.host:
                await asyncio.sleep(0.02)
                found = [m for line in child.output if (m := _LISTENING.search(line))]
                if found:
                    child.host = found[0].group(1)
                assert process.returncode is None, "\n".join(child.output)
        yield child
    finally:
        await child.stop()
        for pump in pumps:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump


def betrayals(values: list[str]) -> list[str]:
    forms: list[str] = []
    for value in values:
        forms.append(value)
        forms.append(value.split("_", 1)[1][8:40])
        forms.append(base64.b64encode(f"alice:{value}".encode()).decode())
    return forms


async def test_real_process_logs_every_request_and_no_token(
    served: Served, upstream: RecordingUpstream
) -> None:
    good, other = served.tokens
    forged = good[:-1] + ("A" if good[-1] != "A" else "B")
    basic = base64.b64encode(f"alice:{good}".encode()).decode()
    exchanges = [
        (request("/api/a", bearer(good)), 200),
        (request(f"/api/b?k=v&access_token={good}"), 200),
        (request("/api/c", f"Authorization: Basic {basic}"), 200),
        (request("/api/d", bearer(forged)), 401),
        (request(f"/api/e?session={other}", bearer(good)), 400),
        (request(f"/api/f?session={forged}"), 401),
    ]
    for raw, status in exchanges:
        (response,) = await send_raw(served, raw)
        assert response.status == status
    assert [seen.raw_path for seen in upstream.requests] == [
        "/api/a",
        "/api/b?k=v",
        "/api/c",
    ]
    output = await served.stop()
    access = [
        json.loads(line)
        for line in output.splitlines()
        if line.startswith("{") and '"event": "request"' in line
    ]
    assert [line["status"] for line in access] == [s for _, s in exchanges]
    for form in betrayals([good, other, forged]):
        assert form not in output


async def test_parser_error_on_a_credential_line_does_not_log_the_token(
    served: Served, upstream: RecordingUpstream
) -> None:
    """A refused header line that holds a token is not logged with it.

    A bare CR after the token: both parsers refuse the header line and quote
    it in their exception, which aiohttp logs by default ("Error handling
    request", ERROR with traceback, stdlib logger ``aiohttp.server``)
    unless the gateway logs the refusal itself; whatever it writes, no token.
    """
    good = served.tokens[0]
    raw = request("/api/x", f"Authorization: Bearer {good}\rX-Other: 1")
    (response,) = await send_raw(served, raw)
    assert response.status == 400
    assert upstream.requests == []
    output = await served.stop()
    # The refusal is logged (so the scan below looks at a real line).
    assert '"status": 400' in output
    for form in betrayals([good]):
        assert form not in output
