"""What the benchmark drives, and how each one is started on loopback.

A ``Target`` is something wrk can hit: the upstream itself, nginx, the plain aiohttp
proxy, patgate on SQLite or Redis, or nginx in front of patgate's decision endpoint
(``deploy/forward-auth/nginx.conf`` as shipped, without and with its 1 s cache).
Each proxy gets a free 127.0.0.1 port and a directory of its own under the run's
temporary directory. patgate is set up with its own CLI exactly as a user would
(``user add``, ``token create -q``); when ``patgate serve`` does not exist yet,
its targets are reported as pending.

The token value lives only in memory and in 0600 files of the run's temporary
directory; it is never printed (see ``redact``).
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from processes import (
    Child,
    Processes,
    free_port,
    http_get,
    process_tree,
    wait_http,
)

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
HELLO_PATH = "/api/hello"
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9]+_[A-Za-z0-9]{20,}")
CLI_TIMEOUT = 60.0

PATGATE_UNAVAILABLE = "patgate serve not available yet"


class TargetError(RuntimeError):
    """A target could not be started or answers wrongly; the text says why."""


@dataclass
class Target:
    name: str
    label: str
    status: str = "ready"  # ready | pending | error
    reason: str = ""
    base_url: str = ""
    child: Child | None = None
    auth_headers: dict[str, str] = field(default_factory=dict, repr=False)
    redis_port: int | None = None
    redis_child: Child | None = None
    workdir: Path | None = None
    info: dict[str, object] = field(default_factory=dict)
    # Processes that serve this target besides ``child`` (patgate behind nginx).
    companions: list[Child] = field(default_factory=list)
    # patgate's decision listener (forward_auth.listen), ``host:port``.
    decisions: str = ""

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    def pids(self) -> list[int]:
        children = [self.child, *self.companions] if self.child else []
        return [pid for child in children for pid in process_tree(child.pid)]


def redact(text: str, targets: list[Target]) -> str:
    """Remove every credential the harness holds from ``text`` before printing it."""
    for target in targets:
        for value in target.auth_headers.values():
            secret = value.split()[-1]
            if secret:
                text = text.replace(secret, "<redacted>")
    return text


def python() -> str:
    return sys.executable


def check_answer(target: Target, headers: dict[str, str]) -> None:
    """The target must answer the hello request with the upstream's 38 bytes."""
    assert target.child is not None
    status, body = wait_http(target.child, target.base_url + HELLO_PATH, headers)
    if status != 200 or len(body) != 38:
        said = body[:120].decode(errors="replace").strip()
        raise TargetError(
            f"GET {HELLO_PATH} answered {status}: {said!r}; "
            f"its log: {target.child.last_error()!r}"
        )


def start_upstream(procs: Processes) -> Target:
    port = free_port()
    child = procs.start(
        "upstream",
        [python(), str(BENCH_DIR / "upstream.py"), "--listen", f"127.0.0.1:{port}"],
    )
    target = Target("direct", "direct upstream", base_url=f"http://127.0.0.1:{port}")
    target.child = child
    check_answer(target, {})
    return target


def start_decision_stub(procs: Processes) -> Target:
    """``decision_stub.py``: the reference decision service (``decisions`` set)."""
    port = free_port()
    argv = [python(), str(BENCH_DIR / "decision_stub.py"), "--listen"]
    child = procs.start("decision-stub", [*argv, f"127.0.0.1:{port}"])
    target = Target("decision-stub", "aiohttp decision stub")
    target.child = child
    target.decisions = f"127.0.0.1:{port}"
    # Any value: the stub only looks for the header.
    target.auth_headers = {"Authorization": "Bearer stub"}
    return target


def start_plain_proxy(procs: Processes, upstream: Target) -> Target:
    port = free_port()
    argv = [
        python(),
        str(BENCH_DIR / "plain_proxy.py"),
        "--listen",
        f"127.0.0.1:{port}",
        "--upstream",
        upstream.base_url,
    ]
    target = Target("plain", "plain aiohttp proxy", base_url=f"http://127.0.0.1:{port}")
    target.child = procs.start("plain_proxy", argv)
    check_answer(target, {})
    return target


NGINX_CONF = """\
# Written by bench/bench.py: nginx as a plain reverse proxy, no auth.
{user_line}
worker_processes {workers};
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy_temp;
    fastcgi_temp_path {dir}/fastcgi_temp;
    uwsgi_temp_path {dir}/uwsgi_temp;
    scgi_temp_path {dir}/scgi_temp;
    keepalive_requests 1000000;
    upstream bench_upstream {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        client_max_body_size 0;
        location / {{
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_buffer_size 64k;
            proxy_buffers 4 64k;
            proxy_busy_buffers_size 128k;
            client_body_buffer_size 64k;
        }}
    }}
}}
"""


