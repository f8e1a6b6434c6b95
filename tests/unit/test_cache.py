"""The grant cache after an edit: no old settings come back into it.

Two ways the old record could return after a change notice dropped it: a
slid expiry computed from the old grant put on the new one, and a fetch that
read the store before the edit finishing after the notice. The clock is an
object the test moves.
"""

from __future__ import annotations

from patgate.cache import GrantCache
from patgate.models import ExpiryModel, TokenGrant
from tests.factories import NOW, make_token, make_user

HASH = b"h" * 32


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def sliding_grant(version: int, expires_at: float, window: int = 3600) -> TokenGrant:
    record, _ = make_token(
        id="SlideTok",
        token_hash=HASH,
        expiry=ExpiryModel.SLIDING,
        sliding_window=window,
        expires_at=expires_at,
        version=version,
    )
    return TokenGrant(record, make_user())


def new_cache(clock: Clock) -> GrantCache:
    return GrantCache(max_entries=10, ttl=30, negative_ttl=5, max_stale=60, clock=clock)


def cached_expiry(cache: GrantCache) -> float | None:
    entry = cache.fresh(HASH)
    assert entry is not None
    assert entry.grant is not None
    return entry.grant.token.expires_at


def test_a_use_slides_the_cached_expiry_forward_only():
    clock = Clock()
    cache = new_cache(clock)
    cache.put(HASH, sliding_grant(1, NOW + 60))
    cache.slide_expiry(HASH, 1, NOW + 3600)
    assert cached_expiry(cache) == NOW + 3600
    cache.slide_expiry(HASH, 1, NOW + 100)
    assert cached_expiry(cache) == NOW + 3600
    clock.now += 29  # the age is the fetch's, not the slide's
    assert cache.fresh(HASH) is not None
    clock.now += 1
    assert cache.fresh(HASH) is None


def test_a_slide_from_the_old_settings_never_lands_on_the_edited_grant():
    """A request decided on version 1 finishes after the edit was fetched."""
    cache = new_cache(Clock())
    cache.put(HASH, sliding_grant(1, NOW + 60))
    cache.drop_token("SlideTok")  # the change notice
    cache.put(HASH, sliding_grant(2, NOW + 10, window=10))  # the next miss
    cache.slide_expiry(HASH, 1, NOW + 3600)
    assert cached_expiry(cache) == NOW + 10


def test_no_slide_on_a_negative_or_missing_entry():
    cache = new_cache(Clock())
    cache.slide_expiry(HASH, 0, NOW + 3600)
    cache.put(HASH, None)
    cache.slide_expiry(HASH, 0, NOW + 3600)
    entry = cache.fresh(HASH)
    assert entry is not None
    assert entry.grant is None


def test_a_fetch_that_began_before_a_change_notice_is_not_cached():
    cache = new_cache(Clock())
    for notice in (
        lambda: cache.drop_token("SlideTok"),
        lambda: cache.drop_owner("alice"),
        lambda: cache.drop_token("OtherTok"),  # any notice: the guard is global
        cache.suspend,
        cache.expire_all,
        cache.clear,
    ):
        cache.resume()
        began = cache.generation
        notice()
        cache.put(HASH, sliding_grant(1, NOW + 3600), began)
        assert cache.fresh(HASH) is None
        assert cache.stale(HASH) is None


def test_a_fetch_without_a_notice_in_between_is_cached():
    cache = new_cache(Clock())
    began = cache.generation
    cache.put(HASH, sliding_grant(1, NOW + 3600), began)
    assert cached_expiry(cache) == NOW + 3600
