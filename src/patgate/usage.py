"""Coalescing of usage writes: many uses of a token become one store write.

The gateway notes every allowed request here; a background task drains the
pending usages every ``usage_flush_interval`` and writes them in one batch
(``Store.record_usage``). If the write fails the batch is merged back, so
counts are delayed, never lost, while the store is down.

A use of a sliding token also carries where it slid the expiry and the
settings ``version`` of the token it was computed from. Only moves computed
from the newest version noted are kept: a token edited since (a shorter
window, a hard expiry, a lower ``max_lifetime``) must never get back an
expiry that its old settings allowed. A change notice for a token drops its
pending move (:meth:`UsageRecorder.discard_expiry`); the store checks the
version again when it writes, which covers a notice that comes late or not
at all.

Each pending use also keeps the distinct client addresses seen since the
last drain (up to MAX_PENDING_IPS, with first and last seen), so the
token's ``last_ips`` are kept by the same one write.

An observed token's uses also keep their distinct (route, method, path
pattern) since the last drain, with counts (up to MAX_PENDING_OBSERVED;
more wait for the next drain), so that observing costs no store write per
request either.

Pure: no I/O; times are parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

from patgate.models import Observed, SeenIp, Usage

# Distinct addresses kept per token between two drains: more than the store
# keeps (MAX_LAST_IPS), so that each new one is still news to the store.
MAX_PENDING_IPS = 32
# Distinct observed (route, method, pattern) kept per token between drains.
MAX_PENDING_OBSERVED = 64


@dataclass(slots=True)
class _Pending:
    used_at: float
    ip: str | None
    count: int
    expires_at: float | None
    version: int
    # Moves computed from versions below this were dropped by a change notice.
    floor: int = 0
    # address -> [first seen, last seen], since the last drain
    ips: dict[str, list[float]] | None = None
    # (route, method, pattern) -> [count, last seen], since the last drain
    observed: dict[tuple[str, str, str], list[float]] | None = None

    def merge_expiry(self, expires_at: float | None, version: int) -> None:
        """Keep the furthest move of the newest version; older versions lose."""
        if version < max(self.version, self.floor):
            return
        if version > self.version:
            self.version, self.expires_at = version, expires_at
        elif expires_at is not None and (
            self.expires_at is None or expires_at > self.expires_at
        ):
            self.expires_at = expires_at

    def merge_use(self, used_at: float, ip: str | None, count: int) -> None:
        self.count += count
        if used_at >= self.used_at:
            self.used_at, self.ip = used_at, ip

    def merge_ip(self, ip: str, first: float, last: float) -> None:
        ips = self.ips
        if ips is None:
            ips = self.ips = {}
        seen = ips.get(ip)
        if seen is None:
            ips[ip] = [first, last]
            if len(ips) > MAX_PENDING_IPS:
                del ips[min(ips, key=lambda name: ips[name][1])]
        else:
            seen[0], seen[1] = min(seen[0], first), max(seen[1], last)

    def merge_observed(self, key: tuple[str, str, str], count: int, at: float) -> None:
        observed = self.observed
        if observed is None:
            observed = self.observed = {}
        known = observed.get(key)
        if known is not None:
            known[0] += count
            known[1] = max(known[1], at)
        elif len(observed) < MAX_PENDING_OBSERVED:
            observed[key] = [count, at]

    def observations(self) -> tuple[Observed, ...]:
        if not self.observed:
            return ()
        return tuple(
            Observed(route, method, pattern, int(count), last)
            for (route, method, pattern), (count, last) in self.observed.items()
        )

    def seen(self) -> tuple[SeenIp, ...]:
        if not self.ips:
            return ()
        # By last seen, to the millisecond (what every store keeps exactly).
        ordered = sorted(self.ips.items(), key=lambda item: item[1][1])
        return tuple(
            SeenIp(ip, round(first, 3), round(last, 3)) for ip, (first, last) in ordered
        )


class UsageRecorder:
    def __init__(self, max_tokens: int = 1_000_000) -> None:
        self._pending: dict[str, _Pending] = {}
        self.max_tokens = max_tokens

    def __len__(self) -> int:
        return len(self._pending)

    def note(
        self,
        token_id: str,
        now: float,
        ip: str | None,
        expires_at: float | None,
        version: int = 0,
    ) -> None:
        """One use at ``now``; ``expires_at`` is the slid expiry (or None),
        computed from the token's settings at ``version``.

        Called for every allowed request: what :meth:`_merge` does for a
        Usage of one use, without making one.
        """
        pending = self._pending.get(token_id)
        if pending is None:
            if len(self._pending) >= self.max_tokens:
                return
            pending = _Pending(now, ip, 1, expires_at, version)
            self._pending[token_id] = pending
        else:
            pending.count += 1
            if now >= pending.used_at:
                pending.used_at, pending.ip = now, ip
            if expires_at is not None or version != pending.version:
                pending.merge_expiry(expires_at, version)
        if ip is not None:
            seen = pending.ips.get(ip) if pending.ips is not None else None
            if seen is None:
                pending.merge_ip(ip, now, now)
            elif now > seen[1]:
                seen[1] = now
            elif now < seen[0]:
                seen[0] = now  # the clock went back

    def note_observed(
        self, token_id: str, now: float, route: str, method: str, pattern: str
    ) -> None:
        """What an observed token's use at ``now`` was (after :meth:`note`)."""
        pending = self._pending.get(token_id)
        if pending is not None:
            pending.merge_observed((route, method, pattern), 1, now)

    def discard_expiry(self, token_id: str) -> None:
        """The token changed: forget its pending expiry move, keep its count.

        Uses noted later from a grant read before the change (its version or
        older) move nothing either.
        """
        pending = self._pending.get(token_id)
        if pending is not None:
            pending.expires_at = None
            pending.floor = pending.version + 1

    def pending(self, token_id: str) -> Usage | None:
        """What the next drain would write for ``token_id``."""
        pending = self._pending.get(token_id)
        return None if pending is None else _usage_of(token_id, pending)

    def drain(self) -> list[Usage]:
        """Everything noted since the last drain, one Usage per token."""
        pending, self._pending = self._pending, {}
        return [_usage_of(tid, p) for tid, p in pending.items()]

    def restore(self, usages: list[Usage]) -> None:
        """Merge back a batch whose write failed.

        Its expiry moves compete with what was noted since by version, so a
        batch computed before an edit cannot override one computed after it.
        """
        for usage in usages:
            self._merge(usage)

    def _merge(self, usage: Usage) -> None:
        pending = self._pending.get(usage.token_id)
        if pending is None:
            if len(self._pending) >= self.max_tokens:
                return
            pending = _Pending(
                usage.used_at, usage.ip, usage.count, usage.expires_at, usage.version
            )
            self._pending[usage.token_id] = pending
        else:
            pending.merge_use(usage.used_at, usage.ip, usage.count)
            pending.merge_expiry(usage.expires_at, usage.version)
        if usage.ips:
            for seen in usage.ips:
                pending.merge_ip(seen.ip, seen.first_seen, seen.last_seen)
        elif usage.ip is not None:
            pending.merge_ip(usage.ip, usage.used_at, usage.used_at)
        for observed in usage.observed:
            pending.merge_observed(observed.key, observed.count, observed.last_seen)


def _usage_of(token_id: str, pending: _Pending) -> Usage:
    return Usage(
        token_id,
        pending.used_at,
        pending.ip,
        pending.count,
        pending.expires_at,
        pending.version,
        pending.seen(),
        pending.observations(),
    )
