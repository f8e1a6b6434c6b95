"""HEAD must need at least what GET needs.

Issue 11, finding 3: with ``methods: {GET: api:export}`` an ``api:read``
token was refused a GET but its HEAD went through to the route's weaker
``scope``, and frameworks (Flask, Django, Express, Spring, JAX-RS, Go's
ServeMux) run the GET handler for a HEAD: its side effects and its status
(an existence oracle) were the export's. The same held for a ``paths``
method map naming only GET.

Stopped in ``routing.CompiledRoute.required_scopes``: a HEAD request needs
what its own rule says and what a GET of the same path needs, whatever map
or fallback decides either. Method names are matched in upper case on both
sides (the config refuses lower case, requests are upper-cased). Against a
real gateway, and as a property over generated method maps.
"""

from __future__ import annotations

from types import MappingProxyType

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patgate.config import RouteConfig
from patgate.routing import CompiledRoute
from tests.gateway_harness import Gateway, RecordingUpstream, StartGateway
from tests.security.conftest import bearer, request, send_raw

ROUTES = """\
  - name: export
    prefix: /export/
    upstream: {upstream}
    scope: api:read
    methods: {{GET: api:export}}
  - name: reports
    prefix: /reports/
    upstream: {upstream}
    methods: {{'*': api:read}}
    paths:
      /reports/private/*: {{GET: reports:private}}
  - name: weak-head
    prefix: /weak/
    upstream: {upstream}
    methods: {{GET: api:export, HEAD: api:read}}
"""


@pytest.fixture
async def gateway(
    make_gateway: StartGateway, upstream: RecordingUpstream, sqlite_url: str
) -> Gateway:
    return await make_gateway(sqlite_url, ROUTES.format(upstream=upstream.url))


async def status(
    client: aiohttp.ClientSession, gateway: Gateway, method: str, path: str, token: str
) -> int:
    async with client.request(
        method, gateway.url + path, headers={"Authorization": f"Bearer {token}"}
    ) as response:
        await response.read()
        return response.status


@pytest.mark.parametrize("path", ["/export/all.csv", "/reports/private/q3", "/weak/x"])
async def test_head_is_refused_where_get_is(
    gateway: Gateway,
    upstream: RecordingUpstream,
    client: aiohttp.ClientSession,
    path: str,
) -> None:
    reader = await gateway.token("alice", scopes=["api:read"])
    assert await status(client, gateway, "GET", path, reader) == 403
    assert await status(client, gateway, "HEAD", path, reader) == 403
    assert upstream.requests == []


async def test_head_passes_with_what_get_and_head_need(
    gateway: Gateway, upstream: RecordingUpstream, client: aiohttp.ClientSession
) -> None:
    both = await gateway.token("alice", scopes=["api:read", "api:export"])
    assert await status(client, gateway, "HEAD", "/export/all.csv", both) == 200
    assert await status(client, gateway, "HEAD", "/weak/x", both) == 200
    exporter = await gateway.token("alice", scopes=["api:export"])
    # HEAD keeps its own rule as well: the route's scope (api:read) here.
    assert await status(client, gateway, "HEAD", "/export/all.csv", exporter) == 403
    assert await status(client, gateway, "GET", "/export/all.csv", exporter) == 200
    assert [(r.method, r.raw_path) for r in upstream.requests] == [
        ("HEAD", "/export/all.csv"),
        ("HEAD", "/weak/x"),
        ("GET", "/export/all.csv"),
    ]


async def test_refused_head_names_every_scope_it_needs(
    gateway: Gateway, client: aiohttp.ClientSession
) -> None:
    reader = await gateway.token("alice", scopes=["api:read"])
    async with client.head(
        gateway.url + "/weak/x", headers={"Authorization": f"Bearer {reader}"}
    ) as response:
        assert response.status == 403
        challenge = response.headers["WWW-Authenticate"]
    assert 'scope="api:read api:export"' in challenge


@pytest.mark.parametrize("method", [b"head", b"Head", b"hEAD"])
async def test_head_in_any_letter_case_needs_what_get_needs(
    gateway: Gateway, upstream: RecordingUpstream, method: bytes
) -> None:
    # One parser refuses a lower-case method (400), the other upper-cases it;
    # either way nothing reaches the upstream with a read-only token.
    reader = await gateway.token("alice", scopes=["api:read"])
    (response,) = await send_raw(
        gateway, request("/export/all.csv", bearer(reader), method=method)
    )
    assert response.status in (400, 403)
    assert upstream.requests == []


# --------------------------------------------------------------------------
# The class, as a property of the required scopes

METHOD_NAMES = ["GET", "HEAD", "PUT", "*"]
SCOPES = ["a", "b", "c"]
method_maps = st.dictionaries(
    st.sampled_from(METHOD_NAMES), st.sampled_from(SCOPES), max_size=3
).map(MappingProxyType)
rules = st.one_of(st.sampled_from(SCOPES), method_maps.filter(bool))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    st.lists(
        st.tuples(st.sampled_from(["/x", "/x/*", "/*", "/x/y"]), rules), max_size=3
    ),
    method_maps,
    st.one_of(st.none(), st.sampled_from(SCOPES)),
    st.sampled_from(["/x", "/x/y", "/z", "/X/Y/"]),
)
def test_head_needs_everything_get_needs(paths, methods, scope, path) -> None:
    route = CompiledRoute(
        RouteConfig(
            "r",
            "/",
            "http://127.0.0.1:1",
            paths=tuple(paths),
            methods=methods,
            scope=scope,
        )
    )
    for head in ("HEAD", "head"):
        assert set(route.required_scopes(path, "GET")) <= set(
            route.required_scopes(path, head)
        )
