"""The decision endpoint (``forward_auth:``): ``Gate.check`` for a proxy in front.

nginx ``auth_request``, Traefik ``ForwardAuth``, Caddy ``forward_auth`` and
Envoy's HTTP ``ext_authz`` ask here whether a request may pass, and carry the
bytes themselves. The handler is a thin adapter: it rebuilds the original
request's :class:`~patgate.gate.RequestFacts` and answers with the gate's
verdict, so the decision is the proxy mode's (routes, canonical path, every
credential source, scopes, node scopes, WebDAV ``Destination``, CIDRs,
throttles, rate limits, usage, the revocation bound).

Where the original request comes from:

- ``X-Original-Method`` + ``X-Original-URI`` (nginx, as in deploy/nginx), or
  ``X-Forwarded-Method`` + ``X-Forwarded-Uri`` (Traefik, Caddy), at ``path``;
- Envoy (``path_prefix``): this request's own method, and its target after
  ``path`` (``/_patgate/auth/dav/x?y`` is ``/dav/x?y``).

Host from ``X-Forwarded-Host`` (else ``Host``), scheme from
``X-Forwarded-Proto``; the client address from ``X-Forwarded-For``.

Answers:

- allowed: 200, empty body, the identity headers (empty on ``auth: none``
  routes) and ``X-Patgate-Uri``, the target as checked (canonical path, the
  query without credentials), for a proxy that can forward that instead;
- refused: the status, ``WWW-Authenticate``/``Retry-After`` and body the proxy
  mode gives (400/401/403/404/413/429/502/503);
- SECURITY: a peer outside ``trusted_proxies``: 403 before any header is
  read (those headers would let anyone ask about any request as anyone);
- no or conflicting original method/URI (two spellings that differ, a header
  given twice, a URI that is not a path): 400; a request that would pass,
  but whose path has empty or dot segments and goes upstream raw (Traefik,
  Caddy, Envoy; :func:`resolves_elsewhere`): 400. Never 200 on doubt.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Coroutine, Sequence
from typing import Any

from aiohttp import web

from patgate.answers import Answer, error_answer
from patgate.client import HeaderMap, is_trusted
from patgate.gate import Gate, RequestFacts, Verdict
from patgate.web.errors import response_of
from patgate.web.gateway.headers import encode_scopes
from patgate.web.gateway.targets import ProxyState
from patgate.web.ops.access import EXCHANGE, Exchange
from patgate.web.ops.metrics import Metrics

URI_HEADER = "X-Patgate-Uri"
_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_NOT_TRUSTED = error_answer(
    403,
    "forbidden",
    message="The decision endpoint answers only the proxies in trusted_proxies.",
)
_NO_ORIGINAL = "No original request: send X-Original-Method and X-Original-URI."
_CONFLICT = "The original request is named twice, differently."
_BAD_URI = "The original request target is not a path."
_BAD_METHOD = "The original method is not an HTTP method."
_BAD_HOST = "X-Forwarded-Host names more than one host."
_RAW_FORWARDED = (
    "The original path has empty or dot segments, and this proxy forwards it"
    " as sent: the upstream could resolve it to another path than the one"
    " decided on."
)
_DOTS = frozenset((".", ".."))


def resolves_elsewhere(target: str) -> bool:
    """Whether a raw target has segments an upstream may resolve itself.

    SECURITY: the decision is taken on the canonical path (``//`` merged,
    ``.`` and ``..`` resolved, ``%2e`` decoded), and nginx forwards that one
    (``X-Patgate-Uri``). Traefik, Caddy and Envoy forward the client's raw
    target, where ``/api//..//public/y`` is ``/public/y`` to patgate and
    ``/api//public/y`` to an upstream that keeps empty segments: a path
    checked in one form and forwarded in another. Those are refused.
    """
    segments = target.partition("?")[0].split("/")[1:]
    for index, segment in enumerate(segments):
        if not segment:
            if index != len(segments) - 1:  # a trailing slash is no segment
                return True
            continue
        bare = segment.partition(";")[0].replace("%2e", ".").replace("%2E", ".")
        if bare in _DOTS:
            return True
    return False


_EMPTY: tuple[str, ...] = ()


class Decider:
    """The decision apart from the HTTP server that is asked: the original
    request's :class:`RequestFacts` → ``Gate.check`` → the :class:`Answer`.

    Two fronts ask it: :class:`ForwardAuthHandler` on the main listener
    (aiohttp), and the decision listener's own server
    (:mod:`patgate.web.gateway.decision_server`). ``state`` is swapped whole
    on a config reload, as the proxy handler's is.
    """

    def __init__(self, state: ProxyState, gate: Gate, path: str):
        self.state = state
        self.gate = gate
        self.path = path
        self._tail = len(path)
        self._under = path + "/"

    def serves(self, path: str) -> bool:
        """Whether a raw path (no query) is the endpoint's, or under it (Envoy)."""
        return path == self.path or path.startswith(self._under)

    def decide_now(
        self,
        method: str,
        raw_path: str,
        headers: HeaderMap,
        peer: str | None,
        exchange: Exchange,
    ) -> Answer | Coroutine[Any, Any, Answer]:
        """The answer, at once when the gate needs no I/O (a cached token),
        else a coroutine for it. ``raw_path`` is this request's target as
        sent; ``exchange`` gets what the access line and metrics need."""
        state = self.state
        original = self._facts(method, raw_path, headers, peer, exchange, state)
        if isinstance(original, Answer):
            return original
        facts, raw = original
        verdict = self.gate.check_now(facts, state.rules)
        if isinstance(verdict, Verdict):
            return self._answer(verdict, facts, raw, exchange, state)
        return self._answer_later(verdict, facts, raw, exchange, state)

    async def _answer_later(
        self,
        pending: Awaitable[Verdict],
        facts: RequestFacts,
        raw: bool,
        exchange: Exchange,
        state: ProxyState,
    ) -> Answer:
        return self._answer(await pending, facts, raw, exchange, state)

    def _facts(
        self,
        method: str,
        raw_path: str,
        headers: HeaderMap,
        peer: str | None,
        exchange: Exchange,
        state: ProxyState,
    ) -> tuple[RequestFacts, bool] | Answer:
        """The original request's facts (and whether the proxy forwards its
        raw target), or the 400/403 when there are none to believe."""
        if not is_trusted(peer, state.rules.trusted):
            exchange.reason = "untrusted_peer"
            return _NOT_TRUSTED
        original = self._original(method, raw_path, headers)
        if isinstance(original, str):
            exchange.reason = "no_original_request"
            return error_answer(400, "invalid_request", message=original)
        method, target, raw = original
        exchange.method, exchange.target = method, target  # the line is about it
        forwarded = headers.getall("X-Forwarded-Host", _EMPTY)
        view = headers
        if forwarded:
            if len(forwarded) > 1 or "," in forwarded[0]:
                exchange.reason = "bad_host"
                return error_answer(400, "invalid_request", message=_BAD_HOST)
            host = forwarded[0].strip()
            if host != headers.get("Host"):
                view = _WithHost(headers, host)
        # The scheme is the connection's: neither listener speaks TLS.
        return RequestFacts(method, target, view, peer), raw

    def _answer(
        self,
        verdict: Verdict,
        facts: RequestFacts,
        raw: bool,
        exchange: Exchange,
        state: ProxyState,
    ) -> Answer:
        """200 with the identity, or the proxy mode's refusal."""
        exchange.note(verdict)
        route, decision, answer = verdict.route, verdict.decision, verdict.answer
        if answer is not None or route is None:
            return answer or _NOT_FOUND
        if raw and resolves_elsewhere(facts.target):
            exchange.reason = "raw_path_resolves_elsewhere"
            return error_answer(400, "invalid_request", message=_RAW_FORWARDED)
        uri = verdict.path + "?" + verdict.query if verdict.query else verdict.path
        names = state.config.identity_headers
        if decision is None:
            # Empty rather than absent: Caddy 2.6's copy_headers would set
            # the literal placeholder of a header the answer lacks.
            user = token_id = scopes = ""
        else:
            user = decision.user or ""
            token_id = decision.token_id or ""
            scopes = encode_scopes(decision.scopes)
        headers = (
            (URI_HEADER, uri),
            (names.user, user),
            (names.token_id, token_id),
            (names.scopes, scopes),
        )
        return Answer(200, b"", headers)

    def _original(
        self, own_method: str, raw_path: str, headers: HeaderMap
    ) -> tuple[str, str, bool] | str:
        """``(method, target, forwarded raw)`` of the original request, or why
        there is none; Traefik, Caddy and Envoy forward the raw target."""
        nginx_uri = headers.getall("X-Original-URI", _EMPTY)
        other_uri = headers.getall("X-Forwarded-Uri", _EMPTY)
        path = raw_path.partition("?")[0]
        if len(path) > self._tail:
            # Envoy: path_prefix + the original target. The route matched the
            # decoded path; the raw one must spell the prefix as it is.
            if nginx_uri or other_uri:
                return _CONFLICT
            if not raw_path.startswith(self._under):
                return _BAD_URI
            return own_method, raw_path[self._tail :], True
        uri = _one(nginx_uri, other_uri)
        method = _one(
            headers.getall("X-Original-Method", _EMPTY),
            headers.getall("X-Forwarded-Method", _EMPTY),
        )
        if uri is None or method is None:
            return _CONFLICT
        if not uri or not method:
            return _NO_ORIGINAL
        if uri[0] != "/":
            return _BAD_URI
        if _METHOD.fullmatch(method) is None:
            return _BAD_METHOD
        return method, uri, bool(other_uri)


