"""Real ``patgate serve`` processes, a durable redis-server, and the store's admin.

- ``GatewayProcess``: ``patgate --config DIR/gateway.yaml serve`` in its own
  directory; ``start()`` returns once the "listening" line is on stdout (the
  server then handles requests and signals); stderr goes to a file whose
  lines :meth:`GatewayProcess.logs` parses as JSON, failing on any other line.
- ``ProcessGroup``: starts gateways and stops every one at the end of a test.
- ``DurableRedis``: a redis-server that keeps its data across a kill
  (append-only file, fsync on every write), for outage tests.
- ``StoreAdmin``: a ``TokenService`` on the store the gateways share, to make,
  revoke and inspect tokens the way the CLI or the API would.
- ``poll``: wait for a condition without fixed sleeps.

Everything listens on 127.0.0.1 on ports the kernel picks.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from patgate.models import TokenRecord
from patgate.service import Actor, TokenService
from patgate.store import Store, open_store
from tests.conftest import RedisServer

PEPPER = "process-test-pepper"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
ADMIN = Actor(login="admin", admin=True)
LISTENING = re.compile(r"patgate listening on (http://\S+) ")

T = TypeVar("T")


def patgate_command() -> list[str]:
    script = Path(sys.executable).parent / "patgate"
    return [str(script)] if script.exists() else [sys.executable, "-m", "patgate"]


def process_env(**extra: str) -> dict[str, str]:
    """This environment without PATGATE_* settings, plus the test pepper."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATGATE_")}
    env["PATGATE_PEPPER"] = PEPPER
    env.update(extra)
    return env


async def poll(
    check: Callable[[], Awaitable[T | None] | T | None],
    *,
    within: float = 5.0,
    interval: float = 0.01,
    what: str = "condition",
) -> T:
    """Call ``check`` (sync or async) until it returns something other than
    None or False; that is the result."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result is not None and result is not False:
            return result  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(interval)


class GatewayProcess:
    """One ``patgate serve`` process (with all of its workers)."""

    def __init__(
        self,
        directory: Path,
        config_text: str,
        *,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.config_path = directory / "gateway.yaml"
        self.stdout_path = directory / "stdout.txt"
        self.stderr_path = directory / "stderr.txt"
        self.args = tuple(args)
        self.env = env or process_env()
        self.write_config(config_text)
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def write_config(self, text: str) -> None:
        # Written whole then renamed, so a reload never reads half a file.
        partial = self.config_path.with_suffix(".partial")
        partial.write_text(text)
        partial.replace(self.config_path)

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")

    async def start(self, within: float = START_TIMEOUT) -> GatewayProcess:
        self._spawn()
        await poll(self._listening, within=within, what="the listening line")
        return self

    def _spawn(self) -> None:
        with (
            self.stdout_path.open("wb") as stdout,
            self.stderr_path.open("wb") as stderr,
        ):
            self.process = subprocess.Popen(
                [
                    *patgate_command(),
                    "--config",
                    str(self.config_path),
                    "serve",
                    *self.args,
                ],
                cwd=self.directory,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
            )

    async def _listening(self) -> bool:
        found = LISTENING.search(self.stdout_path.read_text(errors="replace"))
        if found:
            self.url = found.group(1)
            return True
        if self.returncode is not None:
            raise AssertionError(
                f"patgate serve exited with {self.returncode} before listening:\n"
                + self.stderr_path.read_text(errors="replace")[-3000:]
            )
        return False

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def send(self, signum: int) -> None:
        assert self.process is not None, "not started"
        self.process.send_signal(signum)

    async def wait(self, within: float = STOP_TIMEOUT) -> int:
        async def exited() -> int | None:
            return self.returncode

        return await poll(exited, within=within, what="patgate serve to exit")

    async def stop(self, within: float = STOP_TIMEOUT) -> int:
        """SIGTERM, wait for the exit code; SIGKILL if it does not come."""
        if self.process is None:
            return 0
        if self.returncode is None:
            self.send(signal.SIGTERM)
            try:
                return await self.wait(within)
            except AssertionError:
                self.kill()
                raise
        return self.returncode or 0

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def logs(self) -> list[dict[str, Any]]:
        """Every stderr line as JSON; a line that is not JSON fails the test."""
        records = []
        for number, line in enumerate(self.stderr().splitlines(), 1):
            try:
                record = json.loads(line)
            except ValueError:
                pytest.fail(f"stderr line {number} is not JSON: {line!r}")
            assert isinstance(record, dict), line
            records.append(record)
        return records

    def events(self, name: str) -> list[dict[str, Any]]:
        return [record for record in self.logs() if record.get("event") == name]

    async def wait_for_event(
        self, name: str, *, count: int = 1, within: float = 5.0
    ) -> list[dict[str, Any]]:
        async def seen() -> list[dict[str, Any]] | None:
            found = self.events(name)
            return found if len(found) >= count else None

        return await poll(seen, within=within, what=f"{count} {name!r} log lines")


class ProcessGroup:
    """Gateways started for one test, each in a directory of its own."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[GatewayProcess] = []

    async def start(
        self,
        config_text: str,
        *,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> GatewayProcess:
        gateway = GatewayProcess(
            self.directory / f"gateway{len(self.started) + 1}",
            config_text,
            args=args,
            env=env,
        )
        self.started.append(gateway)
        return await gateway.start()

    async def stop_all(self) -> None:
        for gateway in self.started:
            try:
                await gateway.stop()
            finally:
                gateway.kill()


class DurableRedis(RedisServer):
    """A redis-server whose data survives a kill: AOF with ``appendfsync always``.

    What Redis acknowledged is on disk, so a kill then ``start()`` on the same
    port loses nothing already stored.
    """

    persistence = ("--appendonly", "yes", "--appendfsync", "always")


@contextmanager
def durable_redis(executable: str, directory: Path) -> Iterator[DurableRedis]:
    directory.mkdir(parents=True, exist_ok=True)
    server = DurableRedis(executable, directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class StoreAdmin:
    """The life cycle operations on a shared store, as an admin."""

    def __init__(self, store_url: str) -> None:
        self.store: Store = open_store(store_url)
        self.service = TokenService(
            self.store, prefix="pgt", pepper=PEPPER.encode(), scope_sets={}
        )

    async def user(self, login: str, scopes: Sequence[str] = ("*",)) -> None:
        if await self.store.get_user(login) is None:
            await self.service.add_user(ADMIN, login, scopes=scopes)

    async def token(self, owner: str = "alice", **kwargs: Any) -> tuple[str, str]:
        """A new token of ``owner`` (made if missing): its id and value."""
        await self.user(owner)
        record, value = await self.service.create_token(ADMIN, owner, **kwargs)
        return record.id, value

    async def revoke(self, token_id: str) -> None:
        await self.service.revoke_tokens(ADMIN, [token_id])

    async def disable(self, login: str) -> None:
        await self.service.disable_user(ADMIN, login)

    async def get(self, token_id: str) -> TokenRecord:
        record = await self.store.get_token(token_id)
        assert record is not None, token_id
        return record

    async def close(self) -> None:
        await self.store.close()


def run_cli(
    directory: Path, *args: str, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """``patgate ARGS`` in ``directory`` (which holds gateway.yaml)."""
    return subprocess.run(
        [*patgate_command(), *args],
        cwd=directory,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
