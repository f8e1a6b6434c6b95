"""No element of ``X-Patgate-Scopes`` can be forged by a scope's own text.

Issue 11, finding 10 (the header side): a node scope whose path holds
commas (``node:/dav/alice/x,*,admin:rw``) was forwarded as is, and an
upstream splitting the header at ``,`` read ``*`` and ``admin:rw`` as
scopes of their own. Which paths a node scope may name is the token
service's business; whatever it holds, the header keeps it one element:
``web.gateway.headers.encode_scopes`` percent-encodes every character outside
``A-Z a-z 0-9 - . _ ~ : / *`` in each element. The records here are written
to the store directly, as a record made before a stricter rule would be.
"""

from __future__ import annotations

from urllib.parse import unquote

import pytest

from tests.gateway_harness import Gateway, RecordingUpstream
from tests.security.conftest import bearer, request, send_raw


def elements(header: str) -> list[str]:
    """The scopes as the README tells an upstream to read the header."""
    return [unquote(part) for part in header.split(",")]


async def token_with_scopes(gateway: Gateway, *scopes: str) -> str:
    value = await gateway.token("alice", scopes=["node:/api/alice:rw"])
    record = await gateway.store.get_token(value.split("_", 1)[1][:8])
    assert record is not None
    await gateway.store.update_token(record.with_changes(scopes=scopes))
    return value


@pytest.mark.parametrize(
    ("node_path", "request_path"),
    [
        ("/api/alice/x,*,admin", "/api/alice/x,*,admin/f"),
        ("/api/alice/x,%20admin", "/api/alice/x,%20admin/f"),
        ("/api/alice/a%2Cb", "/api/alice/a%2Cb/f"),
        ("/api/alice/x,,node", "/api/alice/x,,node/f"),
    ],
)
async def test_node_path_cannot_add_elements_to_the_scopes_header(
    gateway: Gateway, upstream: RecordingUpstream, node_path: str, request_path: str
) -> None:
    scope = f"node:{node_path}:r"
    token = await token_with_scopes(gateway, "api:read", scope)
    (response,) = await send_raw(gateway, request(request_path, bearer(token)))
    assert response.status == 200
    header = upstream.last.headers["X-Patgate-Scopes"]
    assert elements(header) == ["api:read", scope]


async def test_ordinary_scopes_header_is_unchanged(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    token = await gateway.token("alice", scopes=["api:read", "files:*"])
    (response,) = await send_raw(gateway, request("/api/x", bearer(token)))
    assert response.status == 200
    assert upstream.last.headers["X-Patgate-Scopes"] == "api:read,files:*"
