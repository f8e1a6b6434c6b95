"""Web page sessions: a signed cookie, and the CSRF token bound to it.

A session lives in its cookie:
``v1.<login, base64url>.<expires, epoch s>.<nonce>.<mac>`` where ``mac`` is an
HMAC-SHA256 keyed by :func:`session_key`, which is derived from the pepper
and the user's *current* password hash. So:

- every worker process and every restart accepts the same cookie, with no
  shared secret to distribute (the store already holds what the key needs);
- changing the user's password (or disabling the user) ends their sessions;
- forging a cookie needs the password hash, i.e. the store itself.

The one thing kept on the server is the end of a session before its expiry:
a logout records the cookie's nonce (its session id) in the store until the
cookie would have expired (``Store.revoke_session``), and the API refuses a
recorded session on every worker and replica.

The CSRF token is an HMAC of the cookie under the same key: the page reads it
from ``GET /_patgate/api/v1/session`` (the cookie itself is HttpOnly) and sends
it back in a header on every API call.

A session only reads: every change still needs the password.
Pure: time and randomness are parameters.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

VERSION = "v1"
SESSION_SECONDS = 8 * 3600
_KEY_LABEL = b"patgate-page-session-v1\x00"


@dataclass(frozen=True, slots=True)
class SessionClaim:
    """What a cookie says before it is verified: whose, until when, which one."""

    login: str
    expires_at: int
    session_id: str  # the nonce: what a logout records as ended


def session_key(pepper: bytes, password_hash: str) -> bytes:
    """The per-user signing key; it changes when the password does."""
    return hmac.new(
        pepper or b"\x00", _KEY_LABEL + password_hash.encode(), hashlib.sha256
    ).digest()


def issue_session(login: str, key: bytes, *, now: float, nonce: bytes) -> str:
    """A new cookie value for ``login``, valid ``SESSION_SECONDS`` from ``now``."""
    body = ".".join(
        (VERSION, _b64(login.encode()), str(int(now) + SESSION_SECONDS), _b64(nonce))
    )
    return f"{body}.{_mac(key, body)}"


def read_session(cookie: str) -> SessionClaim | None:
    """The claim a well-formed cookie makes; None for anything malformed."""
    parts = cookie.split(".")
    if len(parts) != 5 or parts[0] != VERSION or not parts[2].isdigit():
        return None
    try:
        login = _unb64(parts[1]).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    if not login or not parts[3]:
        return None
    return SessionClaim(login=login, expires_at=int(parts[2]), session_id=parts[3])


def verify_session(cookie: str, key: bytes, *, now: float) -> bool:
    """True when ``cookie`` was signed with ``key`` and has not expired."""
    claim = read_session(cookie)
    if claim is None or now >= claim.expires_at or not cookie.isascii():
        return False
    body, _, mac = cookie.rpartition(".")
    # SECURITY: forged session cookies; constant-time comparison of the MAC.
    return hmac.compare_digest(_mac(key, body), mac)


def csrf_token(key: bytes, cookie: str) -> str:
    """The token the page must echo in a header: bound to this one session."""
    return _mac(key, "csrf:" + cookie)


def csrf_matches(key: bytes, cookie: str, presented: str | None) -> bool:
    # SECURITY: cross-site request forgery; a page on another origin can make
    # the browser send the cookie (SameSite aside) but cannot read this token.
    if not presented or not presented.isascii():
        return False
    return hmac.compare_digest(csrf_token(key, cookie), presented)


def _mac(key: bytes, text: str) -> str:
    return _b64(hmac.new(key, text.encode(), hashlib.sha256).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        padded = text + "=" * (-len(text) % 4)
        return base64.b64decode(padded, altchars=b"-_", validate=True)
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None
