"""Store adapters: where users and tokens live. See :mod:`patgate.store.base`."""

from patgate.store.base import RateVerdict, Store

__all__ = ["RateVerdict", "Store"]
