"""Coalescing of usage writes: many uses of a token become one store write.

The gateway notes every allowed request here; a background task drains the
pending usages every ``usage_flush_interval`` and writes them in one batch
(``Store.record_usage``). If the write fails the batch is merged back, so
counts are delayed, never lost, while the store is down.

Pure: no I/O; times are parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

from patgate.models import Usage


@dataclass(slots=True)
class _Pending:
    used_at: float
    ip: str | None
    count: int
    expires_at: float | None


class UsageRecorder:
    def __init__(self, max_tokens: int = 1_000_000) -> None:
        self._pending: dict[str, _Pending] = {}
        self.max_tokens = max_tokens

    def __len__(self) -> int:
        return len(self._pending)

    def note(
        self, token_id: str, now: float, ip: str | None, expires_at: float | None
    ) -> None:
        pending = self._pending.get(token_id)
        if pending is None:
            if len(self._pending) < self.max_tokens:
                self._pending[token_id] = _Pending(now, ip, 1, expires_at)
            return
        pending.count += 1
        if now >= pending.used_at:
            pending.used_at = now
            pending.ip = ip
        if expires_at is not None and (
            pending.expires_at is None or expires_at > pending.expires_at
        ):
            pending.expires_at = expires_at

    def drain(self) -> list[Usage]:
        """Everything noted since the last drain, one Usage per token."""
        pending, self._pending = self._pending, {}
        return [
            Usage(tid, p.used_at, p.ip, p.count, p.expires_at)
            for tid, p in pending.items()
        ]

    def restore(self, usages: list[Usage]) -> None:
        """Merge back a batch whose write failed."""
        for usage in usages:
            pending = self._pending.get(usage.token_id)
            if pending is None:
                self._pending[usage.token_id] = _Pending(
                    usage.used_at, usage.ip, usage.count, usage.expires_at
                )
                continue
            pending.count += usage.count
            if usage.used_at > pending.used_at:
                pending.used_at, pending.ip = usage.used_at, usage.ip
            if usage.expires_at is not None and (
                pending.expires_at is None or usage.expires_at > pending.expires_at
            ):
                pending.expires_at = usage.expires_at
