"""Measuring: one wrk run or one pair of 1 GiB transfers per target and round.

``run_requests`` drives every ready target with wrk (warm-up, then a timed run
with the CPU time of its process tree, its Redis commands and its log output
counted); ``run_streaming`` uploads and downloads through the proxies with curl
while their RSS is sampled. Both run ``--repeat`` rounds in alternating order and
keep medians (for memory: the worst round). Failures become rows, never crashes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import report
from loadgen import Transfer, curl_header_file, run_curl, run_wrk, wrk_script
from processes import BackgroundMeter, Processes, cpu_seconds, wait_for_quiet
from targets import HELLO_PATH, Target, redact, redis_calls

STREAM_TARGETS = ("direct", "nginx", "plain", "patgate-sqlite")
MIB = 1024 * 1024


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def settle(args: argparse.Namespace) -> None:
    """With --wait-quiet, wait for other processes to calm down before measuring."""
    if args.wait_quiet > 0:
        cores = wait_for_quiet(report.BUSY_MACHINE, args.wait_quiet)
        if cores >= report.BUSY_MACHINE:
            log(f"still busy after {args.wait_quiet:g} s: others use {cores:.2f} cores")


def log_size(target: Target) -> int:
    """Bytes the target has written to its stdout/stderr so far (its access log)."""
    try:
        return target.child.log_path.stat().st_size if target.child else 0
    except OSError:
        return 0


def measure_requests(
    procs: Processes, workdir: Path, target: Target, args: argparse.Namespace
) -> dict[str, float | int]:
    """Warm up, then one timed wrk run with CPU (and Redis commands) counted."""
    script = None
    if target.auth_headers:
        script = workdir / f"{target.name}.lua"
        if not script.exists():
            wrk_script(script, target.auth_headers)
    url = target.base_url + HELLO_PATH
    drive = {"threads": args.threads, "connections": args.connections, "script": script}
    if args.warmup > 0:
        run_wrk(procs, f"wrk-warmup-{target.name}", url, seconds=args.warmup, **drive)
    settle(args)
    pids = target.pids()
    redis_before = redis_calls(target.redis_port) if target.redis_port else 0
    log_before = log_size(target)
    background = BackgroundMeter()
    cpu_before = cpu_seconds(pids)
    result = run_wrk(procs, f"wrk-{target.name}", url, seconds=args.duration, **drive)
    cpu = cpu_seconds(pids) - cpu_before
    background_cores = background.cores()
    figures: dict[str, float | int] = {
        "rps": result.rps,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "cpu_us_per_req": cpu / result.requests * 1e6 if result.requests else 0.0,
        "cpu_seconds": cpu,
        "requests": result.requests,
        "non_2xx_3xx": result.non_2xx_3xx,
        "socket_errors": result.socket_errors,
        "processes": len(pids),
        "background_cores": background_cores,
        "log_bytes_per_req": (log_size(target) - log_before) / max(result.requests, 1),
    }
    if target.redis_port:
        calls = redis_calls(target.redis_port) - redis_before
        figures["redis_commands_per_req"] = calls / max(result.requests, 1)
    return figures


def median_figures(rounds: list[dict[str, float | int]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for key in rounds[0]:
        values = [r[key] for r in rounds if key in r]
        merged[key] = statistics.median(values)
    merged["rounds"] = len(rounds)
    # Each round's req/s, in order: rows of one round were measured minutes
    # apart at most, so their ratio, round by round, drifts less.
    merged["rps_rounds"] = [r["rps"] for r in rounds]
    return merged


def run_requests(
    procs: Processes, workdir: Path, targets: list[Target], args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    ready = [t for t in targets if t.ready]
    rounds: dict[str, list[dict[str, float | int]]] = {t.name: [] for t in ready}
    for number in range(args.repeat):
        order = ready if number % 2 == 0 else list(reversed(ready))
        for target in order:
            log(f"round {number + 1}/{args.repeat}: wrk {target.name}")
            try:
                rounds[target.name].append(
                    measure_requests(procs, workdir, target, args)
                )
            except (RuntimeError, ValueError, OSError) as error:
                target.status, target.reason = "error", redact(str(error), targets)
                log(f"{target.name}: {target.reason}")
    return {name: median_figures(r) for name, r in rounds.items() if r}


def transfer_figures(transfer: Transfer, background: float) -> dict[str, float | int]:
    return {
        "background_cores": background,
        "mb_per_s": transfer.mb_per_s,
        "seconds": transfer.seconds,
        "bytes": transfer.size,
        "rss_before_mib": transfer.rss_before / MIB,
        "rss_peak_mib": transfer.rss_peak / MIB,
        "rss_growth_mib": transfer.rss_growth / MIB,
    }


def received(reply: bytes) -> int | None:
    """The byte count in the upstream's ``{"received": N}`` answer, if it is one."""
    try:
        answer = json.loads(reply)
    except ValueError:
        return None
    return answer.get("received") if isinstance(answer, dict) else None


