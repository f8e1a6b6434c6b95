"""Token values never leave the client→gateway hop: not upstream, logs, errors.

SPEC §3 ("the credential removed", "query tokens are stripped from the
forwarded URL and from every log line") and §8 "Tokens in logs". Stopped in
``patgate.web.headers.upstream_headers`` and ``web.gateway.proxy`` (credential
headers dropped, ``extract.strip_query_params`` on the forwarded query),
``web.ops.access.AccessLogger`` (path without query) and ``patgate.logs``
(redaction before rendering).

A realistic session runs twice: once rendered as real JSON lines by
``patgate.logs.configure_logging``, once under ``capture_logs`` (the raw
event dicts, before any redaction could hide a mistake). Every log line,
every response and everything the upstream received is searched for each
token value, its secret part, and its Basic-auth base64 form.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from structlog.testing import capture_logs

from patgate.logs import configure_logging
from tests.gateway_harness import ADMIN, Gateway, RecordingUpstream
from tests.security.conftest import RawResponse, bearer, request, send_raw


def basic(login: str, password: str) -> str:
    return (
        "Authorization: Basic "
        + base64.b64encode(f"{login}:{password}".encode()).decode()
    )


def secret_forms(value: str) -> list[str]:
    """What would betray ``value``: itself, its secret, its Basic encodings."""
    body = value.split("_", 1)[1]
    forms = [value, body[8:40]]
    for login in ("alice", "mallory", "bob"):
        forms.append(base64.b64encode(f"{login}:{value}".encode()).decode())
    return forms


def upstream_text(upstream: RecordingUpstream) -> str:
    parts: list[str] = []
    for seen in upstream.requests:
        parts.append(seen.raw_path)
        parts.extend(f"{name}: {value}" for name, value in seen.headers.items())
        parts.append(seen.body.decode("latin-1"))
    return "\n".join(parts)


def response_text(responses: list[RawResponse]) -> str:
    parts: list[str] = []
    for response in responses:
        parts.extend(f"{name}: {value}" for name, value in response.headers.items())
        parts.append(response.body.decode("latin-1"))
    return "\n".join(parts)


async def realistic_session(
    gateway: Gateway,
) -> tuple[list[str], list[RawResponse]]:
    """Good, bad and ugly requests; the token values used and the answers."""
    good = await gateway.token("alice", scopes=["api:read"])
    other = await gateway.token("bob")
    revoked = await gateway.token("alice")
    await gateway.service.revoke_tokens(ADMIN, [revoked.split("_", 1)[1][:8]])
    forged = good[:-1] + ("A" if good[-1] != "A" else "B")
    requests = [
        request("/api/a?x=1", bearer(good)),
        request("/api/b", basic("alice", good)),
        request(f"/api/c?access_token={good}&y=%2F"),
        request(f"/api/d?z=1&session={good}"),
        request("/api/e", f"X-API-Key: {good}"),
        request(f"/api/f?access_token={good}", bearer(good)),
        request("/api/g", bearer(good), method="POST", body=b"{}"),  # 403
        request("/admin/h", bearer(good)),  # 403
        request(f"/api/i?session={other}", bearer(good)),  # 400 conflict
        request("/api/j", bearer(good), bearer(other)),  # 400 duplicate
        request("/api/k", f"Authorization: Bearer {good} extra"),  # 400
        request("/api/l", bearer(forged)),  # 401
        request("/api/m", bearer(revoked)),  # 401
        request("/api/n", basic("mallory", good)),  # 401
        request(f"/api/o?access_token={forged}"),  # 401
        request(f"/nowhere?access_token={good}"),  # 404
        request(f"/api/p%2f?access_token={good}"),  # 400
    ]
    responses: list[RawResponse] = []
    for raw in requests:
        responses.extend(await send_raw(gateway, raw))
    statuses = [response.status for response in responses]
    assert statuses == [200] * 6 + [403, 403] + [400] * 3 + [401] * 4 + [404, 400]
    return [good, other, revoked, forged], responses


def assert_nothing_betrays(values: list[str], *texts: str) -> None:
    for value in values:
        for form in secret_forms(value):
            for text in texts:
                assert form not in text


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Real JSON log lines, as ``patgate serve`` renders them."""
    out = io.StringIO()
    configure_logging(level="debug", json=True, stream=out)
    try:
        yield out
    finally:
        structlog.reset_defaults()


