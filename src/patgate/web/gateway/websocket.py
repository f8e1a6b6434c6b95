"""WebSocket upgrades: connect upstream first, then upgrade the client and pump.

The upstream connection is made before the client's upgrade is answered, so
an unreachable upstream is still a plain 502. The pump ends when either side
closes, or when a revocation cancels the handler (``StreamRegistry``).
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import ClientSession, ClientWebSocketResponse, WSMessage, WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

from patgate.web.errors import error_response
from patgate.web.ops.access import Exchange

# The handshake headers are the client library's to set, not ours to copy.
HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
    }
)


async def proxy_websocket(
    request: web.Request,
    exchange: Exchange,
    session: ClientSession,
    url: URL,
    headers: CIMultiDict[str],
    style: str,
) -> web.StreamResponse:
    protocols = tuple(
        p.strip()
        for value in request.headers.getall("Sec-WebSocket-Protocol", ())
        for p in value.split(",")
        if p.strip()
    )
    forwarded = CIMultiDict(
        (k, v) for k, v in headers.items() if k.lower() not in HANDSHAKE
    )
    ws_url = url.with_scheme("wss" if url.scheme == "https" else "ws")
    try:
        upstream = await session.ws_connect(
            ws_url, headers=forwarded, protocols=protocols, autoping=False
        )
    except TimeoutError:
        return error_response(504, "gateway_timeout", style=style)
    except Exception:  # any failure to connect upstream is a 502
        return error_response(502, "bad_gateway", style=style)
    client = web.WebSocketResponse(
        protocols=(upstream.protocol,) if upstream.protocol else (), autoping=False
    )
    exchange.response = client  # its 101 is the access line's if a stop cuts it
    try:
        await client.prepare(request)
        await _pump(client, upstream)
    finally:
        await upstream.close()
        if not client.closed:
            await client.close()
    return client


async def _pump(
    client: web.WebSocketResponse, upstream: ClientWebSocketResponse
) -> None:
    async def client_to_upstream() -> None:
        async for msg in client:
            await _relay(msg, upstream)

    async def upstream_to_client() -> None:
        async for msg in upstream:
            await _relay(msg, client)

    tasks = [
        asyncio.ensure_future(client_to_upstream()),
        asyncio.ensure_future(upstream_to_client()),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _relay(
    msg: WSMessage, target: web.WebSocketResponse | ClientWebSocketResponse
) -> None:
    if msg.type is WSMsgType.TEXT:
        await target.send_str(msg.data)
    elif msg.type is WSMsgType.BINARY:
        await target.send_bytes(msg.data)
    elif msg.type is WSMsgType.PING:
        await target.ping(msg.data)
    elif msg.type is WSMsgType.PONG:
        await target.pong(msg.data)