class ForwardAuthHandler:
    """The endpoint on the main listener: aiohttp's request → :class:`Decider`."""

    def __init__(self, decider: Decider, metrics: Metrics):
        self.decider = decider
        self.metrics = metrics

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        exchange = Exchange()
        request[EXCHANGE] = exchange
        started = time.monotonic()
        answer = self.decider.decide_now(
            request.method, request.raw_path, request.headers, request.remote, exchange
        )
        if not isinstance(answer, Answer):
            answer = await answer
        if answer.status == 200:
            response = web.Response(headers=dict(answer.headers))
        else:
            response = response_of(answer)
        exchange.count(self.metrics, response.status, time.monotonic() - started)
        return response


_NOT_FOUND: Answer = error_answer(404, "not_found")


def _one(first: Sequence[str], second: Sequence[str]) -> str | None:
    """The one value two header spellings give; "" for none, None for a conflict.

    SECURITY: nginx passes the client's own headers to ``auth_request``, so a
    client can add an ``X-Forwarded-Uri`` next to nginx's ``X-Original-URI``
    (and the other way round behind Traefik or Caddy). Believing either one
    would let it name another request than the one that is forwarded.
    """
    if not second and len(first) == 1:  # the one spelling each proxy sends
        return first[0]
    values = {*first, *second}
    if len(first) > 1 or len(second) > 1 or len(values) > 1:
        return None
    return values.pop() if values else ""


class _WithHost:
    """Request headers with ``Host`` taken from a trusted ``X-Forwarded-Host``."""

    __slots__ = ("_headers", "_host")

    def __init__(self, headers: HeaderMap, host: str) -> None:
        self._headers = headers
        self._host = host

    def get(self, key: str, /) -> str | None:
        if key.lower() == "host":
            return self._host
        return self._headers.get(key)

    def getall(self, key: str, default: Sequence[str], /) -> Sequence[str]:
        if key.lower() == "host":
            return (self._host,)
        return self._headers.getall(key, default)

    def __contains__(self, key: object, /) -> bool:
        if isinstance(key, str) and key.lower() == "host":
            return True
        return key in self._headers
