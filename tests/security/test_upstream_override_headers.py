"""Headers that make an upstream act on something other than what was checked.

Issue 11, finding 11. The gateway authorises one path, one method, one
client and one identity; an upstream that reads the path from
``X-Original-URL`` (IIS, Symfony, Zend), the method from
``X-HTTP-Method-Override`` (Rails, Laravel, Express method-override), the
client from ``X-Real-IP`` (nginx realip, Flask/werkzeug) or the identity
from ``X.Patgate.User`` (PHP turns ``.`` into ``_``: ``HTTP_X_PATGATE_USER``)
would act on something else. Stopped in ``web.headers.upstream_headers``:
names are compared folded by one function (``config.reader.fold_header``:
case, ``-``, ``_``, ``.``); overrides are dropped unless the route lists
them in ``pass_headers``; client-address headers pass only from
``trusted_proxies``.

The tests fold names the way PHP does, independently of the code under test.
"""

from __future__ import annotations

import pytest

from tests.gateway_harness import Gateway, RecordingUpstream
from tests.security.conftest import bearer, request, send_raw


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