def start_nginx(
    procs: Processes, workdir: Path, upstream: Target, workers: int
) -> Target:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    directory = workdir / "nginx"
    directory.mkdir()
    user_line = ""
    if os.geteuid() == 0:
        # As root, nginx's workers would switch to "nobody", who cannot use our
        # temporary directories: keep them as the current user.
        user = pwd.getpwuid(os.geteuid()).pw_name
        group = grp.getgrgid(os.getegid()).gr_name
        user_line = f"user {user} {group};"
    port = free_port()
    upstream_port = int(upstream.base_url.rsplit(":", 1)[1])
    conf = directory / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            user_line=user_line,
            workers=workers,
            dir=directory,
            port=port,
            upstream_port=upstream_port,
        )
    )
    argv = [nginx, "-p", str(directory), "-e", str(directory / "error.log")]
    argv += ["-c", str(conf), "-g", "daemon off;"]
    target = Target("nginx", "nginx", base_url=f"http://127.0.0.1:{port}")
    target.child = procs.start("nginx", argv)
    target.info["worker_processes"] = workers
    check_answer(target, {})
    return target


def start_redis(procs: Processes, directory: Path, name: str) -> tuple[Child, int]:
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
    argv += ["--save", "", "--appendonly", "no", "--dir", str(directory)]
    child = procs.start(name, argv)
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.RedisError as error:
            if not child.alive() or time.monotonic() > deadline:
                raise TargetError(f"redis-server did not start: {error}") from None
            time.sleep(0.05)
        finally:
            client.close()
    return child, port


def redis_calls(port: int) -> int:
    """Commands the Redis on ``port`` has run so far, minus our own INFO calls."""
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return sum(
        int(entry["calls"]) for name, entry in stats.items() if name != "cmdstat_info"
    )


GATEWAY_YAML = """\
# Written by bench/bench.py for the benchmark case {name}.
listen: 127.0.0.1:{port}
store: {store}
pepper_env: PATGATE_PEPPER
token_prefix: pgt
workers: {workers}
cache: {{ttl: 30s, negative_ttl: 5s, max_entries: 100000, max_stale: 60s}}
{extra}
routes:
  - name: api
    prefix: /api/
    upstream: {upstream}
    methods: {{GET: "api:read"}}
  # /upload and /download, for the streaming case.
  - name: files
    prefix: /
    upstream: {upstream}
    methods: {{GET: "api:read", PUT: "api:read", POST: "api:read"}}
"""


def patgate_command(interpreter: str, config: Path, store: str) -> list[str]:
    return [interpreter, "-m", "patgate", "--config", str(config), "--store", store]


