"""A pepper that cannot silently diverge from the one the store's tokens use.

Real ``patgate`` processes (CLI and ``serve``) on real SQLite files and our
own redis-server: a process under another pepper refuses to start with one
line, and the store is left exactly as it was.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest

from patgate import tokens
from patgate.pepper import FINGERPRINT_SETTING, pepper_fingerprint
from patgate.store import open_store
from tests.factories import make_user
from tests.gateway_harness import gateway_yaml, route_yaml
from tests.processes import GatewayProcess, durable_redis, patgate_command, process_env


def cli(directory: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = process_env()
    environment.pop("PATGATE_PEPPER")
    environment.update(env)
    return subprocess.run(
        [*patgate_command(), *args],
        cwd=directory,
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def write_config(directory: Path, store_url: str) -> None:
    routes = route_yaml("api", "/api/", "http://127.0.0.1:9")
    (directory / "gateway.yaml").write_text(gateway_yaml(store_url, routes))


def sqlite_rows(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        return [
            row
            for table in ("users", "tokens", "settings", "changes")
            for row in conn.execute(f"SELECT * FROM {table}")  # noqa: S608
        ]


@pytest.fixture
def sqlite_dir(tmp_path: Path) -> Path:
    write_config(tmp_path, "sqlite:///./patgate.db")
    return tmp_path


def make_alice_token(directory: Path, **env: str) -> str:
    assert cli(directory, "user", "add", "alice", **env).returncode == 0
    made = cli(directory, "token", "create", "-u", "alice", "-q", **env)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def test_cli_under_another_pepper_refuses_with_one_line_and_changes_nothing(
    sqlite_dir,
):
    make_alice_token(sqlite_dir, PATGATE_PEPPER="the-first-pepper")
    before = sqlite_rows(sqlite_dir / "patgate.db")
    for command in (
        ("token", "list"),
        ("token", "create", "-u", "alice"),
        ("user", "add", "bob"),
    ):
        result = cli(sqlite_dir, *command, PATGATE_PEPPER="another-pepper")
        assert result.returncode == 1
        assert result.stdout == ""
        (line,) = result.stderr.splitlines()
        assert line.startswith("error: pepper mismatch: ")
        assert "set $PATGATE_PEPPER" in line
        assert "another-pepper" not in line
        assert "the-first-pepper" not in line
    assert sqlite_rows(sqlite_dir / "patgate.db") == before


async def test_gateway_under_another_pepper_refuses_to_start(sqlite_dir):
    make_alice_token(sqlite_dir, PATGATE_PEPPER="the-first-pepper")
    before = sqlite_rows(sqlite_dir / "patgate.db")
    env = process_env(PATGATE_PEPPER="another-pepper")
    routes = route_yaml("api", "/api/", "http://127.0.0.1:9")
    config = gateway_yaml(f"sqlite:///{sqlite_dir}/patgate.db", routes)
    gateway = GatewayProcess(sqlite_dir / "gw", config, env=env)
    with pytest.raises(AssertionError, match="pepper mismatch"):
        await gateway.start()
    assert gateway.returncode == 1
    assert "Traceback" not in gateway.stderr()
    assert sqlite_rows(sqlite_dir / "patgate.db") == before


def test_sqlite_store_without_a_pepper_generates_one_file_beside_it(sqlite_dir):
    value = make_alice_token(sqlite_dir)
    pepper_path = sqlite_dir / "patgate.db.pepper"
    mode = stat.S_IMODE(os.stat(pepper_path).st_mode)
    assert mode == 0o600
    pepper = pepper_path.read_bytes().strip()
    assert len(pepper) == 64
    with sqlite3.connect(sqlite_dir / "patgate.db") as conn:
        (stored_hash,) = conn.execute("SELECT token_hash FROM tokens").fetchone()
        (fingerprint,) = conn.execute(
            "SELECT value FROM settings WHERE name = ?", (FINGERPRINT_SETTING,)
        ).fetchone()
    assert stored_hash == tokens.hash_token(value, pepper)
    assert fingerprint == pepper_fingerprint(pepper)
    # Later commands use the file, silently; the pepper never prints.
    listed = cli(sqlite_dir, "token", "list", "--json")
    assert listed.returncode == 0
    assert listed.stderr == ""
    assert pepper.decode() not in listed.stdout
    # The environment still wins, and a different one is refused.
    refused = cli(sqlite_dir, "token", "list", PATGATE_PEPPER="not-the-file")
    assert refused.returncode == 1
    assert "pepper mismatch" in refused.stderr
    assert "patgate.db.pepper" in refused.stderr


def test_a_store_made_under_an_environment_pepper_gets_no_pepper_file(sqlite_dir):
    make_alice_token(sqlite_dir, PATGATE_PEPPER="from-the-environment")
    result = cli(sqlite_dir, "token", "list")
    assert result.returncode == 1
    assert "pepper mismatch" in result.stderr
    assert not (sqlite_dir / "patgate.db.pepper").exists()


async def test_a_store_in_use_before_fingerprints_keeps_its_empty_pepper(sqlite_dir):
    """A store made by an older patgate (users, no fingerprint) is not re-peppered."""
    store = open_store(f"sqlite:///{sqlite_dir}/patgate.db")
    try:
        await store.create_user(make_user("alice"))
    finally:
        await store.close()
    result = cli(sqlite_dir, "token", "create", "-u", "alice", "-q")
    assert result.returncode == 0
    (warning,) = result.stderr.splitlines()
    assert warning.startswith("warning: no pepper: set $PATGATE_PEPPER")
    assert not (sqlite_dir / "patgate.db.pepper").exists()


def test_redis_store_refuses_another_pepper(tmp_path, redis_url):
    write_config(tmp_path, redis_url)
    make_alice_token(tmp_path, PATGATE_PEPPER="first")
    result = cli(tmp_path, "token", "list", PATGATE_PEPPER="second")
    assert result.returncode == 1
    assert result.stderr.startswith("error: pepper mismatch")
    assert "restore" not in result.stderr  # no pepper file on Redis
    empty = cli(tmp_path, "token", "list")
    assert empty.returncode == 1


def test_redis_store_without_a_pepper_warns_once_in_one_wording(tmp_path, redis_url):
    write_config(tmp_path, redis_url)
    make_alice_token(tmp_path)
    result = cli(tmp_path, "token", "list")
    assert result.returncode == 0
    assert result.stderr.splitlines() == [
        "warning: no pepper: set $PATGATE_PEPPER to the same long random value"
        " for every process before creating tokens (token hashes depend on it)"
    ]
    checked = cli(tmp_path, "config", "check")
    assert checked.stdout.count("warning: no pepper: set $PATGATE_PEPPER") == 1


async def test_gateway_that_starts_before_redis_checks_the_pepper_later(tmp_path):
    """Started while the store is down, the gateway checks once it answers."""
    executable = shutil.which("redis-server")
    assert executable is not None
    with durable_redis(executable, tmp_path / "redis") as server:
        with server.client_sync() as client:
            client.set(
                f"patgate:setting:{FINGERPRINT_SETTING}", pepper_fingerprint(b"x")
            )
        server.stop()
        routes = route_yaml("api", "/api/", "http://127.0.0.1:9")
        gateway = GatewayProcess(tmp_path / "gw", gateway_yaml(server.url(), routes))
        try:
            await gateway.start()
            assert gateway.events("pepper_unchecked")
            server.start()
            assert await gateway.wait(within=10) == 1
        finally:
            gateway.kill()
        (event,) = gateway.events("pepper_mismatch")
        assert "set $PATGATE_PEPPER" in event["error"]
