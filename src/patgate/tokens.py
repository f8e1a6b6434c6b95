"""Personal access token values: make, parse, hash and compare them.

Format: ``<prefix>_<id><secret><checksum>``. ``id`` is 8 base62 characters
(public), ``secret`` 32 base62 characters from :mod:`secrets` (~190 bits),
``checksum`` 6 base62 characters of CRC32 over everything before it. The
checksum lets the gateway refuse typos and garbage before any store lookup
and lets secret scanners recognise leaked tokens by prefix and checksum.

Pure: no I/O. Randomness is a parameter so tests can fix it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib
from collections.abc import Callable
from dataclasses import dataclass

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ID_LENGTH = 8
SECRET_LENGTH = 32
CHECKSUM_LENGTH = 6
BODY_LENGTH = ID_LENGTH + SECRET_LENGTH + CHECKSUM_LENGTH
DEFAULT_PREFIX = "pgt"
PREFIX_PATTERN = re.compile(r"^[a-z][a-z0-9]{1,15}$")
MAX_TOKEN_LENGTH = 16 + 1 + BODY_LENGTH
_BODY_PATTERN = re.compile(rf"^[0-9A-Za-z]{{{BODY_LENGTH}}}$")

RandomChars = Callable[[int], str]


def random_base62(length: int) -> str:
    """``length`` characters drawn uniformly from BASE62 with :mod:`secrets`."""
    return "".join(secrets.choice(BASE62) for _ in range(length))


def encode_base62(number: int, width: int) -> str:
    """``number`` in base62, left-padded with ``0`` to ``width`` characters."""
    chars = []
    while number:
        number, digit = divmod(number, 62)
        chars.append(BASE62[digit])
    return "".join(reversed(chars)).rjust(width, "0")


def checksum(text: str) -> str:
    """The 6-character base62 CRC32 of ``text`` (``encode_base62(crc, 6)``)."""
    # Unrolled: this runs on every request, before any cache lookup.
    n, d5 = divmod(zlib.crc32(text.encode("ascii")), 62)
    n, d4 = divmod(n, 62)
    n, d3 = divmod(n, 62)
    n, d2 = divmod(n, 62)
    d0, d1 = divmod(n, 62)
    b = BASE62
    return b[d0] + b[d1] + b[d2] + b[d3] + b[d4] + b[d5]


@dataclass(frozen=True, slots=True)
class TokenValue:
    """A token that passed the shape and checksum checks.

    ``repr`` hides the value so that a stray log or traceback cannot leak it.
    """

    prefix: str
    token_id: str
    value: str

    def __repr__(self) -> str:
        return f"TokenValue(prefix={self.prefix!r}, token_id={self.token_id!r})"


def format_token(prefix: str, token_id: str, secret: str) -> str:
    """Assemble a token value from its parts, adding the checksum."""
    head = f"{prefix}_{token_id}{secret}"
    return head + checksum(head)


def new_token(
    prefix: str = DEFAULT_PREFIX,
    token_id: str | None = None,
    random_chars: RandomChars = random_base62,
) -> TokenValue:
    """A fresh token; pass ``token_id`` to keep an id (regenerate)."""
    tid = token_id if token_id is not None else random_chars(ID_LENGTH)
    value = format_token(prefix, tid, random_chars(SECRET_LENGTH))
    return TokenValue(prefix=prefix, token_id=tid, value=value)


def new_token_id(random_chars: RandomChars = random_base62) -> str:
    return random_chars(ID_LENGTH)


def parse_token(value: str, prefix: str = DEFAULT_PREFIX) -> TokenValue | None:
    """The parsed token, or None when ``value`` is not a well-formed token.

    Never raises, whatever ``value`` holds. A None here means the request is
    refused without touching the store.
    """
    token_id = token_id_of(value, prefix)
    if token_id is None:
        return None
    return TokenValue(prefix=prefix, token_id=token_id, value=value)


def token_id_of(value: str, prefix: str = DEFAULT_PREFIX) -> str | None:
    """The id of a well-formed token (shape and checksum checked), else None.

    What :func:`parse_token` checks, without building a TokenValue: the
    gateway calls this on every request.
    """
    if len(value) != len(prefix) + 1 + BODY_LENGTH:
        return None
    head, sep, body = value.partition("_")
    if head != prefix or not sep or not _BODY_PATTERN.match(body):
        return None
    # The checksum is no secret (anyone can compute it), so == is fine here.
    if checksum(value[:-CHECKSUM_LENGTH]) != body[-CHECKSUM_LENGTH:]:
        return None
    return body[:ID_LENGTH]


def looks_like_token_id(text: str) -> bool:
    return len(text) == ID_LENGTH and all(c in BASE62 for c in text)


def hash_token(value: str, pepper: bytes) -> bytes:
    """``sha256(pepper || value)``: what the store keeps instead of the value."""
    return hashlib.sha256(pepper + value.encode("ascii")).digest()


def hashes_match(stored: bytes, presented: bytes) -> bool:
    """Compare two token hashes in constant time."""
    # SECURITY: timing attack on the comparison; never use == on secrets.
    return hmac.compare_digest(stored, presented)
