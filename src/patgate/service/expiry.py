"""Expiry models: hard, sliding, never, all capped by ``max_lifetime``.

Pure functions of the requested settings and ``now``: a new token's expiry,
an edited one's (given fields replace the model, ``max_lifetime`` alone
re-caps it) and a copy's (the same model, counted from now).
"""

from __future__ import annotations

from dataclasses import dataclass

from patgate.errors import UsageError
from patgate.models import ExpiryModel, TokenRecord
from patgate.service.core import UNSET, Unset
from patgate.service.validation import validate_seconds


@dataclass(frozen=True, slots=True)
class Expiry:
    model: ExpiryModel
    expires_at: float | None
    sliding_window: int | None
    max_lifetime: int | None


def compute_expiry(
    *,
    now: float,
    origin: float,
    expires_at: float | None,
    sliding: int | None,
    max_lifetime: int | None,
) -> Expiry:
    """The expiry model for the given inputs; ``origin`` is the creation time."""
    sliding = validate_seconds("sliding window", sliding)
    max_lifetime = validate_seconds("max lifetime", max_lifetime)
    if expires_at is not None and sliding is not None:
        raise UsageError(
            "choose one expiry: a fixed time (-e) or a sliding window (-a)"
        )
    cap = origin + max_lifetime if max_lifetime is not None else None
    if sliding is not None:
        moved = now + sliding
        return Expiry(
            ExpiryModel.SLIDING,
            moved if cap is None else min(moved, cap),
            sliding,
            max_lifetime,
        )
    if expires_at is None and cap is None:
        return Expiry(ExpiryModel.NEVER, None, None, None)
    ends = min(t for t in (expires_at, cap) if t is not None)
    return Expiry(ExpiryModel.HARD, ends, None, max_lifetime)


def new_expiry(
    now: float,
    origin: float,
    expires_at: float | None,
    sliding: int | None,
    max_lifetime: int | None,
) -> Expiry:
    """The expiry of a new or edited token; one already past is refused."""
    expiry = compute_expiry(
        now=now,
        origin=origin,
        expires_at=expires_at,
        sliding=sliding,
        max_lifetime=max_lifetime,
    )
    if expiry.expires_at is not None and expiry.expires_at <= now:
        raise UsageError("the expiry is in the past")
    return expiry


def edited_expiry(
    record: TokenRecord,
    now: float,
    expires_at: float | Unset | None,
    sliding: int | Unset | None,
    max_lifetime: int | Unset | None,
) -> Expiry:
    """The expiry after an edit: the given fields replace the model."""
    if expires_at is UNSET and sliding is UNSET:
        # Keep the model, re-cap it.
        expires_at = record.expires_at if record.expiry is ExpiryModel.HARD else None
        sliding = record.sliding_window
    else:
        expires_at = None if expires_at is UNSET else expires_at
        sliding = None if sliding is UNSET else sliding
    if max_lifetime is UNSET:
        max_lifetime = record.max_lifetime
    return new_expiry(now, record.created_at, expires_at, sliding, max_lifetime)


def expiry_changes(expiry: Expiry) -> dict[str, object]:
    return {
        "expiry": expiry.model,
        "expires_at": expiry.expires_at,
        "sliding_window": expiry.sliding_window,
        "max_lifetime": expiry.max_lifetime,
    }


def copied_expiry(source: TokenRecord, now: float) -> Expiry:
    """A fresh expiry of the same model as ``source``, counted from ``now``."""
    if source.expiry is ExpiryModel.SLIDING:
        return compute_expiry(
            now=now,
            origin=now,
            expires_at=None,
            sliding=source.sliding_window,
            max_lifetime=source.max_lifetime,
        )
    if source.expiry is ExpiryModel.HARD and source.expires_at is not None:
        lifetime = max(source.expires_at - source.created_at, 1.0)
        return Expiry(ExpiryModel.HARD, now + lifetime, None, source.max_lifetime)
    return Expiry(ExpiryModel.NEVER, None, None, None)
