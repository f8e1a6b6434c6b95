"""Token enumeration: a refusal must not say whether a token id exists.

SPEC §3 "Errors": "Nothing in an error reveals whether a token id exists";
STYLE "Unknown, expired and revoked tokens get the same 401 outside".
Stopped in ``patgate.policy.decide`` (one ``invalid_token`` error for every
401 reason, the reason only in the log) and ``patgate.web.errors``
(one message per error code, never the reason).
"""

from __future__ import annotations

import base64
import time

import pytest
from multidict import CIMultiDict

from patgate.service import TokenService
from patgate.tokens import format_token
from tests.gateway_harness import ADMIN, Gateway, RecordingUpstream
from tests.security.conftest import StartGateway, bearer, request, send_raw

ROUTES = """\
  - name: api
    prefix: /api/
    upstream: {upstream}
    credentials: [bearer, basic, query]
  - name: paas
    prefix: /1.0/
    upstream: {upstream}
    credentials: [bearer, query]
    error_style: result
"""


async def refused_tokens(gateway: Gateway) -> dict[str, str]:
    """One token value per reason a well-formed token is refused with 401."""
    service = gateway.service
    good = await gateway.token("alice")
    good_id = good.split("_", 1)[1][:8]

    revoked = await gateway.token("alice")
    await service.revoke_tokens(ADMIN, [revoked.split("_", 1)[1][:8]])

    # A service whose clock is an hour behind creates a token that expired a
    # minute ago (a real clock and no sleeping).
    behind = TokenService(
        gateway.store,
        prefix=service.prefix,
        pepper=gateway.config.pepper.value,
        clock=lambda: time.time() - 3600,
    )
    _, expired = await behind.create_token(ADMIN, "alice", expires_at=time.time() - 60)

    regenerated_away = await gateway.token("alice")
    await service.regenerate_token(ADMIN, regenerated_away.split("_", 1)[1][:8])

    disabled_owner = await gateway.token("carol")
    await service.disable_user(ADMIN, "carol")

    return {
        "unknown id": format_token("pgt", "Nobody00", "S" * 32),
        "wrong secret": format_token("pgt", good_id, "W" * 32),
        "revoked": revoked,
        "expired": expired,
        "regenerated away": regenerated_away,
        "owner disabled": disabled_owner,
        "bad checksum": good[:-1] + ("A" if good[-1] != "A" else "B"),
    }


def _comparable(headers: CIMultiDict[str]) -> tuple[tuple[str, str], ...]:
    """Every header but Date, in a comparable form."""
    return tuple(
        sorted((k.lower(), v) for k, v in headers.items() if k.lower() != "date")
    )


@pytest.mark.parametrize("prefix", ["/api/", "/1.0/"])
async def test_every_invalid_token_gets_a_byte_identical_401(
    make_gateway: StartGateway,
    upstream: RecordingUpstream,
    store_url: str,
    prefix: str,
) -> None:
    gateway = await make_gateway(store_url, ROUTES.format(upstream=upstream.url))
    answers = {}
    for reason, value in (await refused_tokens(gateway)).items():
        (response,) = await send_raw(gateway, request(prefix + "x", bearer(value)))
        assert response.status == 401, reason
        answers[reason] = (
            response.reason,
            response.body,
            _comparable(response.headers),
        )
    assert len(set(answers.values())) == 1, answers
    assert upstream.requests == []


async def test_query_token_refusals_are_identical_too(
    make_gateway: StartGateway, upstream: RecordingUpstream, sqlite_url: str
) -> None:
    gateway = await make_gateway(sqlite_url, ROUTES.format(upstream=upstream.url))
    bodies = set()
    for value in (await refused_tokens(gateway)).values():
        (response,) = await send_raw(gateway, request(f"/1.0/x?session={value}"))
        assert response.status == 401
        bodies.add((response.body, _comparable(response.headers)))
    assert len(bodies) == 1
    assert upstream.requests == []


async def test_basic_login_mismatch_looks_like_any_other_invalid_token(
    make_gateway: StartGateway, upstream: RecordingUpstream, sqlite_url: str
) -> None:
    gateway = await make_gateway(sqlite_url, ROUTES.format(upstream=upstream.url))
    good = await gateway.token("alice")
    unknown = format_token("pgt", "Nobody00", "S" * 32)
    answers = set()
    for login, value in [("mallory", good), ("alice", unknown)]:
        credentials = base64.b64encode(f"{login}:{value}".encode()).decode()
        (response,) = await send_raw(
            gateway, request("/api/x", f"Authorization: Basic {credentials}")
        )
        assert response.status == 401
        answers.add((response.body, _comparable(response.headers)))
    assert len(answers) == 1
    assert upstream.requests == []
