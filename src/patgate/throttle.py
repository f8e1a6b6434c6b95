"""Counting things per key in fixed windows: failed auth and password checks per IP.

:class:`FailureThrottle` counts the gateway's failed token checks in this
process; :class:`LoginThrottle` reserves management password checks in the
store's shared counters before they run. The caller passes ``now``. Bounded:
when more than ``max_keys`` keys are tracked, the ones whose window has
passed are dropped, then the oldest.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from patgate.store.base import RateVerdict


@dataclass(slots=True)
class _Window:
    start: float
    count: int


class FailureThrottle:
    """Refuse a key for the rest of its window once it failed ``limit`` times.

    Counted in this process; :meth:`block` adds what a shared count found
    (the gate asks the store's counter on each failure, so every worker and
    replica refuses an address that failed too often anywhere).
    """

    def __init__(self, limit: int, window: float = 60.0, max_keys: int = 100_000):
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._windows: dict[str, _Window] = {}
        self._blocked: dict[str, float] = {}  # until when a shared count refused

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until ``key`` may try again; 0.0 when it may now."""
        if self.limit <= 0:
            return 0.0
        if self._blocked:
            until = self._blocked.get(key)
            if until is not None:
                if now < until:
                    return until - now
                del self._blocked[key]
        window = self._windows.get(key)
        if window is None or window.count < self.limit:
            return 0.0
        remaining = window.start + self.window - now
        if remaining <= 0:
            del self._windows[key]
            return 0.0
        return remaining

    def note_failure(self, key: str, now: float) -> None:
        window = self._windows.get(key)
        if window is None or now - window.start >= self.window:
            if len(self._windows) >= self.max_keys:
                self._prune(now)
            self._windows[key] = _Window(start=now, count=1)
        else:
            window.count += 1

    def block(self, key: str, until: float) -> None:
        """Refuse ``key`` until ``until``: its shared count is over the limit."""
        if len(self._blocked) >= self.max_keys:
            for other in [k for k, end in self._blocked.items() if end <= until]:
                del self._blocked[other]
        self._blocked[key] = until

    def forget(self, key: str) -> None:
        self._windows.pop(key, None)
        self._blocked.pop(key, None)

    def _prune(self, now: float) -> None:
        for key, window in list(self._windows.items()):
            if now - window.start >= self.window:
                del self._windows[key]
        while len(self._windows) >= self.max_keys:
            del self._windows[next(iter(self._windows))]


class ThrottledError(Exception):
    """A password check refused before it ran; retry after ``retry_after`` s."""

    def __init__(self, retry_after: float, reason: str) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.reason = reason


class RateCounter(Protocol):
    """The part of the Store protocol a LoginThrottle needs."""

    async def take_rate(
        self, key: str, limit: int, window: int, now: float
    ) -> RateVerdict: ...


class LoginThrottle:
    """Password checks per client address: reserved before they run.

    SECURITY: online password guessing. Each check takes one unit of the
    address's budget (``limit`` per ``window`` seconds) *before* the password
    hash is verified, from the store's shared counter, so concurrent guesses
    cannot all pass a check made before any of them failed, and every worker
    and replica draws on the same budget. Nothing is refunded: a right password
    costs a unit too. The budget bounds password-hash work per address (each
    check is ~0.1 s of CPU and 64 MiB), and a refund could not be atomic with
    the store's fixed-window counters.

    Two process-local shortcuts keep a flood off the store and the CPU: an
    address that the store (or this process's own count) put over its budget
    is refused here until its window ends, and at most ``concurrent`` checks
    per address run at once in this process.

    The caller passes ``now``; windows are aligned as the store aligns them.
    """

    def __init__(
        self,
        counter: RateCounter,
        limit: int,
        *,
        window: int = 60,
        concurrent: int = 2,
        max_keys: int = 100_000,
    ) -> None:
        self.counter = counter
        self.limit = limit
        self.window = window
        self.concurrent = concurrent
        self.max_keys = max_keys
        self._spent: dict[str, _Window] = {}  # this process's count per window
        self._blocked: dict[str, float] = {}  # until when the store refused
        self._running: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def check(self, key: str, now: float) -> AsyncIterator[None]:
        """Reserve one check for ``key``; raise ThrottledError if it may not run."""
        if self.limit <= 0:
            yield
            return
        self._refuse_locally(key, now)
        running = self._running.get(key, 0)
        if running >= self.concurrent:
            raise ThrottledError(1.0, "concurrent")
        self._running[key] = running + 1
        try:
            await self._reserve(key, now)
            yield
        finally:
            self._release(key)

    def _refuse_locally(self, key: str, now: float) -> None:
        until = self._blocked.get(key)
        if until is not None:
            if now < until:
                raise ThrottledError(until - now, "over_limit")
            del self._blocked[key]
        spent = self._spent.get(key)
        start = self._window_start(now)
        if spent is not None and spent.start == start and spent.count >= self.limit:
            raise ThrottledError(start + self.window - now, "over_limit")

    async def _reserve(self, key: str, now: float) -> None:
        verdict = await self.counter.take_rate(
            f"login:{key}", self.limit, self.window, now
        )
        if not verdict.allowed:
            self._make_room(self._blocked, lambda until: until > now)
            self._blocked[key] = now + verdict.retry_after
            raise ThrottledError(verdict.retry_after, "over_limit")
        start = self._window_start(now)
        spent = self._spent.get(key)
        if spent is None or spent.start != start:
            self._make_room(self._spent, lambda spent: spent.start == start)
            self._spent[key] = _Window(start=start, count=1)
        else:
            spent.count += 1

    def _release(self, key: str) -> None:
        running = self._running[key] - 1
        if running:
            self._running[key] = running
        else:
            del self._running[key]

    def _window_start(self, now: float) -> float:
        return float(int(now // self.window) * self.window)

    def _make_room(self, table: dict[str, Any], alive: Callable[[Any], bool]) -> None:
        """Keep ``table`` under ``max_keys``: drop what has passed, then the oldest."""
        if len(table) < self.max_keys:
            return
        for key in [key for key, value in table.items() if not alive(value)]:
            del table[key]
        while len(table) >= self.max_keys:
            del table[next(iter(table))]