def patgate_env(store: str, pepper: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATGATE_STORE"] = store  # it overrides the config: pin it to ours
    env["PATGATE_PEPPER"] = pepper
    env.pop("PATGATE_CONFIG", None)
    return env


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def patgate_serve_available(workdir: Path, interpreter: str) -> tuple[bool, str]:
    """Whether this checkout has ``patgate serve``; if not, what the CLI said."""
    config = workdir / "probe.yaml"
    config.write_text("# probe\n")
    argv = [interpreter, "-m", "patgate", "--config", str(config), "serve", "--help"]
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, "serve --help timed out"
    if done.returncode != 0:
        return False, last_line(done.stderr)[:200] or f"exit {done.returncode}"
    return True, ""


def run_cli(
    command: list[str], args: list[str], env: dict[str, str], cwd: Path, stdin: str = ""
) -> str:
    done = subprocess.run(
        [*command, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        env=env,
        cwd=cwd,
        check=False,
    )
    if done.returncode != 0:
        # argv holds no secret; stderr is not trusted to be free of one.
        why = last_line(done.stderr) or f"exit {done.returncode}"
        shown = " ".join(args[:2])
        raise TargetError(f"patgate {shown} failed: {why[:200]}")
    return done.stdout


@dataclass(frozen=True)
class PatgateCase:
    name: str
    label: str
    store_kind: str  # sqlite | redis
    workers: int
    extra: str = ""  # more top-level gateway.yaml


def start_patgate(
    procs: Processes,
    workdir: Path,
    upstream: Target,
    case: PatgateCase,
    pepper: str,
    interpreter: str,
) -> Target:
    """Set up a store, a user and a token with patgate's CLI, then ``serve``.

    On failure the gateway is stopped and the error carries no credential.
    """
    target = Target(case.name, case.label)
    try:
        _start_patgate(procs, workdir, upstream, case, pepper, interpreter, target)
    except (TargetError, RuntimeError, OSError, TimeoutError) as error:
        for child in (target.child, target.redis_child):
            if child is not None:
                procs.stop(child)
        raise TargetError(redact(str(error), [target])) from None
    return target


def _start_patgate(
    procs: Processes,
    workdir: Path,
    upstream: Target,
    case: PatgateCase,
    pepper: str,
    interpreter: str,
    target: Target,
) -> None:
    directory = workdir / case.name
    directory.mkdir()
    target.workdir = directory
    if case.store_kind == "redis":
        target.redis_child, target.redis_port = start_redis(
            procs, directory, f"{case.name}-redis"
        )
        store = f"redis://127.0.0.1:{target.redis_port}/0"
    else:
        store = f"sqlite:///{directory / 'patgate.db'}"
    port = free_port()
    config = directory / "gateway.yaml"
    config.write_text(
        GATEWAY_YAML.format(
            name=case.name,
            port=port,
            store=store,
            workers=case.workers,
            upstream=upstream.base_url,
            extra=case.extra,
        )
    )
    command = patgate_command(interpreter, config, store)
    env = patgate_env(store, pepper)
    password = secrets.token_urlsafe(18)
    run_cli(
        command,
        ["user", "add", "bench", "-s", "api:read", "--password-stdin"],
        env,
        directory,
        stdin=password + "\n",
    )
    token = run_cli(
        command,
        ["token", "create", "-u", "bench", "-s", "api:read", "-q"],
        env,
        directory,
    ).strip()
    if not TOKEN_SHAPE.fullmatch(token):
        raise TargetError("token create -q printed something that is not a token")
    target.auth_headers = {"Authorization": f"Bearer {token}"}
    target.base_url = f"http://127.0.0.1:{port}"
    target.child = procs.start(case.name, [*command, "serve"], env=env, cwd=directory)
    target.info.update(store=case.store_kind, workers=case.workers)
    check_answer(target, target.auth_headers)
    status, _ = http_get(target.base_url + HELLO_PATH)
    target.info["status_without_token"] = status
    if status != 401:
        raise TargetError(
            f"auth not enforced: GET {HELLO_PATH} without token → {status}"
        )


def forward_auth_yaml(port: int) -> str:
    """The decision endpoint on its own listener, as deploy/forward-auth has it."""
    return (
        "trusted_proxies: [127.0.0.1/32]\n"
        f"forward_auth: {{path: /_patgate/auth, listen: 127.0.0.1:{port}}}"
    )


FORWARD_AUTH_NGINX = REPO_DIR / "deploy" / "forward-auth" / "nginx.conf"
FORWARD_AUTH_MAIN = """\
# Written by bench/bench.py: nginx in front of patgate's decision endpoint.
{user_line}
worker_processes {workers};
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy_temp;
    fastcgi_temp_path {dir}/fastcgi_temp;
    uwsgi_temp_path {dir}/uwsgi_temp;
    scgi_temp_path {dir}/scgi_temp;
    proxy_cache_path {dir}/decisions levels=1 keys_zone=patgate_decisions:10m;
    keepalive_requests 1000000;
    include {dir}/site.conf;
}}
"""


def forward_auth_site(patgate: str, upstream: str, port: int, cached: bool) -> str:
    """deploy/forward-auth/nginx.conf on these addresses; ``cached``: its cache on."""
    text = FORWARD_AUTH_NGINX.read_text()
    for old, new in (
        ("server 127.0.0.1:8082;", f"server {patgate};"),
        ("server 127.0.0.1:8081;", f"server {upstream};"),
        ("listen 80;", f"listen 127.0.0.1:{port} backlog=1024;"),
    ):
        if text.count(old) != 1:
            raise TargetError(f"{FORWARD_AUTH_NGINX.name} no longer holds {old!r}")
        text = text.replace(old, new)
    if cached:
        if "#cache " not in text:
            raise TargetError(f"{FORWARD_AUTH_NGINX.name} has no '#cache ' lines")
        text = text.replace("#cache ", "")
    return text


def start_forward_auth(
    procs: Processes,
    workdir: Path,
    upstream: Target,
    patgate: Target,
    name: str,
    label: str,
    *,
    cached: bool,
    workers: int,
) -> Target:
    """nginx (the shipped forward-auth config) in front of ``patgate``'s endpoint
    (or the decision stub's)."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    directory = workdir / name
    directory.mkdir()
    user_line = ""
    if os.geteuid() == 0:
        user = pwd.getpwuid(os.geteuid()).pw_name
        group = grp.getgrgid(os.getegid()).gr_name
        user_line = f"user {user} {group};"
    port = free_port()
    site = forward_auth_site(
        patgate.decisions,
        upstream.base_url.split("://", 1)[1],
        port,
        cached,
    )
    (directory / "site.conf").write_text(site)
    conf = directory / "nginx.conf"
    conf.write_text(
        FORWARD_AUTH_MAIN.format(user_line=user_line, workers=workers, dir=directory)
    )
    argv = [nginx, "-p", str(directory), "-e", str(directory / "error.log")]
    argv += ["-c", str(conf), "-g", "daemon off;"]
    target = Target(name, label, base_url=f"http://127.0.0.1:{port}")
    target.auth_headers = dict(patgate.auth_headers)
    target.child = procs.start(name, argv)
    if patgate.child is not None:
        target.companions.append(patgate.child)
    target.info.update(worker_processes=workers, decision_cache_s=1 if cached else 0)
    check_answer(target, target.auth_headers)
    status, _ = http_get(target.base_url + HELLO_PATH)
    target.info["status_without_token"] = status
    if status != 401:
        raise TargetError(
            f"auth not enforced: GET {HELLO_PATH} without token → {status}"
        )
    return target


def describe_failure(
    target: Target, error: BaseException, targets: list[Target]
) -> str:
    return redact(str(error), [*targets, target])
