"""The authorisation pipeline of one request, apart from HTTP.

extract (done by the caller) → parse and checksum → hash → cache or store →
``policy.decide`` → rate limit → note usage. The result is always a
``Decision``; the store being down is a 503 decision, never an allow.

Pure of I/O libraries: the store is any ``Store``, the clock a parameter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from patgate.cache import GrantCache
from patgate.errors import StoreUnavailableError
from patgate.extract import Credential
from patgate.models import ExpiryModel, TokenGrant, TokenRecord
from patgate.policy import CompiledRoute, Decision, decide
from patgate.store.base import Store
from patgate.throttle import FailureThrottle
from patgate.tokens import hash_token, hashes_match, token_id_of
from patgate.usage import UsageRecorder

RATE_WINDOW = 60
# Slid expiries are written back at most this often per token (seconds).
SLIDE_GRANULARITY = 1.0


@dataclass(frozen=True, slots=True)
class RequestView:
    """What the gate needs to know of a request; built by the HTTP edge."""

    method: str
    path: str
    client_ip: str | None
    credential: Credential | None


def refusal(status: int, error: str, reason: str, retry_after: float = 0.0) -> Decision:
    return Decision(
        allowed=False,
        status=status,
        error=error,
        reason=reason,
        retry_after=retry_after,
    )


MISSING = refusal(401, "", "no_credential")
MALFORMED = refusal(401, "invalid_token", "malformed_token")
UNAVAILABLE = refusal(503, "temporarily_unavailable", "store_unavailable")


class _StoreDown:
    """Marker: the store could not answer and no usable stale entry exists."""


STORE_DOWN = _StoreDown()


class Gate:
    def __init__(
        self,
        *,
        store: Store,
        cache: GrantCache,
        usage: UsageRecorder,
        throttle: FailureThrottle,
        prefix: str,
        pepper: bytes,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.cache = cache
        self.usage = usage
        self.throttle = throttle
        self.prefix = prefix
        self._pepper = pepper
        self._clock = clock
        self._inflight: dict[bytes, asyncio.Future[TokenGrant | None]] = {}
        self.store_errors = 0

    async def authorize(
        self, route: CompiledRoute, view: RequestView, *, note_usage: bool = True
    ) -> Decision:
        """Decide one request; ``note_usage=False`` for a second look (Destination)."""
        now = self._clock()
        ip = view.client_ip or ""
        wait = self.throttle.retry_after(ip, now)
        if wait:
            return refusal(429, "too_many_requests", "auth_throttled", wait)
        credential = view.credential
        if credential is None:
            return MISSING
        token_id = token_id_of(credential.value, self.prefix)
        if token_id is None:
            # SECURITY: a bad shape or checksum never reaches the store.
            self.throttle.note_failure(ip, now)
            return MALFORMED
        token_hash = hash_token(credential.value, self._pepper)
        decision, grant = await self._decide(route, view, token_hash, token_id, now)
        if not decision.allowed or grant is None:
            if decision.status == 401:
                self.throttle.note_failure(ip, now)
            return decision
        if not note_usage:
            return decision
        return await self._admit(decision, grant, token_hash, view, now)

    async def _decide(
        self,
        route: CompiledRoute,
        view: RequestView,
        token_hash: bytes,
        token_id: str,
        now: float,
    ) -> tuple[Decision, TokenGrant | None]:
        login = view.credential.login if view.credential else None
        entry = self.cache.fresh(token_hash)
        if entry is not None:
            decision = decide(
                route,
                view.path,
                view.method,
                entry.grant,
                token_hash,
                now,
                view.client_ip,
                login,
            )
            # A sliding token may have been moved on by another replica.
            if decision.reason != "expired":
                return decision, entry.grant
        grant = await self._fetch(token_id, token_hash)
        if isinstance(grant, _StoreDown):
            return UNAVAILABLE, None
        decision = decide(
            route,
            view.path,
            view.method,
            grant,
            token_hash,
            now,
            view.client_ip,
            login,
        )
        return decision, grant

    async def _fetch(
        self, token_id: str, token_hash: bytes
    ) -> TokenGrant | _StoreDown | None:
        """The grant from the store (one round trip), or a stale one if it is down.

        Concurrent misses for one hash share a single store call.
        """
        pending = self._inflight.get(token_hash)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except StoreUnavailableError:
                return self.cache.stale(token_hash) or STORE_DOWN
        future: asyncio.Future[TokenGrant | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._inflight[token_hash] = future
        generation = self.cache.generation
        try:
            grant = await self.store.resolve(token_id)
        except StoreUnavailableError as exc:
            self.store_errors += 1
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters handle it themselves
            # SECURITY: never fail open; only a recently confirmed grant survives.
            return self.cache.stale(token_hash) or STORE_DOWN
        finally:
            self._inflight.pop(token_hash, None)
        if grant is not None and not _hash_known(grant, token_hash):
            grant = None
        self.cache.put(token_hash, grant, generation)
        future.set_result(grant)
        return grant

    async def _admit(
        self,
        decision: Decision,
        grant: TokenGrant,
        token_hash: bytes,
        view: RequestView,
        now: float,
    ) -> Decision:
        token = grant.token
        if token.rate_limit:
            try:
                verdict = await self.store.take_rate(
                    f"token:{token.id}", token.rate_limit, RATE_WINDOW, now
                )
            except StoreUnavailableError:
                self.store_errors += 1
                return UNAVAILABLE
            if not verdict.allowed:
                return refusal(
                    429, "rate_limited", "token_rate_limit", verdict.retry_after
                )
        slid = _slid_expiry(token, now)
        if slid is not None:
            # Both carry the version the move was computed from: an edit since
            # then (a shorter window, a hard expiry) must win over this use.
            self.cache.slide_expiry(token_hash, token.version, slid)
        self.usage.note(token.id, now, view.client_ip, slid, token.version)
        return decision


def _slid_expiry(token: TokenRecord, now: float) -> float | None:
    """Where this use moves a sliding token's expiry; None below the granularity."""
    if token.expiry is not ExpiryModel.SLIDING or token.expires_at is None:
        return None
    slid = token.slid_expiry(now)
    if slid is None or slid - token.expires_at < SLIDE_GRANULARITY:
        return None
    return slid


def _hash_known(grant: TokenGrant, token_hash: bytes) -> bool:
    """Whether the presented hash belongs to this token at all (current or grace).

    Only used to choose what to cache; ``decide`` makes the constant-time
    comparison that counts, and checks the grace period's end.
    """
    token = grant.token
    if hashes_match(token.token_hash, token_hash):
        return True
    return token.previous_hash is not None and hashes_match(
        token.previous_hash, token_hash
    )
