"""Cross-site rules for the management API: CSRF through the user's browser.

A browser attaches the user's credentials (the page's session cookie, or the
Basic credentials it cached once the user answered the API's login prompt) to
requests that any other site can make it send: a ``<form>`` POST, an image, a
``fetch()`` in ``no-cors`` mode. Such a cross-site request can only be
"simple": GET, HEAD or POST, a body of ``text/plain``,
``application/x-www-form-urlencoded`` or ``multipart/form-data``, no custom
header. Anything else needs a CORS preflight, which this API never grants.
Hence three rules:

1. Every state-changing call (any method but GET, HEAD and OPTIONS) carries a
   JSON body, ``Content-Type: application/json`` (or ``application/*+json``),
   ``{}`` when there is nothing to say: no cross-site form can send that.
2. And it comes from the API's own origin: ``Origin``, when present, names
   the request's own scheme, host and port; ``Sec-Fetch-Site``, when present,
   is ``same-origin`` or ``none``. ``Origin: null`` (sandboxed frames, some
   redirects) matches nothing. A request with neither header is not from a
   browser (curl, scripts, other servers) and passes: every current browser
   sends ``Origin`` with every request that is not a GET or HEAD, and rule 1
   alone already keeps cross-site forms out. Rule 2 is there for what rule 1
   cannot see: a page of another port or subdomain on the same site (a
   same-site request; SameSite cookies do not stop it), or a browser bug
   that lets a JSON body through without a preflight.
3. A request from a browser never gets a ``WWW-Authenticate: Basic``
   challenge, so no lured navigation makes the browser ask for, and then
   cache and resend, the user's password. Browsers are told apart by what
   only they send: ``Sec-Fetch-*``, ``Origin``, or ``Accept`` naming
   ``text/html``.

Pure: headers in (any case-insensitive mapping), verdicts out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))
SAME_ORIGIN_SITES = frozenset(("same-origin", "none"))
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}
_FETCH_METADATA = (
    "Sec-Fetch-Site",
    "Sec-Fetch-Mode",
    "Sec-Fetch-Dest",
    "Sec-Fetch-User",
)


def changes_state(method: str) -> bool:
    """True for the methods that must pass the JSON and same-origin rules."""
    return method.upper() not in SAFE_METHODS


def is_json(content_type: str) -> bool:
    """``application/json`` or ``application/<anything>+json`` (parameters aside)."""
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def cross_origin_reason(
    headers: Mapping[str, str], hosts: Iterable[str], *, https: bool
) -> str | None:
    """Why this request is not from the API's own origin; None when it may be.

    ``hosts`` are the names the request was sent to (its ``Host``, and what a
    trusted proxy says in ``X-Forwarded-Host``); ``https`` is True when the
    gateway knows the request came over TLS, so an ``http`` origin is foreign.
    """
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site.strip().lower() not in SAME_ORIGIN_SITES:
        return f"Sec-Fetch-Site is {site.strip()[:40]!r}"
    origin = headers.get("Origin")
    if origin is not None and not origin_matches(origin, hosts, https=https):
        return "Origin is not this API's origin"
    return None


def origin_matches(origin: str, hosts: Iterable[str], *, https: bool) -> bool:
    """True when ``origin`` (``scheme://host[:port]``) is one of ``hosts``."""
    scheme, sep, authority = origin.strip().lower().partition("://")
    if not sep or scheme not in _DEFAULT_PORTS or (https and scheme != "https"):
        return False
    if not authority or any(char in authority for char in "/?#@ \t\\"):
        return False
    own = _without_default_port(authority, scheme)
    return any(
        own == _without_default_port(host.strip().lower(), scheme) for host in hosts
    )


def _without_default_port(authority: str, scheme: str) -> str:
    return authority.removesuffix(_DEFAULT_PORTS[scheme])


def from_browser(headers: Mapping[str, str]) -> bool:
    """True when a browser made this request (rule 3: no Basic challenge)."""
    if any(name in headers for name in _FETCH_METADATA) or "Origin" in headers:
        return True
    return "text/html" in headers.get("Accept", "").lower()
