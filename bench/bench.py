"""patgate's benchmark: what the gateway costs next to a plain proxy and nginx.

One run starts, on free 127.0.0.1 ports: the upstream (``upstream.py``), nginx as a
plain proxy, the plain aiohttp proxy (``plain_proxy.py``), a ``redis-server`` of its
own per Redis case, patgate on SQLite, on Redis, and on Redis with two workers, and
nginx in front of patgate's decision endpoint (``fwd-auth``; ``fwd-auth-cached``
with the shipped config's 1 s decision cache on), patgate on SQLite deciding.
Each target is warmed up, then driven with ``wrk --latency`` for a fixed time while
the CPU time of its process tree is read from ``/proc``. Then 1 GiB is uploaded and
downloaded through the proxies with curl while their RSS is sampled every 50 ms.

It prints one table per case and a check of issue 6's targets, and writes every
figure to ``bench/results/latest.json``. Compare figures only within one run: on a
2-core machine that wrk, upstream and proxy share, absolute numbers swing 20-30%.

    bench/run                      # set-up (wrk, nginx) + the whole run, ~2-3 min
    bench/run --duration 5 --no-streaming
    bench/run --streaming          # only the 1 GiB upload/download case
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import functools
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType

import aiohttp

import report
from measure import log, run_requests, run_streaming
from processes import Processes, free_port
from targets import (
    BENCH_DIR,
    PATGATE_UNAVAILABLE,
    REPO_DIR,
    PatgateCase,
    Target,
    TargetError,
    describe_failure,
    forward_auth_yaml,
    patgate_serve_available,
    start_decision_stub,
    start_forward_auth,
    start_nginx,
    start_patgate,
    start_plain_proxy,
    start_upstream,
)

PATGATE_CASES = (
    PatgateCase("patgate-sqlite", "patgate sqlite", "sqlite", 1),
    PatgateCase("patgate-redis", "patgate redis", "redis", 1),
    PatgateCase("patgate-redis-w2", "patgate redis workers=2", "redis", 2),
)
# nginx + patgate's decision endpoint: (name, label, decision cache on).
FORWARD_AUTH_CASES = (
    ("fwd-auth", "nginx + patgate decision", False),
    ("fwd-auth-cached", "nginx + decision, 1 s cache", True),
)
FORWARD_AUTH_PATGATE = PatgateCase("fwd-auth-patgate", "patgate deciding", "sqlite", 1)
# The same nginx asking issue 13's reference, a minimal aiohttp decision stub.
STUB_CASE = ("fwd-stub", "nginx + aiohttp stub (ref)")
ALL_TARGETS = (
    "direct",
    "nginx",
    "plain",
    *(case.name for case in PATGATE_CASES),
    *(name for name, _, _ in FORWARD_AUTH_CASES),
    STUB_CASE[0],
)
REQUIRED_TOOLS = ("wrk", "nginx", "curl", "redis-server")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark patgate against a plain aiohttp proxy and nginx.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up")
    parser.add_argument("--connections", type=int, default=50, help="wrk -c")
    parser.add_argument("--threads", type=int, default=2, help="wrk -t")
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds (alternating order); medians"
    )
    parser.add_argument(
        "--targets",
        default=",".join(ALL_TARGETS),
        help=f"comma-separated subset of {','.join(ALL_TARGETS)}",
    )
    parser.add_argument(
        "--nginx-workers", type=int, default=1, help="nginx worker_processes"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--streaming", action="store_true", help="only the 1 GiB case")
    mode.add_argument("--no-streaming", action="store_true", help="skip the 1 GiB case")
    parser.add_argument(
        "--stream-mib", type=int, default=1024, help="MiB per upload and download"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=BENCH_DIR / "results" / "latest.json",
        help="where the results go",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="SECONDS",
        help="before each measurement, wait up to this long for other processes "
        "to leave the CPUs alone (0: don't wait, only report their load)",
    )
    parser.add_argument("--keep-tmp", action="store_true", help="keep logs and configs")
    parser.add_argument(
        "--patgate-python",
        default=sys.executable,
        help="the interpreter that runs `-m patgate`",
    )
    args = parser.parse_args(argv)
    args.targets = [name.strip() for name in args.targets.split(",") if name.strip()]
    unknown = set(args.targets) - set(ALL_TARGETS)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    if args.duration < 1 or args.warmup < 0 or args.repeat < 1 or args.stream_mib < 1:
        parser.error("--duration, --repeat and --stream-mib must be ≥ 1, --warmup ≥ 0")
    return args


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP end the run through every ``finally``.

    SIGINT too, explicitly: a shell starts a background job with SIGINT ignored.
    """

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    caught = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, interrupt) for sig in caught}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def start_targets(
    procs: Processes, workdir: Path, args: argparse.Namespace
) -> tuple[Target, list[Target], dict[str, object]]:
    """Start the upstream and every selected target; failures become rows."""
    upstream = start_upstream(procs)
    log(f"upstream on {upstream.base_url}")
    wanted = set(args.targets)
    targets: list[Target] = []
    if "direct" in wanted:
        targets.append(upstream)
    starters = {
        "nginx": lambda: start_nginx(procs, workdir, upstream, args.nginx_workers),
        "plain": lambda: start_plain_proxy(procs, upstream),
    }
    for name, start in starters.items():
        if name in wanted:
            targets.append(start_guarded(name, name, start, targets))
    available, detail = patgate_serve_available(workdir, args.patgate_python)
    patgate: dict[str, object] = {"serve": "available"}
    if not available:
        patgate = {"serve": PATGATE_UNAVAILABLE, "detail": detail}
        log(f"{PATGATE_UNAVAILABLE}: {detail}")
    pepper = secrets.token_hex(16)
    for case in PATGATE_CASES:
        if case.name not in wanted:
            continue
        if not available:
            pending = Target(case.name, case.label, "pending", PATGATE_UNAVAILABLE)
            targets.append(pending)
            continue
        start = functools.partial(
            start_patgate, procs, workdir, upstream, case, pepper, args.patgate_python
        )
        targets.append(start_guarded(case.name, case.label, start, targets))
    targets += start_forward_auth_targets(procs, workdir, upstream, args, available)
    if STUB_CASE[0] in wanted:
        targets.append(start_stub_target(procs, workdir, upstream, args))
    for target in targets:
        state = target.base_url if target.ready else f"{target.status}: {target.reason}"
        log(f"{target.name}: {state}")
    return upstream, targets, patgate