async def test_rendered_json_logs_upstream_and_errors_never_hold_a_token(
    gateway: Gateway,
    upstream: RecordingUpstream,
    json_log: io.StringIO,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    gateway.access_log.stream = json_log
    values, responses = await realistic_session(gateway)
    gateway.access_log.flush()  # access lines are written in batches
    lines = json_log.getvalue().splitlines()
    access = [json.loads(line) for line in lines if '"request"' in line]
    assert len(access) >= 17  # one access line per request, all rendered
    assert {line["path"] for line in access} >= {"/api/c", "/api/d"}
    assert_nothing_betrays(
        values,
        json_log.getvalue(),
        caplog.text,
        upstream_text(upstream),
        response_text(responses),
    )


async def test_raw_log_events_never_hold_a_token(
    gateway: Gateway, upstream: RecordingUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    """Before redaction: a token that reaches an event at all is a bug."""
    caplog.set_level(logging.DEBUG)
    with capture_logs() as events, gateway.access_log.capture() as access:
        values, responses = await realistic_session(gateway)
    assert len(access) >= 17  # one access line per request
    assert_nothing_betrays(
        values,
        repr(events),
        repr(access),
        caplog.text,
        upstream_text(upstream),
        response_text(responses),
    )


@pytest.mark.parametrize(
    ("query", "forwarded"),
    [
        ("access_token=T", ""),
        ("a=%2F1&access_token=T&b=2", "a=%2F1&b=2"),
        ("session=T&x=%e2%82%ac&y=a+b", "x=%e2%82%ac&y=a+b"),
        ("x=1&&session=T&&y=", "x=1&&&y="),
        ("b=%zz;c&access_token=T&d=%C3%A9", "b=%zz;c&d=%C3%A9"),
        ("access%5Ftoken=T&k=v", "k=v"),
        ("session=T&session=T&q=%3D%26", "q=%3D%26"),
        ("Access_Token=x&access_token=T", "Access_Token=x"),
        ("x=/../../admin/&session=T", "x=/../../admin/"),
    ],
)
async def test_query_token_stripping_keeps_every_other_byte(
    gateway: Gateway, upstream: RecordingUpstream, query: str, forwarded: str
) -> None:
    token = await gateway.token("alice")
    (response,) = await send_raw(
        gateway, request("/api/x?" + query.replace("=T", "=" + token))
    )
    assert response.status == 200
    assert upstream.last.raw_path == "/api/x" + ("?" + forwarded if forwarded else "")
    assert token not in upstream_text(upstream)


async def test_credential_headers_are_removed_before_forwarding(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    token = await gateway.token("alice")
    for header in (bearer(token), basic("alice", token), f"X-API-Key: {token}"):
        (response,) = await send_raw(gateway, request("/api/x", header))
        assert response.status == 200
        names = {name.lower() for name in upstream.last.headers}
        assert "authorization" not in names
        assert "x-api-key" not in names
    assert_nothing_betrays([token], upstream_text(upstream))


async def test_patgate_token_sent_to_a_public_route_does_not_reach_its_upstream(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    token = await gateway.token("alice")
    for raw in (
        request("/public/x", bearer(token)),
        request(f"/public/x?access_token={token}&k=v"),
        request("/public/x", f"X-API-Key: {token}"),
    ):
        (response,) = await send_raw(gateway, raw)
        assert response.status == 200
    assert_nothing_betrays([token], upstream_text(upstream))


async def test_foreign_authorization_still_reaches_a_public_upstream(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    # The other half of the test above: a public upstream may run its own
    # authentication; only patgate's own tokens are the gateway's to remove.
    (response,) = await send_raw(
        gateway, request("/public/x", "Authorization: Bearer upstream-own-secret")
    )
    assert response.status == 200
    assert upstream.last.headers["Authorization"] == "Bearer upstream-own-secret"
