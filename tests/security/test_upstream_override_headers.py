"""Headers that make an upstream act on something other than what was checked.

Issue 11, finding 11. The gateway authorises one path, one method, one
client and one identity; an upstream that reads the path from
``X-Original-URL`` (IIS, Symfony, Zend), the method from
``X-HTTP-Method-Override`` (Rails, Laravel, Express method-override), the
client from ``X-Real-IP`` (nginx realip, Flask/werkzeug) or the identity
from ``X.Patgate.User`` (PHP turns ``.`` into ``_``: ``HTTP_X_PATGATE_USER``)
would act on something else. Stopped in ``web.gateway.headers.upstream_headers``:
names are compared folded by one function (``config.reader.fold_header``:
case, ``-``, ``_``, ``.``); overrides are dropped unless the route lists
them in ``pass_headers``; client-address headers pass only from
``trusted_proxies``.

The tests fold names the way PHP does, independently of the code under test.
"""

from __future__ import annotations

import pytest

from tests.gateway_harness import Gateway, RecordingUpstream
from tests.security.conftest import (
    NO_THROTTLE,
    StartGateway,
    bearer,
    request,
    send_raw,
)


def php_name(name: str) -> str:
    """The ``$_SERVER`` key PHP gives a request header."""
    return "HTTP_" + name.upper().replace("-", "_").replace(".", "_")


def php_view(upstream: RecordingUpstream) -> dict[str, list[str]]:
    view: dict[str, list[str]] = {}
    for name, value in upstream.last.headers.items():
        view.setdefault(php_name(name), []).append(value)
    return view


IDENTITY_KEYS = (
    "HTTP_X_PATGATE_USER",
    "HTTP_X_PATGATE_TOKEN_ID",
    "HTTP_X_PATGATE_SCOPES",
)
DOTTED_SPELLINGS = [
    "X.Patgate.User",
    "x.patgate.user",
    "X.Patgate-User",
    "X_Patgate.User",
    "X.Patgate.Token.Id",
    "X.Patgate.Token_Id",
    "X.PATGATE.SCOPES",
]


@pytest.mark.parametrize("spelling", DOTTED_SPELLINGS)
async def test_identity_header_spelled_with_dots_is_stripped(
    gateway: Gateway, upstream: RecordingUpstream, spelling: str
) -> None:
    token = await gateway.token("alice", scopes=["api:read"])
    (response,) = await send_raw(
        gateway, request("/api/x", bearer(token), f"{spelling}: root")
    )
    assert response.status == 200
    view = php_view(upstream)
    assert view["HTTP_X_PATGATE_USER"] == ["alice"]
    for key in IDENTITY_KEYS:
        assert len(view[key]) == 1  # the gateway's own, nothing else
        assert "root" not in view[key]
    (response,) = await send_raw(gateway, request("/public/x", f"{spelling}: root"))
    assert response.status == 200
    assert not set(IDENTITY_KEYS) & set(php_view(upstream))


OVERRIDES = [
    "X-Original-URL: /admin/delete",
    "X-Rewrite-URL: /admin/delete",
    "X-Original-URI: /admin/delete",
    "X-Envoy-Original-Path: /admin/delete",
    "X-HTTP-Method-Override: DELETE",
    "X-HTTP-Method: DELETE",
    "X-Method-Override: DELETE",
    "X-Original-Method: DELETE",
]


def spellings(line: str) -> list[str]:
    name, _, value = line.partition(": ")
    return [
        line,
        f"{name.lower()}: {value}",
        f"{name.replace('-', '_')}: {value}",
        f"{name.replace('-', '.')}: {value}",
        f"{name.upper().replace('-', '_', 1)}: {value}",
    ]


@pytest.mark.parametrize("line", OVERRIDES)
async def test_path_and_method_overrides_are_dropped_in_every_spelling(
    gateway: Gateway, upstream: RecordingUpstream, line: str
) -> None:
    token = await gateway.token("alice", scopes=["api:read"])
    key = php_name(line.partition(":")[0])
    for spelling in spellings(line):
        for raw in (
            request("/api/x", bearer(token), spelling),
            request("/public/x", spelling),
        ):
            (response,) = await send_raw(gateway, raw)
            assert response.status == 200
            assert key not in php_view(upstream), spelling


CLIENT_FACTS = [
    "X-Real-IP: 10.0.0.1",
    "True-Client-IP: 10.0.0.1",
    "X-Client-IP: 10.0.0.1",
    "CF-Connecting-IP: 10.0.0.1",
    "X-Cluster-Client-IP: 10.0.0.1",
    "X-Originating-IP: 10.0.0.1",
    "X-Forwarded-Prefix: /admin",
    "X-Forwarded-Port: 443",
    "X-Forwarded-Server: internal",
    "X-Forwarded-Scheme: https",
    "X-Forwarded-Anything: spoof",
    "X-Host: internal.example.com",
    "X-Original-Host: internal.example.com",
    "X-Url-Scheme: https",
]


@pytest.mark.parametrize("line", CLIENT_FACTS)
async def test_client_facts_from_an_untrusted_client_are_dropped(
    gateway: Gateway, upstream: RecordingUpstream, line: str
) -> None:
    key = php_name(line.partition(":")[0])
    for spelling in spellings(line):
        (response,) = await send_raw(gateway, request("/public/x", spelling))
        assert response.status == 200
        assert key not in php_view(upstream), spelling


TRUSTED = """\
  - name: api
    prefix: /api/
    upstream: {upstream}
  - name: legacy
    prefix: /legacy/
    upstream: {upstream}
    pass_headers: [X-HTTP-Method-Override, x_original_url]
"""


@pytest.fixture
async def behind_proxy(
    make_gateway: StartGateway, upstream: RecordingUpstream, sqlite_url: str
) -> Gateway:
    """The test client is a trusted proxy (127.0.0.1); one route passes overrides."""
    return await make_gateway(
        sqlite_url,
        TRUSTED.format(upstream=upstream.url),
        extra=f"{NO_THROTTLE}\ntrusted_proxies: [127.0.0.0/8]",
    )


async def test_trusted_proxy_states_client_facts_but_not_overrides(
    behind_proxy: Gateway, upstream: RecordingUpstream
) -> None:
    token = await behind_proxy.token("alice")
    (response,) = await send_raw(
        behind_proxy,
        request(
            "/api/x",
            bearer(token),
            "X-Real-IP: 203.0.113.9",
            "X-Forwarded-Prefix: /app",
            *OVERRIDES,
        ),
    )
    assert response.status == 200
    view = php_view(upstream)
    assert view["HTTP_X_REAL_IP"] == ["203.0.113.9"]
    assert view["HTTP_X_FORWARDED_PREFIX"] == ["/app"]
    for line in OVERRIDES:
        assert php_name(line.partition(":")[0]) not in view


async def test_route_can_pass_named_overrides_to_its_upstream(
    behind_proxy: Gateway, upstream: RecordingUpstream
) -> None:
    token = await behind_proxy.token("alice")
    (response,) = await send_raw(
        behind_proxy, request("/legacy/x", bearer(token), *OVERRIDES)
    )
    assert response.status == 200
    view = php_view(upstream)
    assert view["HTTP_X_HTTP_METHOD_OVERRIDE"] == ["DELETE"]
    assert view["HTTP_X_ORIGINAL_URL"] == ["/admin/delete"]
    assert "HTTP_X_REWRITE_URL" not in view  # only the named ones
    assert "HTTP_X_METHOD_OVERRIDE" not in view
