"""The authorisation pipeline of one request, apart from HTTP.

:meth:`Gate.check` takes the raw facts of a request (:class:`RequestFacts`:
method, request target, headers, peer, scheme) and the :class:`Rules` of the
current config, and returns a :class:`Verdict`: forward it (the canonical
path and query to send, the identity to attach) or refuse it (the
:class:`~patgate.answers.Answer` to send). Every front door is a thin adapter
over it: the proxy handler, and later the forward-auth endpoint and
``explain``. The steps, first refusal wins::

    Host is host[:port] → query is clean → no token in the path → path
    canonical (400)
    → route (404) → announced body within limits.max_body_bytes (413)
    → client behind trusted proxies
    → credential (400 if ambiguous) → token (:meth:`Gate.authorize`: parse
      and checksum → hash → cache or store → ``policy.decide`` → rate limit
      → note usage; 401/403/429/503)
    → WebDAV Destination/If name this gateway and an allowed path (502/403)
    → credential and stray tokens removed from the query.

A canary, or a value regenerated away and presented after its grace, is
refused like an unknown token; the incident goes to :attr:`Gate.incidents`
for a background task (no I/O on the refusal path), as does the first use of
an activate-on-use value.

The store being down is a 503, never an allow. Pure of I/O libraries: the
store is any ``Store``, the clock a parameter, headers any multi-mapping.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from patgate.answers import Answer, error_answer, refusal_answer
from patgate.cache import GrantCache
from patgate.client import (
    Client,
    ClientOrigin,
    HeaderMap,
    Networks,
    parse_networks,
    split_url,
    valid_host,
)
from patgate.config import Config
from patgate.errors import StoreUnavailableError
from patgate.events import Event, EventBuffer
from patgate.extract import (
    Credential,
    CredentialError,
    carries_token,
    extract_credential,
    strip_query_params,
    strip_token_pairs,
)
from patgate.models import ExpiryModel, TokenGrant, TokenRecord
from patgate.observe import observed_pattern
from patgate.paths import PathError, normalise_path
from patgate.policy import Attempt, Decision, decide
from patgate.routing import CompiledRoute, Router
from patgate.scopes import NO_SETS, ScopeSets, accepting_scopes
from patgate.store.base import Store
from patgate.throttle import FailureThrottle
from patgate.tokens import BODY_LENGTH, hash_token, hashes_match, token_id_of
from patgate.usage import UsageRecorder

RATE_WINDOW = 60
# Refusal reasons that are incidents, and the event each one queues.
INCIDENTS = {"canary": "canary.used", "rotation_reuse": "token.rotation_reuse"}
ACTIVATE = "token.rotation_activated"
# A tagged URL (or lock token) in a WebDAV If header.
IF_URL = re.compile(r"<([^>]+)>")
# Slid expiries are written back at most this often per token (seconds).
SLIDE_GRANULARITY = 1.0


# Built on every request: plain (not frozen) slotted dataclasses, which cost
# a fifth of frozen ones to make (0.5 against 3 us for ten fields); nothing
# writes to them after they are made.


@dataclass(slots=True)
class RequestFacts:
    """A request as it arrived: what every front door can tell the gate.

    ``target`` is the request target as sent (path and query, still
    encoded); ``scheme`` the connection's (``http`` or ``https``).
    """

    method: str
    target: str
    headers: HeaderMap
    peer: str | None
    scheme: str = "http"


@dataclass(frozen=True, slots=True)
class Rules:
    """What requests are checked against; rebuilt whole on a config reload."""

    router: Router
    trusted: Networks
    token_prefix: str
    max_body: int | None = None  # limits.max_body_bytes
    scope_sets: ScopeSets = NO_SETS

    @classmethod
    def from_config(cls, config: Config) -> Rules:
        sets = ScopeSets(config.scope_sets)
        return cls(
            router=Router.from_config(config.routes, sets),
            trusted=parse_networks(config.trusted_proxies),
            token_prefix=config.token_prefix,
            max_body=config.limits.max_body_bytes,
            scope_sets=sets,
        )

    def refusal(self, decision: Decision, route: CompiledRoute) -> Answer:
        """The answer to a token refusal; a 403 for a missing scope names the
        scopes that would have worked (only a valid token ever gets one)."""
        accepted: tuple[str, ...] = ()
        if decision.error == "insufficient_scope" and decision.scope:
            accepted = accepting_scopes(decision.scope.split(" "), self.scope_sets)
        return refusal_answer(decision, route.config, accepted)


@dataclass(slots=True)
class RequestView:
    """What the token check needs to know of a request."""

    method: str
    path: str
    client_ip: str | None
    credential: Credential | None
    user_agent: str | None = None


@dataclass(slots=True)
class Verdict:
    """The gate's answer: forward (``answer`` is None) or refuse with ``answer``.

    ``path`` and ``query`` are what is forwarded, exactly as checked;
    ``decision`` the token's (None on ``auth: none`` routes and before a
    token was looked at); ``destination`` the canonical path a WebDAV
    ``Destination`` names; ``reason`` why a request was refused before or
    besides the token decision (for the access log).
    """

    answer: Answer | None
    route: CompiledRoute | None = None
    path: str = ""
    query: str = ""
    client: Client | None = None
    view: RequestView | None = None
    decision: Decision | None = None
    destination: str | None = None
    reason: str | None = None
    auth_seconds: float | None = None

    @property
    def allowed(self) -> bool:
        return self.answer is None


def refusal(status: int, error: str, reason: str, retry_after: float = 0.0) -> Decision:
    return Decision(
        allowed=False,
        status=status,
        error=error,
        reason=reason,
        retry_after=retry_after,
    )


MISSING = refusal(401, "", "no_credential")
MALFORMED = refusal(401, "invalid_token", "malformed_token")
UNAVAILABLE = refusal(503, "temporarily_unavailable", "store_unavailable")
NOT_FOUND = Verdict(error_answer(404, "not_found"))
_BAD_QUERY = "The query string is malformed."
_BAD_HOST = "The Host header is not host[:port]."
_PATH_HOLDS_CREDENTIAL = "The path holds an access token: send it in a header instead."


def _bad_request(reason: str, message: str, style: str = "json") -> Verdict:
    answer = error_answer(400, "invalid_request", style=style, message=message)
    return Verdict(answer, reason=reason)


def locate(
    facts: RequestFacts, rules: Rules
) -> tuple[CompiledRoute, str, str] | Verdict:
    """The steps before any token: the route, canonical path and query, or
    the refusal (400 bad query, path or Host; 404 no route; 413 too large).

    Shared by :meth:`Gate.check` and :mod:`patgate.explain`, so what
    ``explain`` says is what the gateway does.
    """
    raw_path, _, query = facts.target.partition("?")
    if query and not (query.isascii() and query.isprintable()):
        # SECURITY: the pure-Python parser lets raw non-ASCII and control
        # bytes through where the C parser refuses them; refuse both alike.
        return _bad_request("bad_query", _BAD_QUERY)
    if len(raw_path) > BODY_LENGTH and carries_token(raw_path, rules.token_prefix):
        # SECURITY: a token in the path would travel on to the upstream (and
        # into its logs): a query's token pairs are cut, a path cannot be.
        return _bad_request("token_in_path", _PATH_HOLDS_CREDENTIAL)
    try:
        path = normalise_path(raw_path)
    except PathError as exc:
        return _bad_request("bad_path", str(exc))
    host = facts.headers.get("Host")
    if host is not None and not valid_host(host):
        return _bad_request("bad_host", _BAD_HOST)
    route = rules.router.match(host, path)
    if route is None:
        return NOT_FOUND
    if rules.max_body is not None and _too_large(facts.headers, rules.max_body):
        answer = error_answer(413, "payload_too_large", style=route.config.error_style)
        return Verdict(answer, route, reason="body_too_large")
    return route, path, query


def forwarded_query(
    route: CompiledRoute, query: str, token_prefix: str, credential_used: bool
) -> str:
    """The query sent upstream: without this route's query credential (when
    a token was read from it) and without any other token value."""
    if credential_used and "query" in route.config.credentials and query:
        # SECURITY: the token never travels on in the forwarded URL.
        query = strip_query_params(query, route.config.query_params)
    if query:
        # SECURITY: nor does any other token, in a parameter this route
        # does not read (a public route, a route without "query").
        query = strip_token_pairs(query, token_prefix)
    return query


@dataclass(slots=True)
class _Step:
    """A request located on its route, carried from one step to the next."""

    facts: RequestFacts
    rules: Rules
    route: CompiledRoute
    path: str
    query: str
    client: Client
    view: RequestView | None = None


class _StoreDown:
    """Marker: the store could not answer and no usable stale entry exists."""


STORE_DOWN = _StoreDown()


class Gate:
    def __init__(
        self,
        *,
        store: Store,
        cache: GrantCache,
        usage: UsageRecorder,
        throttle: FailureThrottle,
        prefix: str,
        pepper: bytes,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.cache = cache
        self.usage = usage
        self.throttle = throttle
        self.prefix = prefix
        self._token_length = len(prefix) + 1 + BODY_LENGTH
        self._pepper = pepper
        self._clock = clock
        self._inflight: dict[bytes, asyncio.Future[TokenGrant | None]] = {}
        self.store_errors = 0
        # What a background task acts on (web.gateway.incidents): canary
        # uses, rotation reuse, activate-on-use values first used.
        self.incidents = EventBuffer()
        self._activating: set[str] = set()

    async def check(self, facts: RequestFacts, rules: Rules) -> Verdict:
        """The whole pipeline for one request (see the module docstring)."""
        verdict = self.check_now(facts, rules)
        return verdict if isinstance(verdict, Verdict) else await verdict

    def check_now(
        self, facts: RequestFacts, rules: Rules
    ) -> Verdict | Coroutine[Any, Any, Verdict]:
        """:meth:`check`, answered at once when it needs no I/O.

        A request on a cached token (no WebDAV headers) needs none, and gets
        its verdict without any coroutine made: each step answers a value
        when it can, and a coroutine for the rest only when the store must
        be asked (a cache miss, a failure to count, a rate limit, a WebDAV
        Destination). In a running gateway every coroutine made and finished
        per request costs several times what a micro-benchmark shows, and a
        server that can call this needs no task per request.
        """
        located = locate(facts, rules)
        if isinstance(located, Verdict):
            return located
        route, path, query = located
        client = Client.of(facts.peer, facts.headers, rules.trusted)
        step = _Step(facts, rules, route, path, query, client)
        config = route.config
        if config.auth == "none":
            return self._passed(step, None, None)
        started = time.perf_counter()
        headers = facts.headers
        credential = extract_credential(
            headers.getall("Authorization", ()),
            headers.getall(config.api_key_header, ())
            if "header" in config.credentials
            else (),
            query,
            config.credentials,
            config.query_params,
        )
        if isinstance(credential, CredentialError):
            verdict = _bad_request(
                credential.code, credential.message, config.error_style
            )
            return dataclasses.replace(verdict, route=route)
        view = step.view = RequestView(
            facts.method, path, client.ip, credential, headers.get("User-Agent")
        )
        decided = self.authorize_now(route, view)
        if isinstance(decided, Decision):
            return self._decided(step, decided, started)
        return self._decided_later(step, decided, started)

    async def _decided_later(
        self, step: _Step, pending: Awaitable[Decision], started: float
    ) -> Verdict:
        verdict = self._decided(step, await pending, started)
        return verdict if isinstance(verdict, Verdict) else await verdict

    def _decided(
        self, step: _Step, decision: Decision, started: float
    ) -> Verdict | Coroutine[Any, Any, Verdict]:
        seconds = time.perf_counter() - started
        if not decision.allowed:
            answer = step.rules.refusal(decision, step.route)
            return Verdict(answer, step.route, decision=decision, auth_seconds=seconds)
        return self._passed(step, decision, seconds)

    def _passed(
        self, step: _Step, decision: Decision | None, seconds: float | None
    ) -> Verdict | Coroutine[Any, Any, Verdict]:
        """Past the token: the query to forward, then any WebDAV headers."""
        query = step.query
        if query:
            # A token was read (a view exists): its parameter goes too.
            query = forwarded_query(
                step.route, query, step.rules.token_prefix, step.view is not None
            )
        headers = step.facts.headers
        if "Destination" in headers or "If" in headers:
            return self._passed_webdav(step, query, decision, seconds)
        return Verdict(
            None, step.route, step.path, query, step.client, step.view, decision,
            None, None, seconds,
        )  # fmt: skip

    async def _passed_webdav(
        self,
        step: _Step,
        query: str,
        decision: Decision | None,
        seconds: float | None,
    ) -> Verdict:
        checked = await self._check_webdav(
            step.facts, step.rules, step.route, step.client, step.view
        )
        if isinstance(checked, Verdict):
            return checked
        return Verdict(
            None, step.route, step.path, query, step.client, step.view, decision,
            checked, None, seconds,
        )  # fmt: skip

    async def _check_webdav(
        self,
        facts: RequestFacts,
        rules: Rules,
        route: CompiledRoute,
        client: Client,
        view: RequestView | None,
    ) -> Verdict | str | None:
        """The canonical path a ``Destination`` names, or the refusal.

        SECURITY: a MOVE or COPY writes at its destination, so the token
        must hold that path too (node scopes), and it must stay on this
        route. A URL naming another server (Destination or inside If) is a
        502 (RFC 4918, 9.9.4), never rewritten into one on this upstream.
        """
        origin = ClientOrigin.of(facts.scheme, facts.headers, client.trusted)
        if_urls = IF_URL.findall(facts.headers.get("If") or "")
        if any(origin.names_other_server(url) for url in if_urls):
            return _foreign(route, "An If header URL names another server.")
        value = facts.headers.get("Destination")
        if value is None:
            return None
        try:
            url = split_url(value)
        except ValueError:
            return _refused(route, 400, "invalid_request", "Destination is not a URL.")
        if origin.names_other_server(value):
            return _foreign(route, "The Destination names another server.")
        try:
            path = normalise_path(url.path or "/")
        except PathError as exc:
            return _refused(route, 400, "invalid_request", str(exc))
        other = rules.router.match(facts.headers.get("Host"), path)
        if other is None or other.config.name != route.config.name:
            message = "Destination is outside this route."
            return _refused(route, 403, "forbidden", message)
        if view is not None:
            moved = RequestView(view.method, path, view.client_ip, view.credential)
            decision = await self.authorize(route, moved, note_usage=False)
            if not decision.allowed:
                answer = rules.refusal(decision, route)
                return Verdict(answer, route, decision=decision)
        return path

    async def authorize(
        self, route: CompiledRoute, view: RequestView, *, note_usage: bool = True
    ) -> Decision:
        """Decide one request; ``note_usage=False`` for a second look (Destination)."""
        decided = self.authorize_now(route, view, note_usage=note_usage)
        return decided if isinstance(decided, Decision) else await decided

    def authorize_now(
        self, route: CompiledRoute, view: RequestView, *, note_usage: bool = True
    ) -> Decision | Awaitable[Decision]:
        """:meth:`authorize`'s decision, or the coroutine that asks the store.

        On a cached token the decision comes without I/O. A value seen in
        the cache passed the shape and checksum checks when it was first
        looked up (nothing else is ever cached), so they are not repeated.
        """
        now = self._clock()
        ip = view.client_ip or ""
        wait = self.throttle.retry_after(ip, now)
        if wait:
            return refusal(429, "too_many_requests", "auth_throttled", wait)
        credential = view.credential
        if credential is None:
            return MISSING
        value = credential.value
        entry = None
        token_hash = b""
        if len(value) == self._token_length and value.isascii():
            token_hash = hash_token(value, self._pepper)
            # A miss counts once the value is known to be well formed.
            entry = self.cache.fresh(token_hash, count_miss=False)
        if entry is not None:
            login = credential.login
            attempt = Attempt(view.method, view.path, view.client_ip, login, token_hash)
            decision = decide(route, attempt, entry.grant, now)
            # A sliding token may have been moved on by another replica.
            if decision.reason != "expired":
                return self._conclude(
                    route, view, decision, entry.grant, token_hash, now, note_usage
                )
        return self._authorize_from_store(route, view, now, note_usage, entry is None)

    async def _authorize_from_store(
        self,
        route: CompiledRoute,
        view: RequestView,
        now: float,
        note_usage: bool,
        missed: bool,
    ) -> Decision:
        """The slow half of :meth:`authorize_now`: check the value's shape,
        ask the store (through the in-flight and stale logic of _fetch)."""
        assert view.credential is not None
        value = view.credential.value
        ip = view.client_ip or ""
        token_id = token_id_of(value, self.prefix)
        if token_id is None:
            # SECURITY: a bad shape or checksum never reaches the store.
            await self._note_failure(ip, now)
            return MALFORMED
        if missed:
            self.cache.missed()
        token_hash = hash_token(value, self._pepper)
        grant = await self._fetch(token_id, token_hash)
        if isinstance(grant, _StoreDown):
            return UNAVAILABLE
        login = view.credential.login
        attempt = Attempt(view.method, view.path, view.client_ip, login, token_hash)
        decision = decide(route, attempt, grant, now)
        decided = self._conclude(
            route, view, decision, grant, token_hash, now, note_usage
        )
        return decided if isinstance(decided, Decision) else await decided

    def _conclude(
        self,
        route: CompiledRoute,
        view: RequestView,
        decision: Decision,
        grant: TokenGrant | None,
        token_hash: bytes,
        now: float,
        note_usage: bool,
    ) -> Decision | Awaitable[Decision]:
        """After ``decide``: report incidents, count failures, admit."""
        if not decision.allowed or grant is None:
            if decision.reason in INCIDENTS and note_usage:
                self._report(decision, view, now)
            if decision.status == 401:
                return self._failed(view.client_ip or "", now, decision)
            return decision
        if grant.token.activate_on_use and note_usage:
            self._note_activation(grant.token, token_hash, now)
        if not note_usage:
            return decision
        return self._admit(route, decision, grant, token_hash, view, now)

    async def _failed(self, ip: str, now: float, decision: Decision) -> Decision:
        await self._note_failure(ip, now)
        return decision

    def _report(self, decision: Decision, view: RequestView, now: float) -> None:
        """Queue a canary use or a rotation reuse (no I/O on this path: the
        refusal must take as long as an unknown token's)."""
        self.incidents.emit(
            Event(
                INCIDENTS[decision.reason],
                now,
                {
                    "token_id": decision.token_id,
                    "owner": decision.user,
                    "ip": view.client_ip,
                    "method": view.method,
                    "path": view.path,
                    "user_agent": view.user_agent,
                },
            )
        )

    def _note_activation(
        self, token: TokenRecord, token_hash: bytes, now: float
    ) -> None:
        """The new value of an activate-on-use regeneration: end the old one."""
        if token.id in self._activating or not hashes_match(
            token.token_hash, token_hash
        ):
            return
        self._activating.add(token.id)
        self.incidents.emit(Event(ACTIVATE, now, {"token_id": token.id}))

    def activation_done(self, token_id: str) -> None:
        self._activating.discard(token_id)

    async def _note_failure(self, ip: str, now: float) -> None:
        """Count a failed token check here, and in the store's shared counter.

        SECURITY: token guessing spread over workers and replicas; once the
        shared count of an address is over the limit, each process refuses
        it locally until the window ends (one store write per failure, none
        per success). A store that cannot answer leaves the local count.
        """
        throttle = self.throttle
        throttle.note_failure(ip, now)
        if throttle.limit <= 0:
            return
        window = int(throttle.window)
        try:
            rate = await self.store.take_rate(
                f"authfail:{ip}", throttle.limit, window, now
            )
        except StoreUnavailableError:
            self.store_errors += 1
            return
        if not rate.allowed:
            throttle.block(ip, now + rate.retry_after)

    async def _fetch(
        self, token_id: str, token_hash: bytes
    ) -> TokenGrant | _StoreDown | None:
        """The grant from the store (one round trip), or a stale one if it is down.

        Concurrent misses for one hash share a single store call. If the
        call is abandoned (its caller cancelled: a client gone), those
        waiting on it ask the store themselves rather than wait forever.
        """
        while (pending := self._inflight.get(token_hash)) is not None:
            try:
                return await asyncio.shield(pending)
            except StoreUnavailableError:
                return self.cache.stale(token_hash) or STORE_DOWN
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not pending.cancelled() or (task and task.cancelling()):
                    raise  # this caller's own cancellation (perhaps too)
        future: asyncio.Future[TokenGrant | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._inflight[token_hash] = future
        generation = self.cache.generation
        try:
            grant = await self.store.resolve(token_id)
        except StoreUnavailableError as exc:
            self.store_errors += 1
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters handle it themselves
            # SECURITY: never fail open; only a recently confirmed grant survives.
            return self.cache.stale(token_hash) or STORE_DOWN
        except BaseException:
            future.cancel()  # abandoned: each waiter asks for itself
            raise
        finally:
            if self._inflight.get(token_hash) is future:
                del self._inflight[token_hash]
        if grant is not None and not _hash_known(grant, token_hash):
            grant = None
        self.cache.put(token_hash, grant, generation)
        future.set_result(grant)
        return grant

    def _admit(
        self,
        route: CompiledRoute,
        decision: Decision,
        grant: TokenGrant,
        token_hash: bytes,
        view: RequestView,
        now: float,
    ) -> Decision | Awaitable[Decision]:
        """An allowed request: within its token's rate limit (a store call),
        its usage noted."""
        if grant.token.rate_limit:
            return self._admit_limited(route, decision, grant, token_hash, view, now)
        self._note_use(route, grant, token_hash, view, now)
        return decision

    async def _admit_limited(
        self,
        route: CompiledRoute,
        decision: Decision,
        grant: TokenGrant,
        token_hash: bytes,
        view: RequestView,
        now: float,
    ) -> Decision:
        token = grant.token
        limit = token.rate_limit or 0
        try:
            rate = await self.store.take_rate(
                f"token:{token.id}", limit, RATE_WINDOW, now
            )
        except StoreUnavailableError:
            self.store_errors += 1
            return UNAVAILABLE
        if not rate.allowed:
            # The log line names the token and its owner, as for any refusal.
            return dataclasses.replace(
                decision,
                allowed=False,
                status=429,
                error="rate_limited",
                reason="token_rate_limit",
                retry_after=rate.retry_after,
            )
        self._note_use(route, grant, token_hash, view, now)
        return decision

    def _note_use(
        self,
        route: CompiledRoute,
        grant: TokenGrant,
        token_hash: bytes,
        view: RequestView,
        now: float,
    ) -> None:
        token = grant.token
        slid = _slid_expiry(token, now)
        if slid is not None:
            # Both carry the version the move was computed from: an edit since
            # then (a shorter window, a hard expiry) must win over this use.
            self.cache.slide_expiry(token_hash, token.version, slid)
        self.usage.note(token.id, now, view.client_ip, slid, token.version)
        if token.observe_until is not None and now < token.observe_until:
            pattern = observed_pattern(route, view.path, view.method)
            self.usage.note_observed(
                token.id, now, route.config.name, view.method, pattern
            )


def _too_large(headers: HeaderMap, limit: int) -> bool:
    """Whether the announced body is over ``limit`` (a chunked one is cut
    while it streams, by the proxy)."""
    length = headers.get("Content-Length")
    return length is not None and length.isdigit() and int(length) > limit


def _refused(route: CompiledRoute, status: int, error: str, message: str) -> Verdict:
    style = route.config.error_style
    return Verdict(error_answer(status, error, style=style, message=message), route)


def _foreign(route: CompiledRoute, message: str) -> Verdict:
    verdict = _refused(route, 502, "bad_gateway", message)
    return dataclasses.replace(verdict, reason="foreign_destination")


def _slid_expiry(token: TokenRecord, now: float) -> float | None:
    """Where this use moves a sliding token's expiry; None below the granularity."""
    if token.expiry is not ExpiryModel.SLIDING or token.expires_at is None:
        return None
    slid = token.slid_expiry(now)
    if slid is None or slid - token.expires_at < SLIDE_GRANULARITY:
        return None
    return slid


def _hash_known(grant: TokenGrant, token_hash: bytes) -> bool:
    """Whether the presented hash belongs to this token at all (current,
    grace or retired).

    Only used to choose what to cache; ``decide`` makes the constant-time
    comparison that counts, and checks the grace period's end.
    """
    token = grant.token
    if hashes_match(token.token_hash, token_hash):
        return True
    if token.previous_hash is not None and hashes_match(
        token.previous_hash, token_hash
    ):
        return True
    # A retired value is kept too, so that decide sees the reuse.
    return any(hashes_match(old, token_hash) for old in token.retired_hashes)
