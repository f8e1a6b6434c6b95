"""The gateway in front of a real upstream: credentials, scopes, forwarding."""

from __future__ import annotations

import asyncio
import base64

import aiohttp
import pytest
from yarl import URL

from tests.gateway_harness import RecordingUpstream


def api_routes(upstream: RecordingUpstream, **extra: str) -> str:
    more = "".join(f"    {key}: {value}\n" for key, value in extra.items())
    return (
        "  - name: api\n"
        "    prefix: /api/\n"
        f"    upstream: {upstream.url}\n"
        "    methods: {GET: api:read, HEAD: api:read, '*': api:write}\n"
        f"{more}"
        "  - name: public\n"
        "    prefix: /public/\n"
        f"    upstream: {upstream.url}\n"
        "    auth: none\n"
    )


@pytest.fixture
async def gateway(make_gateway, upstream, store_url):
    return await make_gateway(store_url, api_routes(upstream))


def basic(login: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()


async def test_bearer_token_reaches_upstream_with_identity(gateway, upstream):
    token = await gateway.token("alice", scopes=["api:read"])
    async with (
        aiohttp.ClientSession() as client,
        client.get(
            gateway.url + "/api/hello?x=1",
            headers={"Authorization": f"Bearer {token}"},
        ) as response,
    ):
        assert response.status == 200
        assert (await response.json())["user"] == "alice"
    seen = upstream.last
    assert seen.raw_path == "/api/hello?x=1"
    assert seen.headers["X-Patgate-User"] == "alice"
    assert seen.headers["X-Patgate-Scopes"] == "api:read"
    assert "Authorization" not in seen.headers
    assert seen.headers["X-Forwarded-For"] == "127.0.0.1"


async def test_basic_auth_with_owner_login(gateway, upstream):
    token = await gateway.token("alice")
    async with aiohttp.ClientSession() as client:
        ok = await client.get(
            gateway.url + "/api/x", headers={"Authorization": basic("alice", token)}
        )
        wrong = await client.get(
            gateway.url + "/api/x", headers={"Authorization": basic("mallory", token)}
        )
    assert ok.status == 200
    assert wrong.status == 401
    assert len(upstream.requests) == 1


async def test_query_token_is_stripped_from_forwarded_url(gateway, upstream):
    token = await gateway.token("alice")
    async with aiohttp.ClientSession() as client:
        url = URL(f"{gateway.url}/api/x?a=%2F1&session={token}&b=2", encoded=True)
        async with client.get(url) as response:
            assert response.status == 200
    assert upstream.last.raw_path == "/api/x?a=%2F1&b=2"


async def test_missing_and_bad_tokens_are_401_with_challenge(gateway, upstream):
    async with aiohttp.ClientSession() as client:
        missing = await client.get(gateway.url + "/api/x")
        bad = await client.get(
            gateway.url + "/api/x", headers={"Authorization": "Bearer pgt_nonsense"}
        )
    assert missing.status == 401
    assert 'Basic realm="api"' in missing.headers.getall("WWW-Authenticate")[0]
    assert bad.status == 401
    assert any(
        'error="invalid_token"' in v for v in bad.headers.getall("WWW-Authenticate")
    )
    assert (await bad.json())["error"] == "invalid_token"
    assert upstream.requests == []


async def test_insufficient_scope_names_the_scope(gateway, upstream):
    token = await gateway.token("alice", scopes=["api:read"])
    async with aiohttp.ClientSession() as client:
        response = await client.post(
            gateway.url + "/api/x",
            data=b"hello",
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status == 403
    challenge = response.headers["WWW-Authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="api:write"' in challenge
    assert upstream.requests == []


async def test_public_route_needs_no_token(gateway, upstream):
    async with aiohttp.ClientSession() as client:
        response = await client.get(gateway.url + "/public/readme")
    assert response.status == 200
    assert upstream.last.raw_path == "/public/readme"


async def test_unknown_path_is_404(gateway):
    async with aiohttp.ClientSession() as client:
        response = await client.get(gateway.url + "/elsewhere")
    assert response.status == 404


async def test_upload_body_streams_through(gateway, upstream):
    token = await gateway.token("alice")
    payload = bytes(range(256)) * 4096
    async with aiohttp.ClientSession() as client:
        response = await client.put(
            gateway.url + "/api/blob",
            data=payload,
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status == 200
    assert upstream.last.body_size == len(payload)
    assert upstream.last.body == payload


async def test_download_streams_back(gateway, upstream):
    token = await gateway.token("alice")
    async with aiohttp.ClientSession() as client:
        response = await client.get(
            gateway.url + "/api/download?size=3000000",
            headers={"Authorization": f"Bearer {token}"},
        )
        body = await response.read()
    assert response.status == 200
    assert len(body) == 3_000_000


async def test_metrics_count_requests_with_the_access_log_off(gateway):
    token = await gateway.token("alice")
    gateway.access_log.enabled = False
    async with aiohttp.ClientSession() as client:
        for _ in range(3):
            response = await client.get(
                gateway.url + "/api/x", headers={"Authorization": f"Bearer {token}"}
            )
            assert response.status == 200
        metrics = await (await client.get(gateway.url + "/_patgate/metrics")).text()
    assert 'patgate_requests_total{outcome="allowed",route="api"} 3.0' in metrics


async def test_webdav_destination_and_if_urls_point_at_the_upstream(gateway, upstream):
    token = await gateway.token("alice")
    origin = gateway.url
    headers = {
        "Authorization": f"Bearer {token}",
        "Destination": f"{origin}/api/dav/b.txt",
        "If": f'<{origin}/api/dav/a.txt> (["etag-1"])',
    }
    async with aiohttp.ClientSession() as client:
        moved = await client.request("MOVE", origin + "/api/dav/a.txt", headers=headers)
        elsewhere = await client.request(
            "MOVE",
            origin + "/api/dav/a.txt",
            headers={**headers, "Destination": f"{origin}/public/stolen.txt"},
        )
        ambiguous = await client.request(
            "MOVE",
            origin + "/api/dav/a.txt",
            headers={**headers, "Destination": f"{origin}/api/dav%2fb.txt"},
        )
    assert moved.status == 200
    seen = upstream.last
    assert seen.headers["Destination"] == f"{upstream.url}/api/dav/b.txt"
    assert seen.headers["If"] == f'<{upstream.url}/api/dav/a.txt> (["etag-1"])'
    # SECURITY: a MOVE may not write outside its route, nor through a
    # Destination spelled to dodge the path checks.
    assert elsewhere.status == 403
    assert ambiguous.status == 400
    assert len(upstream.requests) == 1


async def test_small_response_arrives_whole_with_the_upstreams_length(gateway):
    token = await gateway.token("alice", scopes=["api:read"])
    auth = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as client:
        async with client.get(gateway.url + "/api/hello", headers=auth) as got:
            body = await got.read()
            assert got.status == 200
            assert got.headers["Content-Length"] == str(len(body))
            assert got.headers["ETag"] == '"v1"'
        async with client.head(gateway.url + "/api/hello", headers=auth) as head:
            assert head.status == 200
            # HEAD: the upstream's length (its echo names the method), no body.
            expected = len(body) + len("HEAD") - len("GET")
            assert head.headers["Content-Length"] == str(expected)
            assert await head.read() == b""


async def test_a_stream_of_unknown_length_gets_its_headers_before_its_body(gateway):
    """Headers wait for the body only when it is small and of known length."""
    token = await gateway.token("alice", scopes=["api:read"])
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as client:
        started = loop.time()
        async with client.get(
            gateway.url + "/api/events?delay=1.5",
            headers={"Authorization": f"Bearer {token}"},
        ) as response:
            headers_after = loop.time() - started
            assert response.status == 200
            assert response.headers["Content-Type"] == "text/event-stream"
            assert await response.read() == b"data: one\n\n"
            body_after = loop.time() - started
    assert headers_after < 1.0 <= body_after


async def raw_request(url: str, head: str, body: bytes = b"") -> bytes:
    """Send ``head`` (request line and headers, CRLF-joined) exactly as given."""
    target = URL(url)
    reader, writer = await asyncio.open_connection(target.host, target.port)
    try:
        writer.write(head.encode() + b"\r\n\r\n" + body)
        await writer.drain()
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()


AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


@pytest.mark.parametrize(
    ("method", "extra", "body"),
    [
        ("GET", "", b""),
        ("PUT", "Content-Length: 5", b"hello"),
        ("PUT", "Transfer-Encoding: chunked", b"5\r\nhello\r\n0\r\n\r\n"),
    ],
)
async def test_the_upstream_gets_no_header_the_client_did_not_send(
    gateway, upstream, method, extra, body
):
    token = await gateway.token("alice", scopes=["api:read", "api:write"])
    lines = [
        f"{method} /api/bare HTTP/1.1",
        "Host: example.test",
        f"Authorization: Bearer {token}",
        "Connection: close",
    ]
    if extra:
        lines.append(extra)
    status = await raw_request(gateway.url, "\r\n".join(lines), body)
    assert status.startswith(b"HTTP/1.1 200")
    seen = upstream.last
    assert seen.body_size == (5 if body else 0)
    for name in AUTO_HEADERS:
        assert name not in seen.headers, f"the gateway added {name}"


async def test_the_clients_own_auto_headers_reach_the_upstream_unchanged(
    gateway, upstream
):
    token = await gateway.token("alice", scopes=["api:read", "api:write"])
    sent = {
        "Accept": "application/vnd.x+json",
        "Accept-Encoding": "br",
        "User-Agent": "ci-job/1.0",
        "Content-Type": "text/csv",
    }
    head = "\r\n".join(
        [
            "POST /api/import HTTP/1.1",
            "Host: example.test",
            f"Authorization: Bearer {token}",
            "Connection: close",
            "Content-Length: 3",
            *(f"{name}: {value}" for name, value in sent.items()),
        ]
    )
    assert (await raw_request(gateway.url, head, b"a,b")).startswith(b"HTTP/1.1 200")
    for name, value in sent.items():
        assert upstream.last.headers.getall(name) == [value]


async def test_repeated_headers_keep_their_order_and_host_is_the_upstreams(
    gateway, upstream
):
    token = await gateway.token("alice", scopes=["api:read"])
    head = "\r\n".join(
        [
            "GET /api/order HTTP/1.1",
            "Host: gateway.example",
            f"Authorization: Bearer {token}",
            "X-Multi: one",
            "Cache-Control: no-cache",
            "X-Multi: two",
            "x-multi: three",
            "Connection: close",
        ]
    )
    assert (await raw_request(gateway.url, head)).startswith(b"HTTP/1.1 200")
    seen = upstream.last.headers
    assert seen.getall("X-Multi") == ["one", "two", "three"]
    assert seen.getall("Host") == [URL(upstream.url).raw_authority]
    assert seen.getall("X-Forwarded-Host") == ["gateway.example"]


# read_timeout: the longest the upstream may stay silent once it has the request.


@pytest.fixture
async def impatient(make_gateway, upstream, store_url):
    return await make_gateway(store_url, api_routes(upstream, read_timeout="0.5"))


async def test_an_upstream_slower_than_read_timeout_gets_a_504(impatient):
    token = await impatient.token("alice", scopes=["api:read"])
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with (
        aiohttp.ClientSession() as client,
        client.get(
            impatient.url + "/api/slow?delay=2",
            headers={"Authorization": f"Bearer {token}"},
        ) as response,
    ):
        assert response.status == 504
        assert (await response.json())["error"] == "gateway_timeout"
    assert loop.time() - started < 1.8


async def test_a_stream_that_stalls_longer_than_read_timeout_is_cut(impatient):
    token = await impatient.token("alice", scopes=["api:read"])
    loop = asyncio.get_running_loop()
    started = loop.time()
    received: list[bytes] = []

    async def drain(content: aiohttp.StreamReader) -> None:
        async for chunk in content.iter_any():
            received.append(chunk)

    async with (
        aiohttp.ClientSession() as client,
        client.get(
            impatient.url + "/api/download?size=1048576&chunk_delay=2",
            headers={"Authorization": f"Bearer {token}"},
        ) as response,
    ):
        assert response.status == 200  # the headers left before the stall
        with pytest.raises(aiohttp.ClientPayloadError):
            await drain(response.content)
    assert 0 < sum(map(len, received)) < 1048576
    assert loop.time() - started < 1.8


async def test_read_timeout_is_silence_not_the_length_of_the_exchange(impatient):
    """A slow upload and a slow but steady download both finish."""
    token = await impatient.token("alice", scopes=["api:read", "api:write"])
    auth = {"Authorization": f"Bearer {token}"}

    async def trickle():
        for _ in range(4):
            yield b"x" * 1000
            await asyncio.sleep(0.3)

    async with aiohttp.ClientSession() as client:
        async with client.put(
            impatient.url + "/api/upload", data=trickle(), headers=auth
        ) as uploaded:
            assert uploaded.status == 200
            assert (await uploaded.json())["body_size"] == 4000
        async with client.get(
            impatient.url + "/api/download?size=262144&chunk_delay=0.3", headers=auth
        ) as downloaded:
            assert downloaded.status == 200
            assert len(await downloaded.read()) == 262144  # 4 chunks over ~1 s


async def test_a_small_body_cut_short_by_the_upstream_is_a_502(make_gateway, store_url):
    """Nothing is sent before the whole small body is in: a short one is a 502."""

    async def short_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(short_body, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        routes = (
            "  - name: api\n"
            "    prefix: /api/\n"
            f"    upstream: http://127.0.0.1:{port}\n"
            "    methods: {GET: api:read}\n"
        )
        gateway = await make_gateway(store_url, routes)
        token = await gateway.token("alice", scopes=["api:read"])
        async with (
            aiohttp.ClientSession() as client,
            client.get(
                gateway.url + "/api/x", headers={"Authorization": f"Bearer {token}"}
            ) as response,
        ):
            assert response.status == 502
            assert (await response.json())["error"] == "bad_gateway"
    finally:
        server.close()
        await server.wait_closed()
