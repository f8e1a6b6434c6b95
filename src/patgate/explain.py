"""Why the gateway would forward or refuse a request: ``patgate explain``.

:func:`explain_request` runs a request through the same steps as the proxy
(:func:`patgate.gate.locate` for the path, Host and route;
:meth:`CompiledRoute.required_scopes` and :func:`patgate.policy.decide` for
the token) and says what happened at each: the route, the canonical path
and the URL it would be forwarded to, the credential sources the route
reads, the scopes it requires, and whether a token passes and if not why.
Nothing here restates a rule: a change to the pipeline shows up here too.

The token is a grant from the store (``--token-id``), or one made up from
scopes (``--scopes``, owned by a user holding ``*``), or none (then the
explanation says what a token would need). No token value is involved, so
none can appear in an explanation; the forwarded URL is stripped of token
values as the proxy strips them.

Pure: no I/O; the clock is a parameter.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from patgate.gate import RequestFacts, Rules, forwarded_query, locate
from patgate.models import TokenGrant, TokenRecord, User
from patgate.policy import Attempt, Decision, decide
from patgate.routing import CompiledRoute
from patgate.scopes import ALL, accepting_scopes

__all__ = ["Explanation", "explain_request", "grant_of_scopes", "split_target"]

SCOPES_LABEL = "(--scopes)"

_REASONS = {
    "unknown_token": "no token with this id exists",
    "hash_mismatch": "the value presented is not the token's current one",
    "revoked": "the token is revoked",
    "expired": "the token has expired",
    "owner_disabled": "the token's owner is disabled",
    "owner_mismatch": "the token's owner does not exist any more",
    "ip_not_allowed": "the token may not be used from this client address",
}


@dataclass(frozen=True, slots=True)
class Explanation:
    """What the gateway does with one request, and why.

    ``status`` is what the gateway answers (200: forwarded upstream, whose
    own answer is then passed on); ``reason`` the precise cause, as in the
    access log; ``why`` one sentence for people. ``needed`` are the scopes
    the request needs, all of them; ``accepted`` what a token could hold
    instead, each alone (as a 403 lists them); ``held`` the token's
    effective scopes.
    """

    method: str
    status: int
    reason: str
    why: str
    route: str | None = None
    prefix: str | None = None
    auth: str | None = None
    path: str | None = None
    forwarded: str | None = None
    credentials: tuple[str, ...] = ()
    needed: tuple[str, ...] = ()
    accepted: tuple[str, ...] = ()
    token: str | None = None
    held: tuple[str, ...] = ()

    @property
    def forwards(self) -> bool:
        return self.status == 200

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "status": self.status,
            "forwarded": self.forwards,
            "reason": self.reason,
            "why": self.why,
            "route": self.route,
            "prefix": self.prefix,
            "auth": self.auth,
            "path": self.path,
            "upstream_url": self.forwarded,
            "credentials": list(self.credentials),
            "needed_scopes": list(self.needed),
            "accepted_scopes": list(self.accepted),
            "token": self.token,
            "token_scopes": list(self.held),
        }


class _Headers:
    """The one header ``explain`` knows of a request: its Host."""

    def __init__(self, host: str | None) -> None:
        self._host = host

    def get(self, key: str, /) -> str | None:
        return self._host if key.lower() == "host" else None

    def getall(self, key: str, default: Sequence[str], /) -> Sequence[str]:
        value = self.get(key)
        return default if value is None else (value,)

    def __contains__(self, key: object, /) -> bool:
        return isinstance(key, str) and self.get(key) is not None


def split_target(url: str) -> tuple[str, str | None, str]:
    """``(request target, Host, scheme)`` of a URL or of a bare ``/path?query``.

    The target keeps its percent-escapes as written: the gate reads it as
    the proxy reads the request line. A fragment is never sent; it is dropped.
    """
    if url.startswith("/"):
        return url.partition("#")[0], None, "http"
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError("expected http(s)://host/path or /path")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    host = parts.netloc.rpartition("@")[2]
    return target, host, parts.scheme.lower()


def grant_of_scopes(scopes: Sequence[str], now: float) -> TokenGrant:
    """A made-up active token holding ``scopes``, of an owner holding ``*``."""
    owner = User(login="explain", scopes=(ALL,), created_at=now, updated_at=now)
    token = TokenRecord(
        id=SCOPES_LABEL,
        owner=owner.login,
        token_hash=b"",
        scopes=tuple(scopes) or (ALL,),
        created_at=now,
    )
    return TokenGrant(token=token, owner=owner)


def explain_request(
    rules: Rules,
    method: str,
    url: str,
    *,
    grant: TokenGrant | None = None,
    token: str | None = None,
    client_ip: str | None = None,
    now: float,
) -> Explanation:
    """What the gateway does with ``method url`` (see the module docstring).

    ``grant`` is the token's grant (None: no token given, or an unknown
    ``token`` id); ``client_ip`` the address the request comes from, which
    matters only for a token bound to addresses.
    """
    method = method.upper()
    try:
        target, host, scheme = split_target(url)
    except ValueError as exc:
        return Explanation(method, 400, "bad_url", f"not a URL: {exc}")
    facts = RequestFacts(method, target, _Headers(host), client_ip, scheme)
    located = locate(facts, rules)
    if not isinstance(located, tuple):
        answer = located.answer
        status = answer.status if answer is not None else 500
        reason = located.reason or ("no_route" if status == 404 else "refused")
        body = answer.body if answer is not None else None
        return Explanation(method, status, reason, _message(body))
    route, path, query = located
    config = route.config
    base = Explanation(
        method,
        0,
        "",
        "",
        route=config.name,
        prefix=config.prefix,
        auth=config.auth,
        path=path,
        credentials=_credential_sources(route),
    )
    if config.auth == "none":
        query = forwarded_query(route, query, rules.token_prefix, False)
        why = "public route (auth: none): forwarded without a token"
        return replace(
            base,
            status=200,
            reason="public",
            why=why,
            forwarded=_upstream_url(route, path, query),
        )
    needed = route.required_scopes(path, method)
    query = forwarded_query(route, query, rules.token_prefix, True)
    base = replace(
        base,
        needed=needed,
        accepted=accepting_scopes(needed, rules.scope_sets),
        forwarded=_upstream_url(route, path, query),
    )
    if grant is None:
        return _without_token(base, token)
    attempt = Attempt(method, path, client_ip, None, grant.token.token_hash)
    decision = decide(route, attempt, grant, now)
    return replace(
        base,
        status=decision.status,
        reason=decision.reason,
        why=_why(decision, needed, path, grant),
        forwarded=base.forwarded if decision.allowed else None,
        token=token or grant.token.id,
        held=decision.scopes,
    )


def _without_token(base: Explanation, token: str | None) -> Explanation:
    if token is not None:
        why = f"refused: {_REASONS['unknown_token']} (401 invalid_token)"
        return replace(
            base, status=401, reason="unknown_token", why=why, forwarded=None
        )
    if base.needed:
        why = f"needs a token holding {_all_of(base.needed)}; without one, 401"
    else:
        why = "needs a valid token, whatever its scopes; without one, 401"
    return replace(base, status=401, reason="no_credential", why=why)


def _why(
    decision: Decision, needed: tuple[str, ...], path: str, grant: TokenGrant
) -> str:
    reason = decision.reason
    if decision.allowed:
        if not needed:
            return "forwarded: the route requires no scope; any valid token passes"
        return f"forwarded: the token holds {_all_of(needed)}"
    if reason == "scope":
        held = ", ".join(decision.scopes) or "no scope"
        return (
            f"refused: needs {_all_of(needed)}, the token holds {held}"
            " (403 insufficient_scope)"
        )
    if reason == "node":
        return (
            f"refused: the token's node scopes do not cover {path} for this"
            f" method; it needs {decision.scope} (403 insufficient_scope)"
        )
    text = _REASONS.get(reason, reason)
    if reason == "ip_not_allowed":
        cidrs = ", ".join(grant.token.allowed_cidrs)
        text += f" (only {cidrs}; give the client address with --from)"
    return f"refused: {text} ({decision.status} {decision.error})"


def _all_of(scopes: Sequence[str]) -> str:
    return " and ".join(scopes)


def _credential_sources(route: CompiledRoute) -> tuple[str, ...]:
    config = route.config
    if config.auth == "none":
        return ()
    described = {
        "bearer": "Authorization: Bearer TOKEN",
        "basic": "Authorization: Basic LOGIN:TOKEN (LOGIN is the token's owner)",
        "query": " or ".join(f"?{name}=TOKEN" for name in config.query_params),
        "header": f"{config.api_key_header}: TOKEN",
    }
    return tuple(described[source] for source in config.credentials)


def _upstream_url(route: CompiledRoute, path: str, query: str) -> str:
    url = route.config.upstream.rstrip("/") + route.upstream_path(path)
    return f"{url}?{query}" if query else url


def _message(body: bytes | None) -> str:
    """The message of a refusal body (JSON or ``result`` style)."""
    if not body:
        return "refused"
    data = json.loads(body)
    text = data.get("message") or data.get("error") or "refused"
    return f"refused: {text}"
