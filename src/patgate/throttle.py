"""Counting things per key in fixed windows: failed logins and failed auth per IP.

Pure: the caller passes ``now``. Bounded: when more than ``max_keys`` keys are
tracked, the ones whose window has passed are dropped, then the oldest.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class _Window:
    start: float
    count: int


class FailureThrottle:
    """Refuse a key for the rest of its window once it failed ``limit`` times."""

    def __init__(self, limit: int, window: float = 60.0, max_keys: int = 100_000):
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._windows: dict[str, _Window] = {}

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until ``key`` may try again; 0.0 when it may now."""
        if self.limit <= 0:
            return 0.0
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

    def forget(self, key: str) -> None:
        self._windows.pop(key, None)

    def _prune(self, now: float) -> None:
        for key, window in list(self._windows.items()):
            if now - window.start >= self.window:
                del self._windows[key]
        while len(self._windows) >= self.max_keys:
            del self._windows[next(iter(self._windows))]
