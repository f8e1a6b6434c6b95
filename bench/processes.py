"""The benchmark's child processes: start, watch and always stop them.

Every child runs in a process group of its own (``start_new_session``), so stopping
it reaches the workers it forked too: SIGTERM to the group, a bounded wait, then
SIGKILL. ``Processes`` keeps every child it started and stops them all in its
``close``, which the harness calls from ``finally`` (Ctrl-C and SIGTERM included).

CPU time and memory come from ``/proc`` (no psutil): the sum over a process and all
of its descendants, so an nginx master with its worker, or a gateway with several
worker processes, is measured whole.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
RESERVED_PORTS = frozenset({6379})  # the machine's own Redis: never ours
ERROR_WORDS = re.compile(r"error|exception|traceback", re.IGNORECASE)


class ChildExitedError(RuntimeError):
    """A child stopped before it was ready."""


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def last_error(self, width: int = 200) -> str:
        """The end of the last log line that mentions an error (else the last line).

        A traceback ends with its exception, also inside a one-line JSON record.
        """
        lines = self.log_tail(400).splitlines()
        errors = [line for line in lines if ERROR_WORDS.search(line)]
        chosen = (errors or lines or [""])[-1].rstrip('"}').replace("\\n", " | ")
        return chosen[-width:]

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Processes:
    """Starts children with their output in log files; stops every one of them."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.children: list[Child] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Child:
        log_path = self.workdir / f"{name}.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
            )
        child = Child(name, proc, log_path)
        self.children.append(child)
        return child

    def stop(self, child: Child, grace: float = 5.0) -> None:
        """SIGTERM the child's group, wait up to ``grace`` s, then SIGKILL it."""
        pgid = child.pid  # start_new_session: the child leads its own group
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            child.proc.poll()  # reap the leader, or it lingers as a zombie member
            if not _group_exists(pgid):
                break
            time.sleep(0.05)
        else:
            _signal_group(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.proc.wait(timeout=grace)
        if child in self.children:
            self.children.remove(child)

    def close(self) -> None:
        for child in reversed(list(self.children)):
            self.stop(child)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (never 6379)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in RESERVED_PORTS:
            return port


def _read_stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after it.
    return raw[raw.rindex(")") + 2 :].split()


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _read_stat(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def process_tree(pid: int) -> list[int]:
    """``pid`` and all of its living descendants."""
    children = _children_map()
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time consumed so far by the given processes."""
    ticks = 0
    for pid in pids:
        fields = _read_stat(pid)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / CLOCK_TICKS


def tree_cpu_seconds(pid: int) -> float:
    return cpu_seconds(process_tree(pid))


def machine_busy_seconds() -> float:
    """CPU time the whole machine has spent busy (all cores, idle and iowait out)."""
    with open("/proc/stat") as stat:
        fields = [int(n) for n in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def reaped_children_cpu_seconds() -> float:
    """CPU time of this process's children that have exited and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class BackgroundMeter:
    """How much CPU the rest of the machine took while we measured.

    Other work on this machine (another test suite, a build) competes with wrk,
    the upstream and the proxy for the same cores and skews a comparison: the
    machine's busy time minus our own process tree's (this process, every
    child, and the children already reaped, such as a finished wrk).
    """

    def __init__(self) -> None:
        self.pids = process_tree(os.getpid())
        self.start = time.monotonic()
        self.busy = machine_busy_seconds()
        self.ours = cpu_seconds(self.pids) + reaped_children_cpu_seconds()

    def cores(self) -> float:
        """Cores' worth of CPU used by others since the meter started."""
        elapsed = time.monotonic() - self.start
        busy = machine_busy_seconds() - self.busy
        ours = cpu_seconds(self.pids) + reaped_children_cpu_seconds() - self.ours
        return max(0.0, busy - ours) / elapsed if elapsed > 0 else 0.0


def rss_bytes(pids: Sequence[int]) -> int:
    """The sum of VmRSS over the given processes."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
                break
    return total


def http_get(
    url: str, headers: Mapping[str, str] | None = None, timeout: float = 5.0
) -> tuple[int, bytes]:
    """GET ``url``; any status (4xx/5xx included) comes back, not raised."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wait_http(
    child: Child,
    url: str,
    headers: Mapping[str, str] | None = None,
    *,
    want: int = 200,
    timeout: float = 20.0,
) -> tuple[int, bytes]:
    """Poll ``url`` until it answers ``want``, or give up and return the last answer.

    Raises when ``child`` exits, or when nothing answered at all before ``timeout``.
    """
    deadline = time.monotonic() + timeout
    last: tuple[int, bytes] | None = None
    last_failure = "no answer"
    while time.monotonic() < deadline:
        if not child.alive():
            code = child.proc.returncode
            why = child.last_error()
            raise ChildExitedError(f"{child.name} exited with code {code}: {why}")
        try:
            last = http_get(url, headers, timeout=2.0)
        except (OSError, urllib.error.URLError) as error:
            last_failure = str(error)
        else:
            if last[0] == want:
                return last
        time.sleep(0.1)
    if last is not None:
        return last
    raise TimeoutError(
        f"{child.name} not listening after {timeout:.0f} s: {last_failure}"
    )


def wait_for_quiet(threshold: float, budget: float, window: float = 1.0) -> float:
    """Wait (at most ``budget`` s) for a ``window`` in which other processes use
    less than ``threshold`` cores; return the last window's figure."""
    deadline = time.monotonic() + budget
    while True:
        meter = BackgroundMeter()
        time.sleep(window)
        cores = meter.cores()
        if cores < threshold or time.monotonic() >= deadline:
            return cores
