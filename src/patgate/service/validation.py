"""Checks of what a caller asks for, each failure one :class:`UsageError`.

Logins, passwords, token names and projects, CIDRs, rate limits, durations
and token ids: the limits every management operation applies before it
touches the store.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Iterable

from patgate import tokens
from patgate.errors import UsageError

LOGIN_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
MAX_NAME_LENGTH = 200
MAX_PROJECT_LENGTH = 100
MAX_RATE_LIMIT = 1_000_000
MAX_LEAK_REPORT = 100


def validate_login(login: str) -> str:
    if not LOGIN_PATTERN.fullmatch(login):
        raise UsageError(
            f"invalid login {login!r}: use 1-64 letters, digits, '.', '_', '@' or"
            " '-', starting with a letter or digit"
        )
    return login


def validate_password(password: str) -> str:
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise UsageError(
            f"invalid password: use {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH}"
            " characters"
        )
    return password


def validate_text(what: str, text: str, limit: int) -> str:
    if len(text) > limit:
        raise UsageError(f"invalid {what}: longer than {limit} characters")
    if any(unicodedata.category(char).startswith("C") for char in text):
        raise UsageError(f"invalid {what}: control characters are not allowed")
    return text


def validate_project(project: str | None) -> str | None:
    if project is None or project == "":
        return None
    return validate_text("project", project, MAX_PROJECT_LENGTH)


def validate_cidrs(cidrs: Iterable[str]) -> tuple[str, ...]:
    """Each CIDR normalised (``10.0.0.5/24`` → ``10.0.0.0/24``), duplicates dropped."""
    result: list[str] = []
    for cidr in cidrs:
        try:
            network = ipaddress.ip_network(cidr.strip(), strict=False)
        except ValueError:
            raise UsageError(
                f"invalid CIDR {cidr!r}: expected an address or network such as"
                " 192.0.2.0/24 or 2001:db8::/32"
            ) from None
        if str(network) not in result:
            result.append(str(network))
    return tuple(result)


def validate_rate_limit(rate_limit: int | None) -> int | None:
    if rate_limit is None:
        return None
    if (
        isinstance(rate_limit, bool)
        or not isinstance(rate_limit, int)
        or not 0 < rate_limit <= MAX_RATE_LIMIT
    ):
        raise UsageError(
            f"invalid rate limit {rate_limit!r}: expected requests per minute,"
            f" 1 to {MAX_RATE_LIMIT}"
        )
    return rate_limit


def validate_seconds(what: str, seconds: int | None) -> int | None:
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds <= 0:
        raise UsageError(f"invalid {what} {seconds!r}: expected a positive duration")
    return seconds


def validate_token_id(token_id: str) -> str:
    if not tokens.looks_like_token_id(token_id):
        # SECURITY: a whole token value pasted as an id must not be echoed back.
        raise UsageError(
            f"invalid token id: expected {tokens.ID_LENGTH} letters and digits"
        )
    return token_id
