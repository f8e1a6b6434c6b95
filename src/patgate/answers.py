"""What the gateway answers when it refuses a request, apart from HTTP.

An :class:`Answer` is a status, headers and a body. 401 carries
``WWW-Authenticate`` (a Basic challenge on routes that take Basic credentials,
so WebDAV clients send them; a Bearer challenge with the RFC 6750 error
otherwise); 403 names the scope that was missing and the scopes that would
have worked (``X-Patgate-Accepted-Scopes``). Bodies are JSON by default, or
the ``result`` style of PaaS APIs per route. Nothing here says whether a
token id exists: every token refusal has the same text.

The proxy and the forward-auth endpoint send the same answers; the HTTP edge
turns one into a response (:func:`patgate.web.errors.response_of`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from patgate.config import RouteConfig
from patgate.policy import Decision

# Result codes for ``error_style: result`` routes; 0 is the upstream's success.
RESULT_CODES = {
    400: 700,
    401: 701,
    403: 702,
    404: 703,
    413: 704,
    429: 705,
    502: 706,
    503: 707,
    504: 708,
}

MESSAGES = {
    "invalid_request": "The request is malformed.",
    "invalid_token": "The access token is missing, malformed, expired or revoked.",
    "insufficient_scope": "The access token does not grant this operation.",
    "forbidden": "The access token may not be used from this address.",
    "too_many_requests": "Too many failed attempts; retry later.",
    "rate_limited": "The access token's rate limit is exhausted; retry later.",
    "temporarily_unavailable": "The token store is unavailable; retry shortly.",
    "not_found": "No route for this path.",
    "payload_too_large": "The request body is larger than this gateway accepts.",
    "bad_gateway": "The upstream server could not be reached.",
    "gateway_timeout": "The upstream server did not answer in time.",
    "internal_error": "The gateway failed to handle the request.",
    "expectation_failed": "Only 'Expect: 100-continue' is supported.",
}

WWW_AUTHENTICATE = "WWW-Authenticate"
ACCEPTED_SCOPES = "X-Patgate-Accepted-Scopes"
RETRY_AFTER = "Retry-After"
JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Answer:
    """A refusal as it goes on the wire: status, extra headers, JSON body."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def error_body(
    status: int,
    error: str,
    message: str,
    style: str,
    accepted: tuple[str, ...] = (),
) -> bytes:
    body: dict[str, Any]
    if style == "result":
        body = {"result": RESULT_CODES.get(status, 799), "error": message}
        if error:
            body["reason"] = error
    else:
        body = {"error": error or "unauthorized", "message": message}
    if accepted:
        body["accepted_scopes"] = list(accepted)
    return json.dumps(body).encode()


def error_answer(
    status: int, error: str, *, style: str = "json", message: str | None = None
) -> Answer:
    """A refusal that is not about a token: a bad request, no route, 502/504."""
    text = message or MESSAGES.get(error, "The request was refused.")
    return Answer(status, error_body(status, error, text, style))


def challenge_headers(
    realm: str, credentials: tuple[str, ...], decision: Decision
) -> list[tuple[str, str]]:
    """The ``WWW-Authenticate`` challenges for a 401 or 403 on this route."""
    realm_q = _quote(realm)
    challenges: list[tuple[str, str]] = []
    if decision.status == 401 and "basic" in credentials:
        challenges.append(
            (WWW_AUTHENTICATE, f'Basic realm="{realm_q}", charset="UTF-8"')
        )
    bearer_like = {"bearer", "query", "header"} & set(credentials)
    if decision.status == 403 or bearer_like or not challenges:
        parts = [f'Bearer realm="{realm_q}"']
        if decision.error in {"invalid_token", "insufficient_scope"}:
            parts.append(f'error="{decision.error}"')
        if decision.status == 403 and decision.scope:
            parts.append(f'scope="{_quote(decision.scope)}"')
        challenges.append((WWW_AUTHENTICATE, ", ".join(parts)))
    return challenges


def refusal_answer(
    decision: Decision, route: RouteConfig, accepted: tuple[str, ...] = ()
) -> Answer:
    """The answer to a token ``decision`` that refused, on ``route``.

    ``accepted`` (a 403 for a missing scope only) lists what would have been
    granted, each element alone: ``X-Patgate-Accepted-Scopes`` and
    ``accepted_scopes`` in the body. SECURITY: only a valid token is ever
    refused with 403 ``insufficient_scope``, so nothing here is told to a
    caller without one; and it says no more of the route than its required
    scopes, which the challenge's ``scope=`` names already, and the names of
    scope sets, which every user sees on the token page.
    """
    if decision.status != 403 or decision.error != "insufficient_scope":
        accepted = ()
    error = decision.error or "invalid_token"
    message = MESSAGES.get(error, "The request was refused.")
    if decision.status == 401 and not decision.error:
        message = "An access token is required."
    if decision.status == 403 and decision.scope:
        message = f"{message} Required scope: {decision.scope}."
    headers: list[tuple[str, str]] = []
    if decision.status in (401, 403):
        headers = challenge_headers(route.realm, route.credentials, decision)
    if decision.retry_after:
        headers.append((RETRY_AFTER, str(max(1, math.ceil(decision.retry_after)))))
    if accepted:
        headers.append((ACCEPTED_SCOPES, ", ".join(accepted)))
    body = error_body(
        decision.status, decision.error or "", message, route.error_style, accepted
    )
    return Answer(decision.status, body, tuple(headers))


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
