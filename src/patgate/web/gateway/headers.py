"""What headers go upstream and come back: hop-by-hop, spoofing, forwarding.

Order matters (SPEC §8 "Connection-named headers"): hop-by-hop headers and
the ones a client names in ``Connection`` are dropped first, client-sent
identity headers in every spelling are dropped, and the gateway's own
identity headers are added last, so no client header can remove or fake them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from urllib.parse import quote

from multidict import CIMultiDict, CIMultiDictProxy

from patgate.config.model import OVERRIDE_HEADERS
from patgate.config.reader import fold_header
from patgate.extract import carries_token
from patgate.tokens import BODY_LENGTH

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Never forwarded upstream: the client already got its 100-continue, and the
# upstream's Host comes from the upstream URL.
NOT_FORWARDED = frozenset({"host", "expect", "content-length"})
# What only a proxy in trusted_proxies may tell an upstream: who the client
# is, which host and scheme it used. Any other X-Forwarded-* name too (by its
# prefix, see upstream_headers): an upstream may read whichever it likes.
# fmt: off
TRUSTED_ONLY = frozenset((
    "forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
    "x-real-ip", "x-client-ip", "true-client-ip", "cf-connecting-ip",
    "x-cluster-client-ip", "client-ip", "fastly-client-ip", "x-originating-ip",
    "x-remote-ip", "x-remote-addr", "x-host", "x-original-host",
    "x-http-host-override", "x-scheme", "x-url-scheme", "front-end-https",
))
# fmt: on
_FORWARDED_PREFIX = "x-forwarded-"

# The one name folding (case, "-", "_", ".") behind every strip decision.
header_key = fold_header


_NONE: frozenset[str] = frozenset()


def connection_named(headers: CIMultiDictProxy[str]) -> frozenset[str]:
    """Header names listed in ``Connection`` (they are hop-by-hop too)."""
    if "Connection" not in headers:
        return _NONE  # the common case: no sets built per request
    names: set[str] = set()
    for value in headers.getall("Connection", ()):
        names.update(header_key(part.strip()) for part in value.split(",") if part)
    return frozenset(names)


def header_drops(
    names: Iterable[str], passed: Iterable[str] = ()
) -> tuple[frozenset[str], frozenset[str]]:
    """The folded names a route never forwards: from a trusted peer, from others.

    ``names`` are the route's own (identity and credential headers, injected
    ones); hop-by-hop, never-forwarded and override headers (minus the
    route's ``passed``) are added, and for an untrusted peer
    :data:`TRUSTED_ONLY` too. Computed once per config load.
    """
    overrides = OVERRIDE_HEADERS - set(passed)
    trusted = frozenset(
        {*HOP_BY_HOP, *NOT_FORWARDED, *overrides, *map(header_key, names)}
    )
    return trusted, trusted | TRUSTED_ONLY


def upstream_headers(
    incoming: CIMultiDictProxy[str],
    *,
    drop: frozenset[str],
    peer_trusted: bool,
    token_prefix: str,
) -> CIMultiDict[str]:
    """Copy the client's headers minus ``drop``, Connection-named and token ones.

    ``drop`` holds folded names (``header_key``), see :func:`header_drops`.
    One pass: each name is folded once, and only a name or value long
    enough to hold a token is searched for one.
    """
    dropped = connection_named(incoming)
    untrusted = not peer_trusted
    shortest = len(token_prefix) + 1 + BODY_LENGTH
    result: CIMultiDict[str] = CIMultiDict()
    # aiohttp's client keeps repeats of a name only when they are spelled
    # alike (X-A and x-a would leave just the last value): spell them alike.
    spelling: dict[str, str] = {}
    for name, value in incoming.items():
        key = header_key(name)
        # SECURITY: X_Patgate_User is X-Patgate-User to WSGI/CGI upstreams,
        # X.Patgate.User to PHP; X-Original-URL and X-HTTP-Method-Override
        # change what the upstream does; X-Real-IP, X-Forwarded-* from an
        # untrusted client are spoofs.
        if key in drop or key in dropped:
            continue
        if untrusted and key.startswith(_FORWARDED_PREFIX):
            continue
        # SECURITY: a token where the route did not read it (a second
        # Authorization, X_API_Key, "Token ...", a cookie) leaks upstream.
        if (len(value) >= shortest and carries_token(value, token_prefix)) or (
            len(name) >= shortest and carries_token(name, token_prefix)
        ):
            continue
        if not is_utf8(value):
            continue
        result.add(spelling.setdefault(name.lower(), name), value)
    return result


def is_utf8(value: str) -> bool:
    """False for a header value whose bytes on the wire were not UTF-8.

    aiohttp's parsers decode header values with ``surrogateescape``.
    SECURITY: such a value cannot be forwarded as sent: aiohttp's C writer
    silently deletes the bytes (the upstream would see a different value
    than the client sent) and its Python writer raises (a 500 from the
    gateway itself, AIOHTTP_NO_EXTENSIONS=1). It is dropped instead.
    """
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def add_forwarding(
    headers: CIMultiDict[str],
    *,
    peer: str | None,
    scheme: str,
    host: str | None,
    peer_trusted: bool,
) -> None:
    """Set X-Forwarded-For/-Proto/-Host, extending a trusted proxy's values."""
    prior = headers.getall("X-Forwarded-For", []) if peer_trusted else []
    chain = [*prior, peer] if peer else prior
    if chain:
        headers["X-Forwarded-For"] = ", ".join(chain)
    if not (peer_trusted and "X-Forwarded-Proto" in headers):
        headers["X-Forwarded-Proto"] = scheme
    if host and is_utf8(host) and not (peer_trusted and "X-Forwarded-Host" in headers):
        headers["X-Forwarded-Host"] = host


def copy_response_headers(
    upstream: CIMultiDictProxy[str], into: CIMultiDict[str]
) -> None:
    """Add the upstream's response headers, minus hop-by-hop ones,
    Content-Length (the response sets its own) and Server (ours), to ``into``."""
    dropped = connection_named(upstream) if "Connection" in upstream else ()
    for name, value in upstream.items():
        key = name.lower()
        if key in HOP_BY_HOP or key in dropped or key in _OWN_RESPONSE_HEADERS:
            continue
        into.add(name, value)


# What the gateway's answer sets itself rather than copy from the upstream's.
_OWN_RESPONSE_HEADERS = frozenset({"content-length", "server"})


def identity_values(
    names: Mapping[str, str], user: str, token_id: str, scopes: tuple[str, ...]
) -> list[tuple[str, str]]:
    """The identity headers for a token's owner, id and effective scopes."""
    return [
        (names["user"], user),
        (names["token_id"], token_id),
        (names["scopes"], encode_scopes(scopes)),
    ]


# Characters an element of X-Patgate-Scopes keeps as they are; every other
# one is percent-encoded (UTF-8), so no element can hold a "," or a space.
_SCOPE_SAFE = ":/*"


@functools.lru_cache(maxsize=4096)
def encode_scopes(scopes: tuple[str, ...]) -> str:
    """``X-Patgate-Scopes``: the scopes comma-separated, each percent-encoded.

    SECURITY: a node path holding ``,`` (``node:/dav/x,*,admin:rw``) would
    read as three scopes to an upstream splitting at commas. Each element
    keeps ``A-Z a-z 0-9 - . _ ~ : / *`` and has every other character
    percent-encoded (``%2C``, ``%25``, ``%20``); an upstream splits at ``,``
    and percent-decodes each element. Ordinary scopes are unchanged.
    Cached: a handful of distinct scope sets serve every request.
    """
    return ",".join(quote(scope, safe=_SCOPE_SAFE) for scope in scopes)
