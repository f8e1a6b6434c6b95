"""Internal addresses in answers while the store is down (issue 11, finding 15).

The attack: ``/_patgate/readyz`` and the API's 503s quoted the store's
error, which names its host and port (``redis store 10.0.3.7:6379: ...``) or
its file, to anyone who asked while the store was down.

Stopped in ``web.ops.health.readyz_handler`` and
``web.manage.endpoint.ApiError.from_patgate``: the answer says only that
the store is unavailable; the log keeps the detail
for the operator. Checked for readyz and every API operation, on a Redis
store whose port is closed and on an SQLite file in a missing directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from patgate.web.manage.routes import ROUTES
from patgate.web.manage.tokens import API_PREFIX
from tests.conftest import free_port
from tests.gateway_harness import RecordingUpstream
from tests.security.conftest import ROUTES as GATEWAY_ROUTES
from tests.security.conftest import StartGateway, request, send_raw

BASIC = "Authorization: Basic YWxpY2U6YWxpY2UtcGFzc3dvcmQ="  # alice:alice-password
SESSION = "Cookie: patgate_session=v1.YWxpY2U.9999999999.bm9uY2U.bWFj"


def down_stores(tmp_path: Path) -> dict[str, tuple[str, list[str]]]:
    """Store URLs that do not answer, and what of each must not leak."""
    port = free_port()
    secret_dir = tmp_path / "internal-secret-dir"
    return {
        "redis": (f"redis://127.0.0.1:{port}/0", [str(port), "127.0.0.1:"]),
        "sqlite": (f"sqlite:///{secret_dir}/patgate.db", [str(secret_dir), "sqlite"]),
    }


def body_for(method: str, path: str) -> bytes:
    bodies: dict[tuple[str, str], Any] = {
        ("POST", "/tokens/revoke"): {"ids": ["Abcd1234"]},
        ("POST", "/tokens/report-leak"): {"tokens": ["pgt_x"]},
        ("POST", "/users"): {"login": "carol"},
        ("POST", "/session"): {"login": "alice", "password": "alice-password"},
    }
    return json.dumps(bodies.get((method, path), {})).encode()


@pytest.mark.parametrize("kind", ["redis", "sqlite"])
async def test_a_store_outage_never_tells_where_the_store_is(
    make_gateway: StartGateway,
    upstream: RecordingUpstream,
    tmp_path: Path,
    kind: str,
) -> None:
    url, secrets = down_stores(tmp_path)[kind]
    gateway = await make_gateway(url, GATEWAY_ROUTES.format(upstream=upstream.url))
    answers = []
    kept: list[tuple[str, str]] = []
    with capture_logs() as logs:
        (ready,) = await send_raw(gateway, request("/_patgate/readyz"))
        assert ready.status == 503
        assert json.loads(ready.body) == {
            "status": "unavailable",
            "reason": "store unavailable",
        }
        answers.append(ready)
        for op, _ in ROUTES:
            target = API_PREFIX + op.path.replace("{token_id}", "Abcd1234").replace(
                "{login}", "alice"
            )
            for credentials in (BASIC, SESSION):
                headers = [credentials, "X-Patgate-CSRF: x"]
                body = b""
                if op.method != "GET":
                    headers.append("Content-Type: application/json")
                    body = body_for(op.method, op.path)
                (response,) = await send_raw(
                    gateway, request(target, *headers, method=op.method, body=body)
                )
                answers.append(response)
                if response.status != 503:
                    kept.append((op.method, op.path))
    unavailable = [answer for answer in answers if answer.status == 503]
    # Every operation that needs the store found it down; these need none:
    # the document, a leak report of no well-formed token, and the session
    # calls made without a session cookie.
    assert sorted(kept) == [
        ("DELETE", "/session"),
        ("GET", "/openapi.json"),
        ("GET", "/openapi.json"),
        ("GET", "/session"),
        ("POST", "/tokens/report-leak"),
        ("POST", "/tokens/report-leak"),
    ]
    for answer in answers:
        text = answer.body.decode("utf-8", "replace") + repr(answer.headers)
        for secret in secrets:
            assert secret not in text, (secret, text)
    for answer in unavailable[1:]:
        assert json.loads(answer.body) == {
            "error": "store_unavailable",
            "message": "the token store is unavailable; retry shortly",
        }
    # The operator still learns where: in the log.
    logged = [entry for entry in logs if entry["event"] == "store_unavailable"]
    assert logged
    assert any(secrets[0] in str(entry.get("error")) for entry in logged)
