"""The records patgate keeps and passes around: users and tokens.

Frozen dataclasses with no I/O. Times are epoch seconds (UTC floats); they are
turned into ISO 8601 only at the edges (JSON, tables).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from patgate.durations import format_duration, format_time


class ExpiryModel(StrEnum):
    NEVER = "never"
    HARD = "hard"
    SLIDING = "sliding"


class TokenStatus(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class User:
    login: str
    password_hash: str | None = field(default=None, repr=False)
    scopes: tuple[str, ...] = ("*",)
    admin: bool = False
    disabled: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0

    def to_public(self) -> dict[str, Any]:
        """The JSON view: never the password hash."""
        return {
            "login": self.login,
            "scopes": list(self.scopes),
            "admin": self.admin,
            "disabled": self.disabled,
            "has_password": self.password_hash is not None,
            "created_at": format_time(self.created_at),
            "updated_at": format_time(self.updated_at),
        }


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """Everything stored about one token. Never the value: only its hash.

    ``status`` as stored is ``active``, ``revoked``, or ``expired`` once the
    service has observed the expiry (and audited it); the gateway never trusts
    it for that and derives expiry from ``expires_at`` (:meth:`status_at`).
    ``previous_hash`` keeps a regenerated-away value alive until
    ``previous_hash_until`` (the grace period), then it is dead.

    ``version`` counts management writes: the store adds one on every
    ``update_token`` (edit, regenerate, revoke, marked expired), whatever the
    record passed in says. A usage write carries the version its slid expiry
    was computed from, and the store moves ``expires_at`` only while the
    token is still at that version.
    """

    id: str
    owner: str
    token_hash: bytes = field(repr=False)
    name: str = ""
    scopes: tuple[str, ...] = ("*",)
    project: str | None = None
    expiry: ExpiryModel = ExpiryModel.NEVER
    expires_at: float | None = None
    sliding_window: int | None = None
    max_lifetime: int | None = None
    created_at: float = 0.0
    created_by: str = ""
    updated_at: float = 0.0
    last_used_at: float | None = None
    last_used_ip: str | None = None
    use_count: int = 0
    allowed_cidrs: tuple[str, ...] = ()
    rate_limit: int | None = None
    status: TokenStatus = TokenStatus.ACTIVE
    previous_hash: bytes | None = field(default=None, repr=False)
    previous_hash_until: float | None = None
    version: int = 0
    # A canary is refused like an unknown token, and every use is reported.
    canary: bool = False
    # Hashes regenerated away (newest last, at most MAX_RETIRED_HASHES): one
    # presented after its grace is a sign of theft (rotation reuse).
    retired_hashes: tuple[bytes, ...] = field(default=(), repr=False)
    # ``previous_hash`` stays valid until the new value is first used.
    activate_on_use: bool = False
    # The last distinct client addresses (at most MAX_LAST_IPS), newest last.
    last_ips: tuple[SeenIp, ...] = ()
    # Until then the gateway notes what the token is used for (observe.py).
    observe_until: float | None = None

    def observing(self, now: float) -> bool:
        return self.observe_until is not None and now < self.observe_until

    def lifetime_ends_at(self) -> float | None:
        """The hard cap of a sliding token (``created_at + max_lifetime``)."""
        if self.max_lifetime is None:
            return None
        return self.created_at + self.max_lifetime

    def status_at(self, now: float) -> TokenStatus:
        if self.status is TokenStatus.REVOKED:
            return TokenStatus.REVOKED
        if self.expires_at is not None and now >= self.expires_at:
            return TokenStatus.EXPIRED
        return TokenStatus.ACTIVE

    def slid_expiry(self, now: float) -> float | None:
        """Where a use at ``now`` moves ``expires_at``; None if it does not move."""
        if self.expiry is not ExpiryModel.SLIDING or self.sliding_window is None:
            return None
        moved = now + self.sliding_window
        cap = self.lifetime_ends_at()
        return min(moved, cap) if cap is not None else moved

    def with_changes(self, **changes: Any) -> TokenRecord:
        return replace(self, **changes)

    def to_public(self, now: float) -> dict[str, Any]:
        """The JSON view of SPEC.md section 6: never the value or its hash."""
        return {
            "id": self.id,
            "name": self.name,
            "owner": self.owner,
            "scopes": list(self.scopes),
            "project": self.project,
            "expiry": self.expiry.value,
            "expires_at": format_time(self.expires_at),
            "sliding_window": (
                format_duration(self.sliding_window) if self.sliding_window else None
            ),
            "max_lifetime": (
                format_duration(self.max_lifetime) if self.max_lifetime else None
            ),
            "created_at": format_time(self.created_at),
            "created_by": self.created_by,
            "updated_at": format_time(self.updated_at),
            "last_used_at": format_time(self.last_used_at),
            "last_used_ip": self.last_used_ip,
            "use_count": self.use_count,
            "allowed_cidrs": list(self.allowed_cidrs),
            "rate_limit": self.rate_limit,
            "status": self.status_at(now).value,
            "canary": self.canary,
            "activate_on_use": self.activate_on_use,
            "last_ips": [seen.to_public() for seen in reversed(self.last_ips)],
            "observe_until": format_time(self.observe_until),
        }

    def retire(self, old_hash: bytes) -> tuple[bytes, ...]:
        """``retired_hashes`` with ``old_hash`` added, bounded."""
        kept = tuple(h for h in self.retired_hashes if h != old_hash)
        return (*kept, old_hash)[-MAX_RETIRED_HASHES:]


MAX_RETIRED_HASHES = 10
MAX_LAST_IPS = 5


@dataclass(frozen=True, slots=True)
class SeenIp:
    """A client address a token was used from, first and last seen."""

    ip: str
    first_seen: float
    last_seen: float

    def to_public(self) -> dict[str, Any]:
        return {
            "ip": self.ip,
            "first_seen": format_time(self.first_seen),
            "last_seen": format_time(self.last_seen),
        }

    def to_list(self) -> list[Any]:
        return [self.ip, self.first_seen, self.last_seen]

    @classmethod
    def from_list(cls, item: list[Any]) -> SeenIp:
        return cls(str(item[0]), float(item[1]), float(item[2]))


def merge_seen(
    old: tuple[SeenIp, ...], new: tuple[SeenIp, ...]
) -> tuple[tuple[SeenIp, ...], list[str]]:
    """``old`` and ``new`` merged (the MAX_LAST_IPS last seen, oldest first),
    and the addresses of ``new`` that ``old`` did not hold."""
    merged = {seen.ip: seen for seen in old}
    fresh: list[str] = []
    for seen in new:
        known = merged.pop(seen.ip, None)
        if known is None:
            fresh.append(seen.ip)
        else:
            seen = SeenIp(
                seen.ip,
                min(known.first_seen, seen.first_seen),
                max(known.last_seen, seen.last_seen),
            )
        merged[seen.ip] = seen  # a tie on last_seen: the one seen again is later
    ordered = sorted(merged.values(), key=lambda seen: seen.last_seen)
    return tuple(ordered[-MAX_LAST_IPS:]), fresh


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """A token with its owner, as one cache entry holds them."""

    token: TokenRecord
    owner: User


@dataclass(frozen=True, slots=True)
class Usage:
    """One coalesced usage write: the last use of a token in a flush interval.

    ``expires_at`` is where the uses slid a sliding token's expiry, computed
    from the token's settings at ``version``; the store applies it only if the
    token is still at that version (an edit since then wins).
    """

    token_id: str
    used_at: float
    ip: str | None
    count: int
    expires_at: float | None = None
    version: int = 0
    ips: tuple[SeenIp, ...] = ()
    # What an observed token was used for (observe.py), since the last drain.
    observed: tuple[Observed, ...] = ()


# Observed requests kept per token by the store (the most recently seen).
MAX_OBSERVED = 200


@dataclass(frozen=True, slots=True)
class Observed:
    """Requests of one (route, method, path pattern) an observed token made."""

    route: str
    method: str
    pattern: str
    count: int
    last_seen: float

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.route, self.method, self.pattern)

    def to_list(self) -> list[Any]:
        return [self.route, self.method, self.pattern, self.count, self.last_seen]

    @classmethod
    def from_list(cls, item: list[Any]) -> Observed:
        route, method, pattern, count, last_seen = item
        return cls(str(route), str(method), str(pattern), int(count), float(last_seen))


@dataclass(frozen=True, slots=True)
class UsageNews:
    """What a usage write found new: a token's first use, or a new address.

    The store decides it in the same atomic write, so of all the replicas
    only one ever hears a given piece of news.
    """

    token_id: str
    owner: str
    kind: str  # "first_use" or "new_ip"
    ip: str | None


class ChangeKind(StrEnum):
    TOKEN = "token"  # noqa: S105 - an enum name, not a password
    USER = "user"
    # Not a notice: ``changes()`` yields this (key '') once it listens, so
    # every notice from then on arrives and earlier ones may have been missed.
    LISTENING = "listening"


# The kinds a store publishes; only these are read back from the channel.
NOTICE_KINDS = (ChangeKind.TOKEN.value, ChangeKind.USER.value)


@dataclass(frozen=True, slots=True)
class Change:
    """A change notice: caches drop every entry for this token id or owner."""

    kind: ChangeKind
    key: str

    def encode(self) -> str:
        return f"{self.kind.value}:{self.key}"

    @classmethod
    def decode(cls, text: str) -> Change | None:
        kind, sep, key = text.partition(":")
        if not sep or kind not in NOTICE_KINDS:
            return None
        return cls(ChangeKind(kind), key)
