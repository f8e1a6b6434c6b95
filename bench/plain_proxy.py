"""A plain aiohttp reverse proxy with no authentication: the ceiling for patgate.

It does the forwarding work that patgate does and nothing else: one pooled
``ClientSession``, request and response bodies streamed both ways (never read
whole), hop-by-hop headers dropped (including those a ``Connection`` header names),
``Expect`` not forwarded, ``X-Forwarded-For/-Proto/-Host`` set, the path and query
forwarded as received (``encoded=True``), no decompression, no redirects, no total
timeout. Upstream unreachable → 502. uvloop when installed; no access log.

    python bench/plain_proxy.py --listen 127.0.0.1:8090 --upstream http://127.0.0.1:8081
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from upstream import run_fast, serve  # the same serving loop as the upstream's

HOP_BY_HOP = frozenset(
    name.lower()
    for name in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
    )
)
# Not hop-by-hop, but not forwarded either: aiohttp sets Host for the upstream, and
# the server side has already answered Expect: 100-continue.
NOT_FORWARDED = HOP_BY_HOP | {"host", "expect"}
# aiohttp's client would add its own Accept, Accept-Encoding, User-Agent and a
# Content-Type for streamed bodies; a proxy forwards the client's, not its own.
SKIP_AUTO_HEADERS = (
    hdrs.ACCEPT,
    hdrs.ACCEPT_ENCODING,
    hdrs.USER_AGENT,
    hdrs.CONTENT_TYPE,
)

SESSION = web.AppKey("session", ClientSession)
UPSTREAM = web.AppKey("upstream", str)


def connection_named(headers: CIMultiDictProxy[str]) -> frozenset[str]:
    """Header names listed in Connection, which are hop-by-hop for this hop only."""
    values = headers.getall(hdrs.CONNECTION, ())
    return frozenset(
        token.strip().lower() for value in values for token in value.split(",")
    )


def forward_request_headers(request: web.Request) -> CIMultiDict[str]:
    drop = NOT_FORWARDED | connection_named(request.headers)
    out = CIMultiDict(
        (name, value)
        for name, value in request.headers.items()
        if name.lower() not in drop
    )
    peer = request.remote or ""
    prior = request.headers.get("X-Forwarded-For")
    out["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    out["X-Forwarded-Proto"] = request.scheme
    out["X-Forwarded-Host"] = request.host
    return out


def forward_response_headers(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    drop = HOP_BY_HOP | connection_named(headers)
    return CIMultiDict(
        (name, value) for name, value in headers.items() if name.lower() not in drop
    )


async def proxy(request: web.Request) -> web.StreamResponse:
    session = request.app[SESSION]
    url = URL(request.app[UPSTREAM] + request.raw_path, encoded=True)
    body = request.content if request.can_read_body else None
    response: web.StreamResponse | None = None
    try:
        async with session.request(
            request.method,
            url,
            headers=forward_request_headers(request),
            data=body,
            allow_redirects=False,
            skip_auto_headers=SKIP_AUTO_HEADERS,
        ) as upstream:
            response = web.StreamResponse(
                status=upstream.status,
                reason=upstream.reason,
                headers=forward_response_headers(upstream.headers),
            )
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
    except ConnectionResetError:
        if response is None:
            raise
        # The client left mid-response (wrk closes its connections when a run
        # ends): nothing to answer; aiohttp closes the connection quietly.
    except ClientError:
        if response is not None and response.prepared:
            raise  # mid-body: all we can do is drop the connection
        raise web.HTTPBadGateway() from None
    return response


async def client_session(app: web.Application) -> AsyncIterator[None]:
    """The one pooled upstream session, made and closed with the app."""
    async with ClientSession(
        connector=TCPConnector(limit=0, ttl_dns_cache=None),
        timeout=ClientTimeout(total=None, sock_connect=10),
        auto_decompress=False,
    ) as session:
        app[SESSION] = session
        yield


def create_app(upstream: str) -> web.Application:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")
    app.cleanup_ctx.append(client_session)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:8090", help="host:port")
    parser.add_argument("--upstream", default="http://127.0.0.1:8081")
    args = parser.parse_args()
    run_fast(lambda loop_name: serve(create_app(args.upstream), args.listen, loop_name))


if __name__ == "__main__":
    main()
