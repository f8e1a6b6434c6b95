"""WebDAV URLs in request headers, pointed at the upstream.

The gate has already checked them (:meth:`patgate.gate.Gate.check`): a
``Destination`` or ``If`` URL naming another server was refused, and the
``Destination`` path was authorised; here they are only rewritten, so that
the upstream's own host and scheme checks see its own URLs.
"""

from __future__ import annotations

from yarl import URL

from patgate.gate import IF_URL
from patgate.paths import PathError, normalise_path
from patgate.routing import CompiledRoute


def map_if_urls(if_header: str, route: CompiledRoute, base: str) -> str:
    """``If`` with the URLs of this route pointed at the upstream (``base``).

    The gate refused any URL naming another server; one of this gateway but
    outside the route, or no URL at all (a lock token), stays as it is.
    """
    return IF_URL.sub(lambda m: f"<{_map_if_url(m.group(1), route, base)}>", if_header)


def _map_if_url(value: str, route: CompiledRoute, base: str) -> str:
    try:
        url = URL(value, encoded=True)
        if not url.is_absolute():
            return value
        path = normalise_path(url.raw_path or "/")
    except (ValueError, PathError):
        return value
    if not path.startswith(route.config.prefix.rstrip("/")):
        return value
    return base + route.upstream_path(path)
