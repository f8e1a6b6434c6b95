"""The Store protocol that every adapter implements.

Adapters (:mod:`patgate.store.sqlite`, :mod:`patgate.store.redis`; picked by
URL with :func:`patgate.store.open_store`) translate their driver's errors
into ``StoreUnavailableError`` and raise ``ConflictError`` / ``NotFoundError``
as documented below. One conformance suite (``tests/contract``) runs
unchanged against every adapter.

Writes are split by who makes them so they never overwrite each other:
management writes (``update_token``) change settings and status and add one
to the token's ``version``; the gateway's coalesced usage writes
(``record_usage``) change only ``last_used_*``, ``use_count`` and a sliding
``expires_at``, the last only while the token is still at the version the
move was computed from, so no usage write undoes an edit made since the use.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from patgate.events import Delivery, DeliveryAttempt
from patgate.models import (
    Change,
    Observed,
    TokenGrant,
    TokenRecord,
    Usage,
    UsageNews,
    User,
)

# What a management write (update_token) may change; usage fields, the owner
# and the creation facts are not in it. Both adapters write exactly these, and
# add one to ``version`` (the store's count, never the record's).
TOKEN_SETTINGS = (
    "token_hash",
    "name",
    "scopes",
    "project",
    "expiry",
    "expires_at",
    "sliding_window",
    "max_lifetime",
    "updated_at",
    "allowed_cidrs",
    "rate_limit",
    "status",
    "previous_hash",
    "previous_hash_until",
    "canary",
    "retired_hashes",
    "activate_on_use",
    "observe_until",
)


@dataclass(frozen=True, slots=True)
class RateVerdict:
    """The answer of a rate limiter: allowed, or retry after some seconds."""

    allowed: bool
    retry_after: float = 0.0


class Store(Protocol):
    """Where users and tokens live. All methods may raise StoreUnavailableError."""

    url_for_display: str

    async def ping(self) -> None:
        """Raise StoreUnavailableError unless the store answers."""

    async def close(self) -> None:
        """Release connections; later calls raise StoreUnavailableError and
        ``changes()`` iterators end."""

    # settings: facts about the store itself, such as the pepper fingerprint
    async def get_setting(self, name: str) -> str | None:
        """The value stored under ``name``, or None."""

    async def claim_setting(self, name: str, value: str) -> str:
        """Store ``value`` under ``name`` unless a value is there already.

        Returns what is stored afterwards: ``value`` if this call set it, else
        the earlier value (atomic: of two processes claiming at once, one wins).
        """
        ...

    # users
    async def create_user(self, user: User) -> None:
        """Store a new user; ConflictError if the login is taken."""

    async def get_user(self, login: str) -> User | None: ...

    async def list_users(self) -> list[User]:
        """Every user, by login."""

    async def update_user(self, user: User) -> None:
        """Replace a user; NotFoundError if absent. Publishes a user change."""

    # tokens
    async def create_token(self, record: TokenRecord) -> None:
        """Store a new token; ConflictError if the id is taken, NotFoundError
        if its owner does not exist."""

    async def get_token(self, token_id: str) -> TokenRecord | None: ...

    async def list_tokens(self, owner: str | None = None) -> list[TokenRecord]:
        """Tokens of ``owner`` (all when None), oldest first."""

    async def update_token(self, record: TokenRecord) -> None:
        """Replace settings, status and hashes of an existing token.

        Usage fields, the owner, ``created_at``/``created_by`` and ``version``
        of ``record`` are ignored; the stored ``version`` goes up by one, in
        the same atomic write. NotFoundError if absent.
        Publishes a token change so that every gateway drops its cache entry.
        """

    async def delete_token(self, token_id: str) -> TokenRecord | None:
        """Remove a token for good: it leaves every list and ``get_token``.

        Answers the record as it was, or None if there was none (no error:
        removing twice is removing once). Publishes a token change, like
        ``update_token``, so that every gateway drops its cache entry.
        """
        ...

    async def resolve(self, token_id: str) -> TokenGrant | None:
        """The token and its owner in one round trip (the gateway's cache miss)."""

    async def record_usage(self, usages: Sequence[Usage]) -> list[UsageNews]:
        """Apply coalesced usage: add ``count``, set last use, move sliding expiry.

        ``usage.ips`` are merged into the token's ``last_ips`` (the
        MAX_LAST_IPS last seen addresses). Answers the news, decided in the
        same atomic write: ``first_use`` for a token never used before,
        ``new_ip`` for each address its ``last_ips`` did not hold.

        Unknown ids are skipped (no record is created). ``last_used_at`` and
        ``last_used_ip`` change only for a newer use (a None ip keeps the old
        one). ``expires_at`` only ever moves forward, and only if the stored
        ``version`` still equals ``usage.version`` (checked atomically with
        the write); a token without one (never expires) keeps none. Usage
        writes publish no change.
        """

    async def record_observed(self, usages: Sequence[Usage]) -> None:
        """Merge each usage's ``observed`` into its token's observations.

        Counts add up, ``last_seen`` keeps the latest; each token keeps its
        MAX_OBSERVED most recently seen (route, method, pattern), one atomic
        write per token. Unknown tokens are skipped; usages without
        observations cost nothing. Called by the same coalesced flush as
        ``record_usage``.
        """

    async def observed(self, token_id: str) -> list[Observed]:
        """What ``token_id`` was observed doing, oldest seen first ([] if
        nothing or no such token)."""
        ...

    def changes(self) -> AsyncIterator[Change]:
        """Change notices from every process sharing this store, as they happen.

        Redis delivers them by pub/sub; SQLite by polling a change log. Only
        ``update_token``, ``delete_token`` and ``update_user`` produce
        notices. Listening starts when the iterator first runs: earlier
        notices are not replayed. The
        first item is ``Change(ChangeKind.LISTENING, "")``, once listening has
        begun: every notice after it is delivered, so a consumer distrusts
        what it cached before it (a reconnect may have missed notices). The
        iterator ends only when the store is closed; it raises
        StoreUnavailableError when the store goes away (the caller retries,
        and must then distrust its cache: notices may have been missed).
        """
        ...

    async def take_rate(
        self, key: str, limit: int, window: int, now: float
    ) -> RateVerdict:
        """Count one hit against ``limit`` per ``window`` seconds for ``key``.

        Fixed windows aligned on multiples of ``window`` since the epoch;
        a refusal's ``retry_after`` is the time left in the window. Refused
        hits count too. Atomic, and shared by every process on SQLite and
        every replica on Redis; counters with different windows are apart.
        A general counter: any ``key`` (``token:<id>``, ``ip:<address>``).
        """
        ...

    # the web page's sessions ended before their expiry (logout)
    async def revoke_session(self, session_id: str, expires_at: float) -> None:
        """Record that the page session ``session_id`` has ended.

        Kept at least until ``expires_at`` (when the session would have
        expired anyway), then it may be forgotten; a session already past
        ``expires_at`` need not be recorded at all. Every process sharing the
        store sees it from the next call on. Recording it twice is no error.
        """

    async def session_revoked(self, session_id: str) -> bool:
        """True when ``revoke_session`` recorded ``session_id``."""
        ...

    # the webhook outbox: one replica at a time (the lease holder) delivers
    async def enqueue_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        """Add deliveries to the outbox; one whose id is there already is kept."""

    async def take_lease(self, name: str, holder: str, ttl: float, now: float) -> bool:
        """Hold the lease ``name`` for ``ttl`` seconds: True if it was free,
        expired or already ``holder``'s (then it is renewed). Atomic."""
        ...

    async def due_deliveries(self, now: float, limit: int) -> list[Delivery]:
        """Up to ``limit`` deliveries due at ``now``, the earliest first."""
        ...

    async def finish_delivery(
        self, attempt: DeliveryAttempt, retry_at: float | None, holder: str
    ) -> bool:
        """Log ``attempt``; then drop its delivery (``retry_at`` None) or make
        it due again at ``retry_at`` with one more attempt counted.

        Only while ``holder`` holds the ``webhooks`` lease (False otherwise,
        and nothing changes): a replica that lost its lease never finishes
        what another has taken over.
        """
        ...

    async def delivery_log(self, limit: int = 100) -> list[DeliveryAttempt]:
        """The last ``limit`` delivery attempts, newest first."""
        ...
