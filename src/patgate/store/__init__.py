"""Store adapters: where users and tokens live. See :mod:`patgate.store.base`.

:func:`open_store` picks the adapter from the store URL of the config.
"""

from __future__ import annotations

from patgate.errors import UsageError
from patgate.store.base import RateVerdict, Store

__all__ = ["RateVerdict", "Store", "open_store"]

REDIS_SCHEMES = ("redis", "rediss", "unix")


def open_store(url: str) -> Store:
    """The store named by ``url``: ``sqlite:///path.db`` or ``redis://host:port/db``.

    Nothing is connected yet; the first call does that (and raises
    StoreUnavailableError if it cannot).
    """
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme == "sqlite":
        from patgate.store.sqlite import SQLiteStore

        return SQLiteStore.from_url(url)
    if scheme in REDIS_SCHEMES:
        from patgate.store.redis import RedisStore

        return RedisStore.from_url(url)
    # SECURITY: a store URL may carry a Redis password; never echo it back.
    shown = f"scheme {scheme!r}" if scheme else "(no scheme)"
    raise UsageError(
        f"unsupported store URL {shown}: expected sqlite:///path/patgate.db,"
        " redis://host:port/db, rediss://host:port/db or unix:///path/redis.sock"
    )
