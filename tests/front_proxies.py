"""Real nginx and Caddy in front of patgate, run from the shipped deploy/ files.

The configs under ``deploy/forward-auth/`` name fixed addresses (patgate's
decision listener on 127.0.0.1:8082, the upstream on 127.0.0.1:8081, the
proxy on port 80); the
tests run those same files with the addresses replaced by free loopback
ports, so what ships is what is tested. Each proxy runs in the foreground in
a directory of its own and is stopped by its pid.
"""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "forward-auth"
PATGATE = "127.0.0.1:8082"  # forward_auth.listen
UPSTREAM = "127.0.0.1:8081"

NGINX_MAIN = """\
{user_line}
worker_processes 1;
pid {dir}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy_temp;
    proxy_cache_path {dir}/decisions levels=1 keys_zone=patgate_decisions:1m;
    fastcgi_temp_path {dir}/fastcgi_temp;
    uwsgi_temp_path {dir}/uwsgi_temp;
    scgi_temp_path {dir}/scgi_temp;
    include {dir}/site.conf;
}}
"""


def address_of(url: str) -> str:
    """``127.0.0.1:PORT`` of ``http://127.0.0.1:PORT``."""
    return url.split("://", 1)[1].rstrip("/")


def nginx_site(patgate: str, upstream: str, port: int, cached: bool = False) -> str:
    """deploy/forward-auth/nginx.conf on these addresses; ``cached``: its
    ``#cache`` lines on (the 1 s decision cache)."""
    text = (DEPLOY / "nginx.conf").read_text()
    for old, new in (
        (f"server {PATGATE};", f"server {patgate};"),
        (f"server {UPSTREAM};", f"server {upstream};"),
        ("listen 80;", f"listen 127.0.0.1:{port};"),
    ):
        assert text.count(old) == 1, f"deploy/forward-auth/nginx.conf: no {old!r}"
        text = text.replace(old, new)
    if cached:
        assert "#cache " in text, "deploy/forward-auth/nginx.conf: no #cache lines"
        text = text.replace("#cache ", "")
    return text


def caddyfile(patgate: str, upstream: str, port: int) -> str:
    """deploy/forward-auth/Caddyfile on these addresses."""
    text = (DEPLOY / "Caddyfile").read_text()
    for old, new in (
        (f"forward_auth {PATGATE}", f"forward_auth {patgate}"),
        (f"reverse_proxy {UPSTREAM}", f"reverse_proxy {upstream}"),
        ("http://:80 {", f"http://127.0.0.1:{port} {{"),
    ):
        assert text.count(old) == 1, f"deploy/forward-auth/Caddyfile: no {old!r}"
        text = text.replace(old, new)
    return text


async def _listening(port: int, process: asyncio.subprocess.Process) -> bool:
    for _ in range(400):
        if process.returncode is not None:
            return False
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.025)
            continue
        writer.close()
        await writer.wait_closed()
        return True
    return False


@asynccontextmanager
async def _running(
    argv: list[str], port: int, log: Path, env: dict[str, str] | None = None
) -> AsyncIterator[str]:
    out = await asyncio.to_thread(open, log.with_suffix(".out"), "wb")
    with out:
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=out, stderr=out, env=env
        )
    try:
        if not await _listening(port, process):
            text = await asyncio.to_thread(_tail, log)
            raise RuntimeError(f"{argv[0]} is not listening on {port}: {text}")
        yield f"http://127.0.0.1:{port}"
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


def _tail(log: Path) -> str:
    texts = [path.read_text()[-1000:] for path in (log, log.with_suffix(".out"))
             if path.exists()]  # fmt: skip
    return " | ".join(texts) or "(no log)"


def _nginx_files(
    directory: Path, patgate_url: str, upstream_url: str, cached: bool
) -> tuple[list[str], int]:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    directory.mkdir(parents=True, exist_ok=True)
    user_line = ""
    if os.geteuid() == 0:
        # As root, the workers would switch to "nobody", who cannot use the
        # test's directories.
        user = pwd.getpwuid(os.geteuid()).pw_name
        group = grp.getgrgid(os.getegid()).gr_name
        user_line = f"user {user} {group};"
    port = free_port()
    site = nginx_site(address_of(patgate_url), address_of(upstream_url), port, cached)
    (directory / "site.conf").write_text(site)
    conf = directory / "nginx.conf"
    conf.write_text(NGINX_MAIN.format(user_line=user_line, dir=directory))
    log = directory / "error.log"
    argv = [binary, "-p", str(directory), "-e", str(log), "-c", str(conf)]
    return [*argv, "-g", "daemon off;"], port


@asynccontextmanager
async def nginx(
    directory: Path, patgate_url: str, upstream_url: str, *, cached: bool = False
) -> AsyncIterator[str]:
    """nginx running the deploy config in front of patgate."""
    argv, port = await asyncio.to_thread(
        _nginx_files, directory, patgate_url, upstream_url, cached
    )
    async with _running(argv, port, directory / "error.log") as url:
        yield url


def _caddy_files(
    directory: Path, patgate_url: str, upstream_url: str
) -> tuple[list[str], int]:
    binary = shutil.which("caddy") or "/usr/bin/caddy"
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = directory / "Caddyfile"
    conf.write_text(caddyfile(address_of(patgate_url), address_of(upstream_url), port))
    argv = [binary, "run", "--config", str(conf), "--adapter", "caddyfile"]
    return argv, port


@asynccontextmanager
async def caddy(
    directory: Path, patgate_url: str, upstream_url: str
) -> AsyncIterator[str]:
    """Caddy running deploy/forward-auth/Caddyfile in front of patgate."""
    argv, port = await asyncio.to_thread(
        _caddy_files, directory, patgate_url, upstream_url
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(directory),
        "XDG_DATA_HOME": str(directory / "data"),
        "XDG_CONFIG_HOME": str(directory / "config"),
    }
    async with _running(argv, port, directory / "caddy.log", env) as url:
        yield url
