"""The one canonical form of a request path: what is checked is what is sent.

:func:`normalise_path` turns the raw request-target path, exactly as it came
off the wire (before ``?``), into the string that routes and node scopes are
matched against **and** that is forwarded upstream byte for byte
(``URL(..., encoded=True)``). There is no second, decoded form for matching:
the canonical form is already as decoded as it can safely be (every
percent-escape of an unreserved character is decoded, so ``%2e%2e`` is a
``..`` segment and is resolved here), and every escape that remains stands
for a byte that means something else when decoded (``%3F``, ``%23``, UTF-8).
Matching on that one string means an upstream that decodes once sees exactly
the path that was authorised.

Ambiguous input is refused with :class:`PathError` (a 400 at the edge) rather
than guessed at: encoded separators (``%2F``, ``%5C``), NUL and control bytes,
backslashes, raw non-ASCII, broken escapes, double-encoded dots and
separators, and ``..`` that would climb above ``/``.

Pure: no I/O.
"""

from __future__ import annotations

import re

from patgate.errors import UsageError

__all__ = ["PathError", "normalise_path"]


class PathError(UsageError):
    """The request path is malformed or ambiguous; the edge answers 400."""


_UNRESERVED = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
)
# Printable ASCII outside pchar that clients send raw (a WebDAV file name with
# "#", "[" or a space): percent-encoded so the result is a valid path.
# SECURITY: a raw "#" would otherwise be read upstream as a fragment and
# everything after it dropped from the path that was authorised.
_ENCODE = frozenset(' "#<>[]^`{|}')
# Bytes that must never appear encoded: separators and NUL/control bytes.
# SECURITY: %2F and %5C become "/" and "\" behind the gateway (path confusion,
# traversal past a prefix check); %00 truncates paths in C-based upstreams.
_REFUSED_BYTES = frozenset([*range(0x00, 0x20), 0x7F, ord("/"), ord("\\")])
# SECURITY: double encoding ("%252e%252e", "%252f") survives one decode as an
# escape and turns into a dot segment or separator at an upstream that decodes
# twice. Checked on the output of the decoding pass, so "%25%32e" is caught too.
_DOUBLE_ENCODED = re.compile(r"%25(?:25)*(?:2E|2F|5C|[01][0-9A-F]|7F)", re.IGNORECASE)


# A path that is already canonical: non-empty segments of plain pchars that
# do not start with "." (so no dot segments), no escapes. The common case.
_CANONICAL = re.compile(
    r"(?:/[A-Za-z0-9_~!$&'()*+,;=:@-][A-Za-z0-9._~!$&'()*+,;=:@-]*)*/?"
)
# What the decoding pass has to look at: escapes (or a broken "%") and any
# character that is not kept as it is.
_NEEDS_WORK = re.compile(r"%(?:[0-9A-Fa-f]{2})?|[^A-Za-z0-9._~!$&'()*+,;=:@/-]")


def normalise_path(raw: str) -> str:
    """The canonical form of ``raw`` (a request path as sent, without query).

    Decodes escapes of unreserved characters, upper-cases the hex of the rest,
    encodes a raw ``#`` (and other non-path ASCII) as an escape, collapses
    duplicate slashes, removes ``.`` and ``..`` segments (RFC 3986 §5.2.4) and
    keeps a trailing slash. Idempotent. Raises :class:`PathError` for
    ambiguous input; never anything else.
    """
    if not raw.startswith("/"):
        raise PathError("request path must start with '/'")
    if _CANONICAL.fullmatch(raw):
        return raw
    decoded = _NEEDS_WORK.sub(_rewrite, raw)
    if _DOUBLE_ENCODED.search(decoded):
        raise PathError("request path holds a double-encoded separator or dot")
    if "//" not in decoded and "/." not in decoded:
        return decoded  # no empty or dot segments to remove
    return _remove_dot_segments(decoded)


def _rewrite(match: re.Match[str]) -> str:
    text = match.group()
    if text[0] == "%":
        return _decode_escape(text[1:])
    if text in _ENCODE:
        return f"%{ord(text):02X}"
    if text == "\\":
        raise PathError("request path holds a backslash")
    if text == "?":
        raise PathError("request path holds '?': pass the path without the query")
    if ord(text) > 0x7E:
        raise PathError("request path holds a raw non-ASCII character")
    raise PathError("request path holds a control character")


def _decode_escape(digits: str) -> str:
    if not digits:
        raise PathError("request path holds '%' not followed by two hex digits")
    value = int(digits, 16)
    if value in _REFUSED_BYTES:
        raise PathError(
            f"request path holds an encoded separator or control byte %{digits.upper()}"
        )
    char = chr(value)
    if char in _UNRESERVED:
        return char
    return f"%{digits.upper()}"


def _remove_dot_segments(path: str) -> str:
    segments = path.split("/")[1:]
    kept: list[str] = []
    for segment in segments:
        if segment in ("", "."):
            continue
        if segment == "..":
            if not kept:
                raise PathError("request path climbs above '/'")
            kept.pop()
            continue
        _refuse_disguised_dots(segment)
        kept.append(segment)
    if not kept:
        return "/"
    trailing = segments[-1] in ("", ".", "..")
    return "/" + "/".join(kept) + ("/" if trailing else "")


def _refuse_disguised_dots(segment: str) -> None:
    # SECURITY: "..;/" is ".." to Tomcat-style upstreams that drop ";params"
    # before resolving dot segments (the nginx/Tomcat "..;" bypass).
    head = segment.split(";", 1)[0].split("%3B", 1)[0]
    if head in (".", "..") and head != segment:
        raise PathError("request path holds a dot segment with parameters")
