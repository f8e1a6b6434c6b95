"""User passwords: argon2id hashes for management logins.

Only the CLI, the REST API and the web page check passwords; the gateway's hot
path never does (tokens are sha256 with a pepper, see :mod:`patgate.tokens`).
One module-level hasher with argon2-cffi's defaults (RFC 9106 low-memory
profile: t=3, m=64 MiB, p=4), about 0.1 s per check.
"""

from __future__ import annotations

import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_HASHER = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """A hash of a throw-away password, made once on first need (not at import)."""
    return _HASHER.hash("patgate: no such user")


def hash_password(password: str) -> str:
    """The argon2id hash of ``password``, salt and parameters included."""
    return _HASHER.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when ``password`` matches ``password_hash``; never raises.

    A missing or malformed hash is a mismatch. With ``password_hash=None`` the
    work of a real check is still done.
    """
    # SECURITY: login enumeration by timing; an unknown user costs a full check.
    try:
        matched = _HASHER.verify(password_hash or _dummy_hash(), password)
    except (VerificationError, InvalidHashError, ValueError, TypeError):
        return False
    return bool(matched) and password_hash is not None


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with other parameters than the current ones."""
    try:
        return _HASHER.check_needs_rehash(password_hash)
    except (InvalidHashError, ValueError):
        return True