def measure_streaming(
    procs: Processes, workdir: Path, target: Target, source: Path, size: int
) -> dict[str, dict[str, float | int]]:
    headers: list[str] = ["--header", "Expect:"]  # no 1 s wait for 100-continue
    if target.auth_headers:
        header_file = workdir / f"{target.name}.headers"
        if not header_file.exists():
            curl_header_file(header_file, target.auth_headers)
        headers += ["--header", f"@{header_file}"]
    watch = target.pids()
    timeout = max(120.0, size / 20e6)  # bounded even at 20 MB/s
    meter = BackgroundMeter()
    upload = run_curl(
        procs,
        f"curl-up-{target.name}",
        [*headers, "--upload-file", str(source), target.base_url + "/upload"],
        watch=watch,
        timeout=timeout,
    )
    if upload.http_code != 200 or received(upload.reply) != size:
        raise RuntimeError(
            f"upload answered {upload.http_code}: {upload.reply[:200]!r}"
        )
    upload_background, meter = meter.cores(), BackgroundMeter()
    download = run_curl(
        procs,
        f"curl-down-{target.name}",
        [*headers, f"{target.base_url}/download?size={size}"],
        watch=watch,
        timeout=timeout,
    )
    if download.http_code != 200 or download.size != size:
        raise RuntimeError(
            f"download answered {download.http_code} with {download.size} bytes"
        )
    return {
        "upload": transfer_figures(upload, upload_background),
        "download": transfer_figures(download, meter.cores()),
    }


def run_streaming(
    procs: Processes, workdir: Path, targets: list[Target], args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    size = args.stream_mib * MIB
    source = workdir / "upload.bin"
    with source.open("wb") as handle:
        handle.truncate(size)  # sparse: reads as zeros, takes no disk
    streamed = [t for t in targets if t.name in STREAM_TARGETS]
    results: dict[str, dict[str, Any]] = {
        t.name: {"status": t.status, "reason": t.reason}
        for t in streamed
        if not t.ready
    }
    rounds: dict[str, list[dict[str, dict[str, float | int]]]] = {}
    for number in range(args.repeat):
        order = streamed if number % 2 == 0 else list(reversed(streamed))
        for target in order:
            if not target.ready or target.name in results:
                continue
            log(
                f"round {number + 1}/{args.repeat}: {args.stream_mib} MiB up and down "
                f"through {target.name}"
            )
            settle(args)
            try:
                figures = measure_streaming(procs, workdir, target, source, size)
            except (RuntimeError, ValueError, OSError) as error:
                reason = redact(str(error), targets)
                results[target.name] = {"status": "error", "reason": reason}
                log(f"{target.name}: streaming failed: {reason}")
            else:
                rounds.setdefault(target.name, []).append(figures)
    source.unlink()
    for name, measured in rounds.items():
        if name not in results:
            results[name] = {
                direction: merge_transfers([m[direction] for m in measured])
                for direction in ("upload", "download")
            }
    return {t.name: results[t.name] for t in streamed if t.name in results}


def merge_transfers(rounds: list[dict[str, float | int]]) -> dict[str, float | int]:
    """Median throughput over the rounds, but the worst memory growth of any."""
    merged = median_figures(rounds)
    for key in ("rss_peak_mib", "rss_growth_mib"):
        merged[key] = max(r[key] for r in rounds)
    return merged
