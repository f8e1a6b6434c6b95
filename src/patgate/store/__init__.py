"""Store adapters: where users and tokens live. See :mod:`patgate.store.base`.

:func:`open_store` picks the adapter from the store URL of the config; the
schemes are listed in :mod:`patgate.storeurl`.
"""

from __future__ import annotations

from patgate import storeurl
from patgate.errors import UsageError
from patgate.store.base import RateVerdict, Store

__all__ = ["RateVerdict", "Store", "open_store"]


def open_store(url: str) -> Store:
    """The store named by ``url``: ``sqlite:///path.db`` or any Redis URL.

    Nothing is connected yet; the first call does that (and raises
    StoreUnavailableError if it cannot).
    """
    scheme = storeurl.scheme_of(url)
    if scheme == storeurl.SQLITE:
        from patgate.store.sqlite import SQLiteStore

        return SQLiteStore.from_url(url)
    if scheme in storeurl.REDIS_SCHEMES:
        from patgate.store.redis import RedisStore

        return RedisStore.from_url(url)
    # SECURITY: a store URL may carry a Redis password; never echo it back.
    shown = f"scheme {scheme!r}" if scheme else "(no scheme)"
    raise UsageError(f"unsupported store URL {shown}: expected {storeurl.EXAMPLES}")
