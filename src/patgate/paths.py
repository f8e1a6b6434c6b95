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
separators, ``..`` that would climb above ``/``, and a raw ``;``.

A raw ``;`` starts a path parameter to servlet containers (Tomcat, Jetty,
Spring: ``/stopenv;jsessionid=1`` is ``/stopenv``) and is an ordinary
character to most other servers (``/dav/a;b.txt`` is a file name). The
gateway cannot know which its upstream is, so it refuses the request rather
than strip the parameter: stripping would send a PUT or DELETE for
``a;b.txt`` to the file ``a`` at an upstream of the second kind. A client that
means the character sends ``%3B``, which is data (RFC 3986 §2.2) and is
forwarded as it is.

Upstreams read one path under many spellings, and :class:`PathPattern`
matches a route prefix or a ``paths`` pattern against each of them: as sent,
in any letter case (:meth:`PathPattern.folded`), and decoded as a hop in
front of a servlet container decodes it (:func:`decode_text`). Every form
ignores a trailing slash. :mod:`patgate.policy` decides what to make of
spellings that disagree.

Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote

from patgate.errors import UsageError

__all__ = [
    "Glob",
    "PathError",
    "PathPattern",
    "decode_text",
    "fold_case",
    "normalise_path",
]


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
    r"(?:/[A-Za-z0-9_~!$&'()*+,=:@-][A-Za-z0-9._~!$&'()*+,=:@-]*)*/?"
)
# What the decoding pass has to look at: escapes (or a broken "%") and any
# character that is not kept as it is.
_NEEDS_WORK = re.compile(r"%(?:[0-9A-Fa-f]{2})?|[^A-Za-z0-9._~!$&'()*+,=:@/-]")


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
    if text == ";":
        # SECURITY: "/stopenv;jsessionid=1" is "/stopenv" to a servlet
        # container but matches no rule for "/stopenv" (see the module doc).
        raise PathError("request path holds ';' (a path parameter): send it as %3B")
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
    # SECURITY: "..%3B/" is ".." to a Tomcat-style upstream behind a hop that
    # decodes (the nginx/Tomcat "..;" bypass); a raw ";" is refused earlier.
    head = segment.split("%3B", 1)[0]
    if head in (".", "..") and head != segment:
        raise PathError("request path holds a dot segment with parameters")


# --------------------------------------------------------------------------
# Spellings


@dataclass(frozen=True, slots=True)
class Glob:
    """A pattern compiled for one spelling: ``matches(key)`` on that spelling.

    ``*`` is any run of characters, ``/`` included; a final ``/*`` is the
    parent or below (``/a/*`` matches ``/a``, ``/a/`` and ``/a/b``); a final
    ``/`` is optional on both sides. The common shapes, a path and a path with
    ``/*``, are string tests, not regexes: this runs on every request.
    """

    exact: tuple[str, ...]
    below: tuple[str, ...]
    pattern: re.Pattern[str] | None

    @classmethod
    def compile(cls, glob: str, fold: Callable[[str], str] = str) -> Glob:
        # SECURITY: "/api/admin/*" must also cover "/api/admin" itself.
        subtree = glob.endswith("/*")
        body = glob[:-2] if subtree else glob
        if len(body) > 1 and body.endswith("/"):
            body = body[:-1]
        if "*" in body:
            regex = ".*".join(re.escape(fold(part)) for part in body.split("*"))
            regex += "(?:/.*)?" if subtree else "/?"
            return cls((), (), re.compile(regex, re.DOTALL))
        body = fold(body)
        if subtree:
            return cls((body,), (body + "/",), None)
        return cls((body, body + "/"), (), None)

    def matches(self, key: str) -> bool:
        if key in self.exact or key.startswith(self.below):
            return True
        return self.pattern is not None and self.pattern.fullmatch(key) is not None


@dataclass(frozen=True, slots=True)
class PathPattern:
    """A canonical glob (a ``paths`` pattern, or a prefix as ``/prefix/*``).

    ``as_sent`` matches the path as it came, ``folded`` its lower-case form
    (unless the route is ``case_sensitive``, when it is ``as_sent``),
    ``decoded`` its :func:`decode_text` form.
    """

    as_sent: Glob
    folded: Glob
    decoded: Glob

    @classmethod
    def compile(cls, glob: str, *, case_sensitive: bool) -> PathPattern:
        as_sent = Glob.compile(glob)
        folded = as_sent if case_sensitive else Glob.compile(glob, str.lower)
        decoded = Glob.compile(
            glob, lambda text: decode_text(text, case_sensitive=case_sensitive)
        )
        return cls(as_sent, folded, decoded)


def decode_text(text: str, *, case_sensitive: bool = False) -> str:
    """``text`` (a canonical path) as an upstream may read it once decoded.

    Decoded once, cut at a decoded ``?`` or ``#`` and each segment at a
    decoded ``;`` (what a decoding hop in front of a servlet container makes
    of ``%3F``, ``%23``, ``%3B``), and, unless ``case_sensitive``, case folded
    as Java's and .NET's case-insensitive comparisons fold it (``%C4%B1``,
    dotless i, is "i"; ``%E2%84%AA``, Kelvin, is "k").
    """
    decoded = unquote(text, errors="surrogateescape")
    for mark in "?#":
        decoded = decoded.partition(mark)[0]
    if ";" in decoded:
        decoded = "/".join(part.partition(";")[0] for part in decoded.split("/"))
        while "//" in decoded:  # a segment that was all parameter ("/;x/")
            decoded = decoded.replace("//", "/")
    return decoded if case_sensitive else fold_case(decoded)


def fold_case(text: str) -> str:
    """``text`` case folded so that every upper/lower case pair is one letter."""
    if text.isascii():
        return text.lower()
    return "".join(_fold_char(char) for char in text)


@lru_cache(maxsize=4096)
def _fold_char(char: str) -> str:
    # Java's equalsIgnoreCase and .NET's OrdinalIgnoreCase compare characters
    # by their simple upper case (then lower case): dotless i (U+0131) and
    # long s (U+017F) upper to "I" and "S", the Kelvin sign (U+212A) lowers to
    # "k", dotted capital I (U+0130) to "i". Python's mappings are the full
    # ones ("ß" upper is "SS"): one that changes the length is not applied.
    upper = char.upper()
    if len(upper) != 1:
        upper = char
    lower = upper.lower()
    return lower[0] if lower else char