def start_forward_auth_targets(
    procs: Processes,
    workdir: Path,
    upstream: Target,
    args: argparse.Namespace,
    available: bool,
) -> list[Target]:
    """nginx in front of one patgate's decision endpoint, per wanted case."""
    cases = [case for case in FORWARD_AUTH_CASES if case[0] in args.targets]
    if not cases:
        return []
    if not available:
        return [
            Target(name, label, "pending", PATGATE_UNAVAILABLE)
            for name, label, _ in cases
        ]
    decisions = free_port()
    case = dataclasses.replace(FORWARD_AUTH_PATGATE, extra=forward_auth_yaml(decisions))
    start = functools.partial(
        start_patgate,
        procs,
        workdir,
        upstream,
        case,
        secrets.token_hex(16),
        args.patgate_python,
    )
    decider = start_guarded(case.name, case.label, start, [])
    decider.decisions = f"127.0.0.1:{decisions}"
    targets = []
    for name, label, cached in cases:
        if not decider.ready:
            targets.append(Target(name, label, "error", decider.reason))
            continue
        start = functools.partial(
            start_forward_auth,
            procs,
            workdir,
            upstream,
            decider,
            name,
            label,
            cached=cached,
            workers=args.nginx_workers,
        )
        targets.append(start_guarded(name, label, start, [decider]))
    return targets


def start_stub_target(
    procs: Processes, workdir: Path, upstream: Target, args: argparse.Namespace
) -> Target:
    """nginx, as for ``fwd-auth``, in front of the decision stub."""
    name, label = STUB_CASE
    stub = start_guarded("decision-stub", label, lambda: start_decision_stub(procs), [])
    if not stub.ready:
        return Target(name, label, "error", stub.reason)
    start = functools.partial(
        start_forward_auth,
        procs,
        workdir,
        upstream,
        stub,
        name,
        label,
        cached=False,
        workers=args.nginx_workers,
    )
    return start_guarded(name, label, start, [])


def start_guarded(
    name: str, label: str, start: Callable[[], Target], targets: list[Target]
) -> Target:
    """``start()``, or a row that says why it failed (credentials redacted)."""
    try:
        return start()
    except (TargetError, RuntimeError, OSError, TimeoutError) as error:
        failed = Target(name, label, status="error")
        failed.reason = describe_failure(failed, error, targets)
        return failed


def tool_version(argv: list[str]) -> str:
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return ((done.stdout or "") + (done.stderr or "")).strip().splitlines()[0][:80]


def run_meta(args: argparse.Namespace, patgate: dict[str, object]) -> dict[str, object]:
    try:
        import uvloop

        uvloop_version = str(getattr(uvloop, "__version__", "?"))
    except ImportError:
        uvloop_version = "not installed"
    return {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": tool_version(
            ["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"]
        ),
        "cpus": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "uvloop": uvloop_version,
        "wrk": tool_version(["wrk", "--version"]),
        "nginx": tool_version(["nginx", "-v"]),
        "redis": tool_version(["redis-server", "--version"]),
        "patgate": patgate,
        "params": {
            "threads": args.threads,
            "connections": args.connections,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "repeat": args.repeat,
            "nginx_workers": args.nginx_workers,
            "stream_mib": args.stream_mib,
            "wait_quiet_s": args.wait_quiet,
        },
    }


def missing_tools() -> list[str]:
    return [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    missing = missing_tools()
    if missing:
        log(f"missing {', '.join(missing)}: run bench/run, which installs them")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="patgate-bench-"))
    procs = Processes(workdir)
    try:
        with signals_raise():
            return run(procs, workdir, args)
    except KeyboardInterrupt:
        log("interrupted; stopping everything")
        return 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # let the (bounded) clean-up finish
        procs.close()
        if args.keep_tmp:
            log(f"logs and configs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def run(procs: Processes, workdir: Path, args: argparse.Namespace) -> int:
    _, targets, patgate = start_targets(procs, workdir, args)
    requests = None if args.streaming else run_requests(procs, workdir, targets, args)
    streaming = (
        None if args.no_streaming else run_streaming(procs, workdir, targets, args)
    )
    results = report.build(targets, requests, streaming, run_meta(args, patgate))
    print(report.render(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    log(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
