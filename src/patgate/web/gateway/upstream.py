"""The one pooled client session every route's upstream calls go through.

A proxy forwards the client's headers and adds none of its own: aiohttp's
client would add ``Accept``, ``Accept-Encoding``, ``User-Agent`` and, for a
streamed body, ``Content-Type``. Its ``skip_auto_headers`` option prevents
that, but sorts and copies the skip list and the request's headers on every
call (~8 us a request); :class:`UpstreamRequest` sets the same skip list once,
and takes the request's headers in one C-level copy.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import (
    ClientRequest,
    ClientSession,
    ClientTimeout,
    DummyCookieJar,
    TCPConnector,
    hdrs,
)
from aiohttp.typedefs import LooseHeaders
from multidict import CIMultiDict, CIMultiDictProxy

# The session's timeouts; routes with other timeouts pass theirs per request.
DEFAULT_TIMEOUT = ClientTimeout(total=None, sock_connect=5.0, sock_read=300.0)
# Headers aiohttp would add on its own; an upstream sees the client's instead.
SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
# Read-only: every request shares it, and aiohttp hands it out as
# ``ClientRequest.skip_auto_headers``.
_SKIPPED = CIMultiDictProxy(
    CIMultiDict((name, None) for name in sorted(SKIP_AUTO_HEADERS))
)


class UpstreamRequest(ClientRequest):
    """aiohttp's request, adding no headers of its own (see the module doc).

    ``_skip_auto_headers`` is what aiohttp's own ``update_auto_headers`` sets
    and what its body and send code consult before adding a Content-Type;
    tests/integration/test_proxy.py checks the headers an upstream sees.
    """

    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:
        # aiohttp only tests membership in it (3.11.8 and later: pyproject.toml).
        self._skip_auto_headers = _SKIPPED  # type: ignore[assignment]

    def update_headers(self, headers: LooseHeaders | None) -> None:
        """Host first, then the given headers in order, copied in C.

        aiohttp's own copies them one by one in Python; patgate's headers
        never carry a Host (the upstream URL's is sent), else aiohttp's way.
        """
        if not isinstance(headers, CIMultiDict) or hdrs.HOST in headers:
            super().update_headers(headers)
            return
        host = self.url.host_port_subcomponent
        assert host is not None  # an absolute URL
        self.headers = CIMultiDict(((hdrs.HOST, host),))
        self.headers.extend(headers)


def open_upstream_session() -> ClientSession:
    """The session: no pool limit, no cookies kept, bodies passed as they are."""
    return ClientSession(
        connector=TCPConnector(limit=0, limit_per_host=0),
        auto_decompress=False,
        # SECURITY: a shared jar would hand one client's upstream cookies to all.
        cookie_jar=DummyCookieJar(),
        request_class=UpstreamRequest,
        timeout=DEFAULT_TIMEOUT,
    )
