"""A Host that is not ``host[:port]`` is refused before any route is chosen.

Issue 11, finding 4: ``Host: other, secure.example.com`` went to the
host-less route and was forwarded as ``X-Forwarded-Host``, which list-aware
proxy middleware (werkzeug's ProxyFix, Express's ``trust proxy``) reads as
``secure.example.com``: the host-bound token route was served without a
token. The class is every Host an upstream may read as another name than
the gateway did: lists, spaces, userinfo, paths, brackets, bad ports, empty
labels, an empty value. Stopped in ``client.valid_host`` (called from
``web.gateway.proxy`` before routing); two Host headers are refused by both of
aiohttp's parsers.
"""

from __future__ import annotations

import pytest

from tests.gateway_harness import Gateway, RecordingUpstream
from tests.security.conftest import StartGateway, request, send_raw

# A host-bound token route and a host-less public route on the same prefix
# and upstream: the upstream serves by X-Forwarded-Host.
ROUTES = """\
  - name: secure
    prefix: /files/
    host: secure.example.com
    upstream: {upstream}
  - name: open
    prefix: /files/
    upstream: {upstream}
    auth: none
"""

MALFORMED = [
    # lists: a list-aware upstream takes the first or the last element
    "other, secure.example.com",
    "secure.example.com, other",
    "other,secure.example.com",
    "secure.example.com,",
    ",secure.example.com",
    # whitespace inside the value (around it is the parser's to strip)
    "other secure.example.com",
    "other\tsecure.example.com",
    # userinfo and other URL parts
    "evil@secure.example.com",
    "secure.example.com@evil",
    "user:pw@secure.example.com",
    "secure.example.com/x",
    "secure.example.com?x",
    "secure.example.com#x",
    "secure.example.com\\x",
    "secure.example.com;x",
    '"secure.example.com"',
    "secure.example.com%2c",
    # ports
    "secure.example.com:443:443",
    "secure.example.com:https",
    "secure.example.com:99999",
    "secure.example.com:123456",
    "secure.example.com:-1",
    "secure.example.com:+443",
    "secure.example.com: 443",
    ":443",
    # labels
    "secure.example.com..",
    ".secure.example.com",
    "secure..example.com",
    ".",
    # IP literals
    "[::1",
    "::1",
    "[::1]x",
    "[secure.example.com]",
    "[::1]:https",
    # not a name at all
    "sécure.example.com",
]


@pytest.fixture
async def secure(
    make_gateway: StartGateway, upstream: RecordingUpstream, sqlite_url: str
) -> Gateway:
    return await make_gateway(sqlite_url, ROUTES.format(upstream=upstream.url))


@pytest.mark.parametrize("host", MALFORMED)
async def test_malformed_host_is_refused_with_or_without_a_token(
    secure: Gateway, upstream: RecordingUpstream, host: str
) -> None:
    token = await secure.token("alice")
    for headers in ((), (f"Authorization: Bearer {token}",)):
        (response,) = await send_raw(
            secure, request("/files/x", *headers, host=host.encode())
        )
        assert response.status == 400, host
        assert b"example.com" not in response.body  # the value is not echoed
    assert upstream.requests == []


async def test_empty_host_is_refused(
    secure: Gateway, upstream: RecordingUpstream
) -> None:
    (response,) = await send_raw(secure, request("/files/x", host=b""))
    assert response.status == 400
    assert upstream.requests == []


async def test_two_host_headers_are_refused(
    secure: Gateway, upstream: RecordingUpstream
) -> None:
    for second in ("Host: secure.example.com", "host: other", "HOST: other"):
        (response,) = await send_raw(secure, request("/files/x", second, host="other"))
        assert response.status == 400
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("host", "route"),
    [
        ("secure.example.com", "secure"),
        ("SECURE.Example.COM", "secure"),
        ("secure.example.com.", "secure"),  # the FQDN form is the same name
        ("secure.example.com:443", "secure"),
        ("secure.example.com:", "secure"),  # an empty port (RFC 3986)
        ("www.example.com", "open"),
        ("www.example.com:8080", "open"),
        ("under_score.example.com", "open"),
        ("localhost", "open"),
        ("127.0.0.1:8080", "open"),
        ("[::1]", "open"),
        ("[::1]:8080", "open"),
        ("[2001:db8::1]:443", "open"),
    ],
)
async def test_well_formed_host_is_routed_and_forwarded_as_sent(
    secure: Gateway, upstream: RecordingUpstream, host: str, route: str
) -> None:
    (response,) = await send_raw(secure, request("/files/x", host=host))
    if route == "secure":
        assert response.status == 401
        assert upstream.requests == []
        token = await secure.token("alice")
        (response,) = await send_raw(
            secure, request("/files/x", f"Authorization: Bearer {token}", host=host)
        )
        assert upstream.last.headers["X-Patgate-User"] == "alice"
    assert response.status == 200
    assert upstream.last.headers["X-Forwarded-Host"] == host
