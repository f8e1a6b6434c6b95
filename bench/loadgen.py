"""Load generators: wrk for request rate and latency, curl for large transfers.

Both run as children of ``Processes`` (so Ctrl-C stops them), write their output to
a file, and are bounded in time. Credentials never appear on a command line: wrk
gets them from a Lua script and curl from a header file, both mode 0600.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from processes import Processes, rss_bytes

LATENCY_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
SAFE_HEADER_VALUE = re.compile(r"[A-Za-z0-9_ .:/+=-]+")


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx_3xx: int
    socket_errors: int


def parse_latency(text: str) -> float:
    """``'1.23ms'`` → 1.23 (milliseconds)."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:
        raise ValueError(f"unknown wrk latency {text!r}")
    return float(match.group(1)) * LATENCY_UNITS[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    """Read the figures out of ``wrk --latency`` output."""
    totals = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)", output)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE)
    if not (totals and rps and p50 and p99):
        raise ValueError("wrk printed no figures:\n" + output[-2000:])
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return WrkResult(
        requests=int(totals.group(1)),
        seconds=parse_latency(totals.group(2) + totals.group(3)) / 1e3,
        rps=float(rps.group(1)),
        p50_ms=parse_latency(p50.group(1)),
        p99_ms=parse_latency(p99.group(1)),
        non_2xx_3xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
    )


def write_secret(path: Path, text: str) -> Path:
    """Write a file only the current user can read."""
    path.touch(mode=0o600, exist_ok=False)
    path.write_text(text)
    return path


def wrk_script(path: Path, headers: Mapping[str, str]) -> Path:
    """A wrk Lua script that sets request headers (so they stay off argv)."""
    lines = []
    for name, value in headers.items():
        if not (
            SAFE_HEADER_VALUE.fullmatch(name) and SAFE_HEADER_VALUE.fullmatch(value)
        ):
            raise ValueError(f"header {name} has characters the Lua script won't quote")
        lines.append(f'wrk.headers["{name}"] = "{value}"\n')
    return write_secret(path, "".join(lines))


def curl_header_file(path: Path, headers: Mapping[str, str]) -> Path:
    text = "".join(f"{name}: {value}\n" for name, value in headers.items())
    return write_secret(path, text)


def run_wrk(
    procs: Processes,
    name: str,
    url: str,
    *,
    threads: int,
    connections: int,
    seconds: int,
    script: Path | None = None,
) -> WrkResult:
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script is not None:
        argv += ["-s", str(script)]
    child = procs.start(name, [*argv, url])
    try:
        child.proc.wait(timeout=seconds + 30)
    finally:
        procs.stop(child)
    output = child.log_path.read_text(errors="replace")
    child.log_path.unlink()
    if child.proc.returncode != 0:
        why = output.strip().splitlines()[:1] or ["no output"]
        raise RuntimeError(f"wrk exited {child.proc.returncode}: {why[0][:200]}")
    return parse_wrk(output)


@dataclass(frozen=True)
class Transfer:
    http_code: int
    size: int
    seconds: float
    rss_before: int
    rss_peak: int
    reply: bytes

    @property
    def mb_per_s(self) -> float:
        return self.size / self.seconds / 1e6 if self.seconds > 0 else 0.0

    @property
    def rss_growth(self) -> int:
        return max(0, self.rss_peak - self.rss_before)


def run_curl(
    procs: Processes,
    name: str,
    curl_args: Sequence[str],
    *,
    watch: Sequence[int],
    timeout: float,
    sample_every: float = 0.05,
) -> Transfer:
    """Run one curl transfer, sampling the RSS of ``watch`` every 50 ms meanwhile."""
    reply_path = procs.workdir / f"{name}.reply"
    argv = [
        "curl",
        "--silent",
        "--show-error",
        "--max-time",
        f"{timeout:g}",
        "--output",
        str(reply_path),
        "--write-out",
        "%{http_code} %{size_upload} %{size_download} %{time_total}\\n",
        *curl_args,
    ]
    rss_before = rss_peak = rss_bytes(watch)
    child = procs.start(name, argv)
    try:
        while child.proc.poll() is None:
            rss_peak = max(rss_peak, rss_bytes(watch))
            time.sleep(sample_every)
    finally:
        procs.stop(child)
    output = child.log_path.read_text(errors="replace")
    child.log_path.unlink()
    reply = reply_path.read_bytes()[:4096] if reply_path.exists() else b""
    reply_path.unlink(missing_ok=True)
    if child.proc.returncode != 0:
        raise RuntimeError(
            f"curl exited {child.proc.returncode}: {output.strip()[-300:]}"
        )
    code, up, down, total = output.split()[-4:]
    return Transfer(
        http_code=int(code),
        size=max(int(float(up)), int(float(down))),
        seconds=float(total),
        rss_before=rss_before,
        rss_peak=rss_peak,
        reply=reply,
    )
