"""The in-process cache of token grants, in front of the store.

Keyed by the token *hash* (never the value), bounded in size (LRU) and age:
an entry is fresh for ``ttl``; after that the gateway asks the store again,
and only while the store is down may it use an entry up to ``max_stale`` old.
Unknown hashes are remembered for ``negative_ttl`` so that a burst of bad
tokens does not become a burst of store lookups.

Change notices drop entries by token id or owner login. While the change
feed is down no entry is trusted alone (``suspend``), and when it is back
every entry must be confirmed again (``resume``): notices may have been missed.
Each of these moves :attr:`GrantCache.generation` on; a grant fetched across
such a move is used for its request but not cached, since it may have been
read before the change the notice announced.

Pure: the clock is a parameter.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from patgate.models import TokenGrant


@dataclass(slots=True)
class CacheEntry:
    """A grant (None for a negative entry) and when the store last confirmed it."""

    grant: TokenGrant | None
    fetched_at: float


@dataclass(frozen=True, slots=True)
class CacheStats:
    hits: int
    misses: int
    entries: int


class GrantCache:
    def __init__(
        self,
        *,
        max_entries: int,
        ttl: float,
        negative_ttl: float,
        max_stale: float,
        clock: Callable[[], float],
    ) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.max_stale = max(max_stale, ttl)
        self._clock = clock
        self._entries: OrderedDict[bytes, CacheEntry] = OrderedDict()
        self._by_token: dict[str, set[bytes]] = {}
        self._by_owner: dict[str, set[bytes]] = {}
        self.hits = 0
        self.misses = 0
        self._suspended = False
        self.generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def suspended(self) -> bool:
        """True while the change feed is down (see :meth:`suspend`)."""
        return self._suspended

    def fresh(self, token_hash: bytes, *, count_miss: bool = True) -> CacheEntry | None:
        """The entry if the store confirmed it recently enough to trust alone.

        ``count_miss=False`` when the caller may not ask the store after all
        (then it counts the miss itself, with :meth:`missed`, if it does).
        """
        entry = self._entries.get(token_hash)
        if entry is None or self._suspended:
            self.misses += count_miss
            return None
        age = self._clock() - entry.fetched_at
        limit = self.ttl if entry.grant is not None else self.negative_ttl
        if age >= limit:
            self.misses += count_miss
            return None
        self._entries.move_to_end(token_hash)
        self.hits += 1
        return entry

    def missed(self) -> None:
        """Count a miss that :meth:`fresh` was told not to count."""
        self.misses += 1

    def stale(self, token_hash: bytes) -> TokenGrant | None:
        """A positive grant no older than ``max_stale``: the store-outage fallback."""
        entry = self._entries.get(token_hash)
        if entry is None or entry.grant is None:
            return None
        if self._clock() - entry.fetched_at >= self.max_stale:
            return None
        return entry.grant

    def put(
        self,
        token_hash: bytes,
        grant: TokenGrant | None,
        generation: int | None = None,
    ) -> None:
        """Remember a grant, or (None) that this hash is not a live token.

        ``generation`` is :attr:`generation` when the fetch began; if a change
        notice came since, the grant may predate that change: not kept.
        """
        if generation is not None and generation != self.generation:
            # SECURITY: a fetch racing an edit or revocation must not put the
            # old record back for a whole ttl after the notice dropped it.
            return
        self._forget(token_hash)
        self._entries[token_hash] = CacheEntry(grant, self._clock())
        if grant is not None:
            self._by_token.setdefault(grant.token.id, set()).add(token_hash)
            self._by_owner.setdefault(grant.owner.login, set()).add(token_hash)
        while len(self._entries) > self.max_entries:
            oldest, evicted = self._entries.popitem(last=False)
            self._unindex(oldest, evicted)

    def slide_expiry(self, token_hash: bytes, version: int, expires_at: float) -> None:
        """Move the cached token's expiry forward (a use of a sliding token).

        Only if the entry still holds settings ``version``, the one the move
        was computed from: a request decided on a grant read before an edit
        may finish after the edit's notice and a fresh fetch, and must not
        put the old settings' expiry on the new grant. The age is kept.
        """
        entry = self._entries.get(token_hash)
        if entry is None or entry.grant is None:
            return
        token = entry.grant.token
        if token.version != version or token.expires_at is None:
            return
        if expires_at > token.expires_at:
            moved = token.with_changes(expires_at=expires_at)
            entry.grant = TokenGrant(moved, entry.grant.owner)

    def expire_all(self) -> None:
        """Make every entry stale: ask the store again, keep the outage fallback.

        Used after the change feed reconnects, when notices may have been lost.
        """
        self.generation += 1
        cutoff = self._clock() - self.ttl
        for entry in self._entries.values():
            entry.fetched_at = min(entry.fetched_at, cutoff)

    def suspend(self) -> None:
        """Trust no entry alone until :meth:`resume`: the change feed is down.

        Every lookup then goes to the store, so a revocation is seen the moment
        the store answers again; entries stay only as the outage fallback.
        """
        self.generation += 1
        self._suspended = True

    def resume(self) -> None:
        """The change feed is back: trust entries again once the store confirms them."""
        self.expire_all()
        self._suspended = False

    def drop_token(self, token_id: str) -> None:
        self.generation += 1
        for token_hash in self._by_token.pop(token_id, set()).copy():
            self._forget(token_hash)

    def drop_owner(self, login: str) -> None:
        self.generation += 1
        for token_hash in self._by_owner.pop(login, set()).copy():
            self._forget(token_hash)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()
        self._by_token.clear()
        self._by_owner.clear()

    def stats(self) -> CacheStats:
        return CacheStats(hits=self.hits, misses=self.misses, entries=len(self))

    def _forget(self, token_hash: bytes) -> None:
        entry = self._entries.pop(token_hash, None)
        if entry is not None:
            self._unindex(token_hash, entry)

    def _unindex(self, token_hash: bytes, entry: CacheEntry) -> None:
        if entry.grant is None:
            return
        for index, key in (
            (self._by_token, entry.grant.token.id),
            (self._by_owner, entry.grant.owner.login),
        ):
            hashes = index.get(key)
            if hashes is not None:
                hashes.discard(token_hash)
                if not hashes:
                    del index[key]
