"""Users and tokens for tests: sensible defaults, every field overridable."""

from __future__ import annotations

from typing import Any

from patgate.models import TokenRecord, User
from patgate.tokens import DEFAULT_PREFIX, hash_token, new_token

# 2027-01-15T08:00:00Z: a fixed "now" so that tests need no clock.
NOW = 1_800_000_000.0


def make_user(login: str = "alice", *, now: float = NOW, **overrides: Any) -> User:
    """A user holding ``*``, created at ``now``; ``overrides`` are User fields."""
    fields: dict[str, Any] = {
        "login": login,
        "scopes": ("*",),
        "created_at": now,
        "updated_at": now,
    }
    fields.update(overrides)
    return User(**fields)


def make_token(
    owner: str = "alice",
    *,
    now: float = NOW,
    pepper: bytes = b"",
    prefix: str = DEFAULT_PREFIX,
    **overrides: Any,
) -> tuple[TokenRecord, str]:
    """A fresh token record and its value; ``overrides`` are TokenRecord fields.

    An ``id`` override becomes the id inside the value too, so the pair stays
    consistent; ``token_hash`` is ``hash_token(value, pepper)`` unless given.
    """
    token = new_token(prefix, token_id=overrides.pop("id", None))
    fields: dict[str, Any] = {
        "id": token.token_id,
        "owner": owner,
        "token_hash": hash_token(token.value, pepper),
        "name": f"test token {token.token_id}",
        "created_at": now,
        "created_by": owner,
        "updated_at": now,
    }
    fields.update(overrides)
    return TokenRecord(**fields), token.value
