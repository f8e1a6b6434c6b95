"""Finding the credential in a request: Bearer, Basic, query parameter, API key.

:func:`extract_credential` looks at every source the route accepts and returns
one :class:`Credential`, nothing (``None``), or a :class:`CredentialError`
(an outcome, answered with 400 at the edge) when the request is ambiguous:
two ``Authorization`` headers, two different tokens in two places, a header
that cannot be parsed. It never picks "the first" of two.

:func:`strip_query_params` removes the query tokens from the forwarded query
and from log lines, leaving every other byte as the client sent it.

:func:`carries_token` tells whether any text (a header name or value, a query
pair) holds a well-formed token of this gateway, plain, percent-encoded to
any depth, or inside Basic credentials; :func:`strip_token_pairs` removes
such pairs from a query. They keep tokens from reaching an upstream in a
place that was not read as the credential.

Pure: no I/O. Works on plain strings so any HTTP layer can feed it.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote

from patgate.tokens import BODY_LENGTH, token_id_of

__all__ = [
    "ASCII_ESCAPE",
    "MAX_ENCODING_LAYERS",
    "SOURCES",
    "Credential",
    "CredentialError",
    "CredentialSource",
    "carries_token",
    "extract_credential",
    "parse_basic_authorization",
    "strip_query_params",
    "strip_token_pairs",
    "unquote_ascii",
]

CredentialSource = Literal["bearer", "basic", "query", "header"]
SOURCES: tuple[CredentialSource, ...] = ("bearer", "basic", "query", "header")

# RFC 7235 §2.1: auth-scheme 1*SP token68. One run of spaces or tabs is
# tolerated between the scheme and the credentials; nothing else.
_SCHEME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*")


@dataclass(slots=True)  # made per request: not frozen, which costs more
class Credential:
    """A token value and where it came from; ``login`` is the Basic user name.

    ``repr`` hides the value so that a stray log line cannot leak it.
    """

    value: str = field(repr=False)
    source: CredentialSource
    login: str | None = None


@dataclass(frozen=True, slots=True)
class CredentialError:
    """Why the credentials of a request are unusable; the edge answers 400.

    ``code`` is one of ``duplicate_authorization``, ``malformed_authorization``,
    ``bad_base64``, ``non_utf8``, ``conflicting_credentials``. ``message`` is
    safe to show the client: it never contains a credential.
    """

    code: str
    message: str


def extract_credential(
    authorization: Sequence[str],
    api_key: Sequence[str],
    raw_query: str,
    sources: Collection[str],
    query_params: Collection[str],
) -> Credential | CredentialError | None:
    """The one credential of a request, from the sources the route accepts.

    ``authorization`` holds every ``Authorization`` header value, ``api_key``
    every value of the route's API-key header, ``raw_query`` the query as sent
    (without ``?``). A scheme or source the route does not accept is not a
    credential and is ignored. The same value in several places is one
    credential; different values are ``conflicting_credentials``.
    """
    if len(authorization) > 1:
        # SECURITY: two Authorization headers; a proxy and an upstream could
        # each pick a different one. Refuse instead of using the first.
        return CredentialError(
            "duplicate_authorization", "more than one Authorization header"
        )
    if not api_key and not raw_query:
        # The common case (one Authorization header, nothing else): no merging.
        return _from_authorization(authorization, sources)
    found: list[Credential] = []
    for candidate in (
        _from_authorization(authorization, sources),
        _from_api_key(api_key, sources),
        _from_query(raw_query, sources, query_params),
    ):
        if isinstance(candidate, CredentialError):
            return candidate
        if candidate is not None:
            found.append(candidate)
    if not found:
        return None
    first = found[0]
    if any(other.value != first.value for other in found[1:]):
        # SECURITY: two different tokens in one request; whichever the
        # gateway checked, the upstream might act on the other.
        return _conflict()
    return first


def _conflict() -> CredentialError:
    return CredentialError(
        "conflicting_credentials", "the request carries two different credentials"
    )


def _from_authorization(
    values: Sequence[str], sources: Collection[str]
) -> Credential | CredentialError | None:
    if not values:
        return None
    header = values[0]
    if header.startswith("Bearer ") and "bearer" in sources:
        # The common spelling, taken as the general parse below would take it.
        params = header[7:]
        if _TOKEN68.fullmatch(params):
            return Credential(params, "bearer")
    split = _split_authorization(header, sources)
    if not isinstance(split, tuple):
        return split
    scheme, params = split
    if scheme == "bearer":
        return Credential(value=params, source="bearer")
    basic = _parse_basic(params)
    if not isinstance(basic, tuple):
        return basic
    login, password = basic
    if not password:
        # A client probing with "login:" has no token yet: no credential, so
        # it gets the 401 challenge rather than a 400.
        return None
    return Credential(value=password, source="basic", login=login)


def parse_basic_authorization(header: str) -> tuple[str, str] | CredentialError | None:
    """``(login, password)`` of an ``Authorization: Basic`` value.

    None when the scheme is not Basic; a :class:`CredentialError` when it
    cannot be parsed. The one Basic parser, used by the gateway (through
    :func:`extract_credential`) and by the management API.
    """
    split = _split_authorization(header, ("basic",))
    if not isinstance(split, tuple):
        return split
    return _parse_basic(split[1])


def _split_authorization(
    header: str, schemes: Collection[str]
) -> tuple[str, str] | CredentialError | None:
    """``(scheme, credentials)`` for a bearer/basic scheme among ``schemes``."""
    header = header.strip(" \t")
    match = _SCHEME.match(header)
    if match is None:
        return None
    scheme = match.group().lower()
    if scheme not in ("bearer", "basic") or scheme not in schemes:
        return None
    rest = header[match.end() :]
    params = rest.lstrip(" \t")
    if params == rest or not _TOKEN68.fullmatch(params):
        return CredentialError(
            "malformed_authorization",
            f"the Authorization header is not '{scheme.title()} <credentials>'",
        )
    return scheme, params


def _parse_basic(params: str) -> tuple[str, str] | CredentialError:
    try:
        raw = base64.b64decode(params, validate=True)
    except (binascii.Error, ValueError):
        return CredentialError(
            "bad_base64", "the Basic credentials are not valid base64"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return CredentialError("non_utf8", "the Basic credentials are not UTF-8")
    login, sep, password = text.partition(":")
    if not sep:
        return CredentialError(
            "malformed_authorization", "the Basic credentials have no ':'"
        )
    return login, password


def _from_api_key(
    values: Sequence[str], sources: Collection[str]
) -> Credential | CredentialError | None:
    if not values or "header" not in sources:
        return None
    present = {value.strip(" \t") for value in values} - {""}
    if len(present) > 1:
        return _conflict()
    if not present:
        return None
    return Credential(value=present.pop(), source="header")


def _from_query(
    raw_query: str, sources: Collection[str], names: Collection[str]
) -> Credential | CredentialError | None:
    if "query" not in sources or not raw_query:
        return None
    present: set[str] = set()
    for pair in raw_query.split("&"):
        name, _, raw_value = pair.partition("=")
        if _param_name(name) not in names:
            continue
        try:
            value = unquote(raw_value, errors="strict")
        except UnicodeDecodeError:
            return CredentialError(
                "non_utf8", "a query credential is not UTF-8 once decoded"
            )
        if value:
            present.add(value)
    if len(present) > 1:
        return _conflict()
    if not present:
        return None
    return Credential(value=present.pop(), source="query")


def _param_name(raw_name: str) -> str:
    # SECURITY: "access%5Ftoken" is "access_token" to the upstream's parser;
    # compare decoded names so an encoded spelling is found and stripped too.
    if "%" not in raw_name:
        return raw_name
    return unquote(raw_name, errors="replace")


def strip_query_params(raw_query: str, names: Collection[str]) -> str:
    """``raw_query`` without any ``name=...`` pair for ``names``.

    Every other byte stays as the client sent it: pairs are split at ``&``,
    the matching ones dropped, the rest joined again with ``&`` in order.
    A query without those names is returned unchanged.
    """
    if not raw_query or not names:
        return raw_query
    pairs = raw_query.split("&")
    kept = [pair for pair in pairs if _param_name(pair.partition("=")[0]) not in names]
    if len(kept) == len(pairs):
        return raw_query
    return "&".join(kept)


# A percent-escape of an ASCII character: the only ones that can spell a
# token's characters (or the "%" of a deeper escape).
ASCII_ESCAPE = re.compile(r"%[0-7][0-9A-Fa-f]")
# More layers of percent-encoding than any real client sends: a value still
# encoded after these is treated as carrying a token (fail closed).
MAX_ENCODING_LAYERS = 8


def _unescape(match: re.Match[str]) -> str:
    return chr(int(match.group()[1:], 16))


def unquote_ascii(text: str) -> str:
    """``text`` with its ASCII percent-escapes decoded once (``%5F`` → ``_``)."""
    return ASCII_ESCAPE.sub(_unescape, text)


def carries_token(text: str, prefix: str) -> bool:
    """Whether ``text`` holds a well-formed token with ``prefix`` anywhere.

    Plain (``Token pgt_...``, ``a=1; s=pgt_...``), percent-encoded to any
    depth (``pgt%5F...``, ``pgt%255F...``, every character escaped), or in
    Basic credentials (login or password). "Well-formed" is the shape and
    the checksum, so an upstream's own credentials that merely look alike
    still pass. Cheap on text without the marker, ``%`` or ``Basic``.
    """
    marker = prefix + "_"
    if marker in text and _holds_token(text, marker, prefix):
        return True
    if "%" in text and _encoded_token(text, marker, prefix):
        return True
    return _basic_token(text, marker, prefix)


def _holds_token(text: str, marker: str, prefix: str) -> bool:
    size = len(marker) + BODY_LENGTH
    at = text.find(marker)
    while at != -1:
        if token_id_of(text[at : at + size], prefix) is not None:
            return True
        at = text.find(marker, at + 1)
    return False


def _encoded_token(text: str, marker: str, prefix: str) -> bool:
    layer = text
    for _ in range(MAX_ENCODING_LAYERS):
        decoded = unquote_ascii(layer)
        if decoded == layer:
            return False
        if marker in decoded and _holds_token(decoded, marker, prefix):
            return True
        layer = decoded
    # SECURITY: an attacker nesting escapes deeper than we decode.
    return True


def _basic_token(text: str, marker: str, prefix: str) -> bool:
    head = text.lstrip(" \t")
    if head[:5].lower() != "basic" or head[5:6] not in (" ", "\t"):
        return False
    encoded = head[5:].strip(" \t")
    try:
        # Lenient like many upstreams: missing padding is supplied.
        raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        return False
    decoded = raw.decode("latin-1")
    if marker in decoded and _holds_token(decoded, marker, prefix):
        return True
    return "%" in decoded and _encoded_token(decoded, marker, prefix)


def strip_token_pairs(raw_query: str, prefix: str) -> str:
    """``raw_query`` without the pairs that carry a token (see :func:`carries_token`).

    Every other byte stays as the client sent it, as in
    :func:`strip_query_params`. A query that cannot hold one is returned at
    once: shorter than a token, or neither the marker nor ``%`` in it.
    """
    if len(raw_query) < len(prefix) + 1 + BODY_LENGTH or (
        prefix + "_" not in raw_query and "%" not in raw_query
    ):
        return raw_query
    pairs = raw_query.split("&")
    kept = [pair for pair in pairs if not carries_token(pair, prefix)]
    if len(kept) == len(pairs):
        return raw_query
    return "&".join(kept)
