"""Routes and the decision: which route a request takes, and may this token pass.

:class:`Router` picks the route for a canonical path (see :mod:`patgate.paths`)
and host: the longest prefix wins, matched segment by segment, and a route
bound to a host beats a host-less one with the same prefix. The query never
takes part. :class:`CompiledRoute` precompiles the route's scope rules so that
:meth:`CompiledRoute.required_scopes` is cheap on every request.

:func:`decide` takes the decision for one request from the route, the cached
grant (token + owner) and the request's path, method, client address and
time. It is pure and is taken per request; it is never cached by path.
Every 401 looks the same outside (``invalid_token``); only ``reason``, which
goes to the log, says why.

Upstreams read one path under several spellings, and a rule must not be
dodged by any (SECURITY: "StopEnv", "stopenv/", "stopenv%3Bx" are "stopenv"
to many upstreams). A path is looked at as sent, in lower case (unless the
route is ``case_sensitive``) and, when it holds escapes, decoded as
:func:`patgate.paths.decode_text` decodes it; a trailing slash never counts.
Prefixes match in any of them; when two spellings would go to two routes,
no route is chosen (404). ``paths`` rules: the request needs the scopes of
the first rule each spelling meets, so it can only ever need more than the
path as sent. In a pattern, ``*`` matches any run of characters
**including** ``/`` (so ``/1.0/environment/*`` covers
``/1.0/environment/control/rest/getenvinfo``) and a final ``/*`` also matches
the bare parent (``/api/admin/*`` covers ``/api/admin``); no other character
is special.

HEAD needs what GET needs as well as its own rule: frameworks answer HEAD
with the GET handler.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from patgate.config import RouteConfig
from patgate.models import TokenGrant, TokenStatus
from patgate.paths import Glob, PathPattern, decode_text
from patgate.scopes import SAFE_METHODS, EffectiveScopes, effective_scopes
from patgate.tokens import hashes_match

__all__ = [
    "Attempt",
    "CompiledRoute",
    "Decision",
    "Router",
    "decide",
    "describe_scopes",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Scopes = tuple[str, ...]
NO_SCOPE: Scopes = ()
Rule = str | Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one request.

    ``error`` is the code shown to the client (``invalid_token``,
    ``insufficient_scope``, ``forbidden``, ...); ``reason`` is precise and
    for logs only (``unknown_token``, ``hash_mismatch``, ``revoked``,
    ``expired``, ``owner_disabled``, ``login_mismatch``, ``ip_not_allowed``,
    ``scope``, ``node``). ``scope`` is what was needed, space-separated when
    more than one scope (for the 403 challenge). ``scopes`` are the token's
    effective scopes, one string each, for the identity header.
    """

    allowed: bool
    status: int
    error: str | None = None
    reason: str = ""
    scope: str | None = None
    token_id: str | None = None
    user: str | None = None
    scopes: tuple[str, ...] = ()
    retry_after: float = 0.0


PUBLIC = Decision(allowed=True, status=200, reason="public")


# --------------------------------------------------------------------------
# Routes


@dataclass(frozen=True, slots=True)
class _PathRule:
    spellings: tuple[Glob, Glob, Glob]  # as sent, folded, decoded
    scope: Scopes | None
    methods: Mapping[str, Scopes]

    @classmethod
    def compile(cls, glob: str, rule: Rule, case_sensitive: bool) -> _PathRule:
        pattern = PathPattern.compile(glob, case_sensitive=case_sensitive)
        spellings = (pattern.as_sent, pattern.folded, pattern.decoded)
        if isinstance(rule, str):
            return cls(spellings, (rule,), {})
        return cls(spellings, None, {m: (s,) for m, s in rule.items()})


class CompiledRoute:
    """A route ready for the hot path: matching, required scopes, upstream path."""

    __slots__ = (
        "_by_method",
        "_depth",
        "_fallback",
        "_merged",
        "_mixed_case",
        "_rules",
        "case_sensitive",
        "config",
        "host",
        "prefix",
        "root",
    )

    def __init__(self, config: RouteConfig) -> None:
        self.config = config
        self.host = config.host.lower().rstrip(".") if config.host else None
        self.root = config.prefix.rstrip("/")
        self.case_sensitive = config.case_sensitive
        self.prefix = PathPattern.compile(
            self.root + "/*", case_sensitive=self.case_sensitive
        )
        self._depth = self.root.count("/")
        self._rules = tuple(
            _PathRule.compile(glob, rule, self.case_sensitive)
            for glob, rule in config.paths
        )
        # A pattern in capitals meets a path in small letters only folded.
        self._mixed_case = not self.case_sensitive and any(
            glob != glob.lower() for glob, _ in config.paths
        )
        self._by_method: dict[str, Scopes] = {
            m: (s,) for m, s in config.methods.items() if m != "*"
        }
        fallback = config.methods.get("*", config.scope)
        self._fallback: Scopes = (fallback,) if fallback else NO_SCOPE
        self._merged: dict[tuple[Scopes, Scopes], Scopes] = {}

    def required_scopes(self, path: str, method: str) -> Scopes:
        """The scopes a request needs, all of them (SPEC §6): ``paths``,
        ``methods``, ``scope``; empty when any valid token passes.

        A ``paths`` entry whose value is a method map that names neither the
        method nor ``"*"`` does not decide; the search goes on. The search is
        made for every spelling of the path (as sent, in any letter case,
        decoded) and the request needs what each of them needs.
        """
        if not method.isupper():
            # SECURITY: "pUT" must not slip past a "PUT:" rule into a weaker
            # fallback at an upstream that reads methods case-insensitively.
            method = method.upper()
        if self._rules:
            needed = self._need(path, method)
        else:  # the common case: one dict look-up
            needed = self._by_method.get(method, self._fallback)
        if method != "HEAD":
            return needed
        # SECURITY: HEAD runs the GET handler in most frameworks; a map that
        # names only GET must not let HEAD through to a weaker rule.
        if self._rules:
            return self._with(needed, self._need(path, "GET"))
        return self._with(needed, self._by_method.get("GET", self._fallback))

    def _need(self, path: str, method: str) -> Scopes:
        # SECURITY: "StopEnv", "stopenv%3Bx" are "stopenv" to many upstreams;
        # the first rule each spelling meets counts, not only the one as sent.
        needed = self._lookup(path, 0, method)
        if not self.case_sensitive:
            folded = path.lower()
            if folded != path or self._mixed_case:
                needed = self._with(needed, self._lookup(folded, 1, method))
        if "%" in path:
            decoded = decode_text(path, case_sensitive=self.case_sensitive)
            needed = self._with(needed, self._lookup(decoded, 2, method))
        return needed

    def _lookup(self, key: str, spelling: int, method: str) -> Scopes:
        """The scopes of the first rule that ``key`` meets in that spelling."""
        for rule in self._rules:
            if rule.spellings[spelling].matches(key):
                found = rule.scope or rule.methods.get(method) or rule.methods.get("*")
                if found is not None:
                    return found
        return self._by_method.get(method, self._fallback)

    def _with(self, first: Scopes, second: Scopes) -> Scopes:
        if first == second:
            return first
        merged = self._merged.get((first, second))
        if merged is None:
            merged = tuple(dict.fromkeys((*first, *second)))
            self._merged[(first, second)] = merged  # bounded: pairs of rules
        return merged

    def upstream_path(self, path: str) -> str:
        """The path sent upstream (always starting with ``/``).

        The forwarded URL is ``config.upstream.rstrip("/")`` + this path.
        With ``strip_prefix``, as many segments as the prefix has are taken
        off, whatever their spelling.
        """
        if not self.config.strip_prefix:
            return path
        root = self.root
        if path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
            rest = path[len(root) :]
        else:
            parts = path.split("/", self._depth + 1)
            rest = parts[self._depth + 1] if len(parts) > self._depth + 1 else ""
        return rest if rest.startswith("/") else "/" + rest

    def __repr__(self) -> str:
        return f"CompiledRoute({self.config.name!r}, prefix={self.config.prefix!r})"


class Router:
    """Finds the route for a request: longest prefix, then a host-bound route."""

    __slots__ = ("_any_host", "routes")

    def __init__(self, routes: Iterable[CompiledRoute]) -> None:
        self.routes = tuple(
            sorted(routes, key=lambda r: (-len(r.root), r.host is None))
        )
        self._any_host = any(route.host is not None for route in self.routes)

    @classmethod
    def from_config(cls, routes: Iterable[RouteConfig]) -> Router:
        return cls(CompiledRoute(route) for route in routes)

    def match(self, host: str | None, path: str) -> CompiledRoute | None:
        """The route for a canonical ``path`` (no query) and ``Host`` header.

        A prefix matches in any letter case unless its route is
        case-sensitive. None when no route matches, or when two spellings of
        the path (as sent, in another case, decoded) would go to two routes.
        """
        # Most configs bind no route to a host: skip parsing Host then.
        name = _host_name(host) if self._any_host else None
        folded = path.lower()
        route = self._first(name, path, folded)
        if folded == path and "%" not in path:
            return route  # the common case: one spelling
        found = {route, self._first(name, path, None)}
        if "%" in path:
            found.add(self._first_decoded(name, path))
        found.discard(None)
        # SECURITY: "/API/x" or "/api%3Bx/y" would reach a catch-all route's
        # upstream, which may serve it as "/api/x": neither route is safe.
        return found.pop() if len(found) == 1 else None

    def _first(
        self, name: str | None, path: str, folded: str | None
    ) -> CompiledRoute | None:
        """The route ``path`` takes as sent, or (``folded``) in any case."""
        for route in self.routes:
            if route.host is not None and route.host != name:
                continue
            if folded is None or route.case_sensitive:
                if route.prefix.as_sent.matches(path):
                    return route
            elif route.prefix.folded.matches(folded):
                return route
        return None

    def _first_decoded(self, name: str | None, path: str) -> CompiledRoute | None:
        """The route ``path`` takes decoded (:func:`patgate.paths.decode_text`)."""
        folded = decode_text(path)
        cased: str | None = None
        for route in self.routes:
            if route.host is not None and route.host != name:
                continue
            key = folded
            if route.case_sensitive:
                if cased is None:
                    cased = decode_text(path, case_sensitive=True)
                key = cased
            if route.prefix.decoded.matches(key):
                return route
        return None


def _host_name(host: str | None) -> str | None:
    """``Host`` without its port, lower case: ``Files.Example.com:8443`` → name.

    SECURITY: a malformed Host ("name:", "name:443:443", "name:https",
    "user@name") is read as the name a lenient upstream takes from its
    X-Forwarded-Host, so it cannot dodge a host-bound route onto a host-less
    one on the same prefix while the upstream still serves that host.
    """
    if not host:
        return None
    host = host.strip().lower().rpartition("@")[2]
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.partition(":")[0].strip().rstrip(".")


# --------------------------------------------------------------------------
# The decision


@dataclass(frozen=True, slots=True)
class Attempt:
    """One use of a token, as :func:`decide` weighs it against the grant.

    ``login`` is the Basic user name (it must be the owner), None otherwise.
    """

    method: str
    path: str
    client_ip: str | None
    login: str | None
    token_hash: bytes


def decide(
    route: CompiledRoute, attempt: Attempt, grant: TokenGrant | None, now: float
) -> Decision:
    """May this request pass? Checks in order, first failure wins:

    known token → hash (current, or previous during its grace period) →
    not revoked/expired → owner enabled → Basic login is the owner →
    client IP allowed → node scopes (the token's and its owner's) allow the
    path → scopes grant every scope the route requires for it.
    """
    if route.config.auth == "none":
        return PUBLIC
    if grant is None:
        return _unauthorized("unknown_token")
    token, owner = grant.token, grant.owner
    if not _hash_valid(grant, attempt.token_hash, now):
        return _unauthorized("hash_mismatch", token.id)
    status = token.status_at(now)
    lifetime_end = token.lifetime_ends_at()
    if status is TokenStatus.REVOKED:
        return _unauthorized("revoked", token.id, token.owner)
    if status is TokenStatus.EXPIRED or (
        lifetime_end is not None and now >= lifetime_end
    ):
        return _unauthorized("expired", token.id, token.owner)
    if owner.disabled:
        return _unauthorized("owner_disabled", token.id, token.owner)
    if owner.login != token.owner:
        return _unauthorized("owner_mismatch", token.id, token.owner)
    if attempt.login is not None and attempt.login != token.owner:
        return _unauthorized("login_mismatch", token.id, token.owner)
    if token.allowed_cidrs and not _ip_allowed(attempt.client_ip, token.allowed_cidrs):
        return Decision(
            allowed=False,
            status=403,
            error="forbidden",
            reason="ip_not_allowed",
            token_id=token.id,
            user=token.owner,
        )
    return _check_scopes(route, attempt.path, attempt.method, grant)


def _check_scopes(
    route: CompiledRoute, path: str, method: str, grant: TokenGrant
) -> Decision:
    token = grant.token
    scopes, described = _effective(token.scopes, grant.owner.scopes)
    method = method if method.isupper() else method.upper()
    needed = route.required_scopes(path, method)
    if not scopes.allows_path(path, method):
        mode = "r" if method in SAFE_METHODS else "w"
        return _insufficient(
            "node", f"node:{path}:{mode}", token.id, token.owner, described
        )
    for scope in needed:
        if not scopes.grants(scope):
            return _insufficient(
                "scope", " ".join(needed), token.id, token.owner, described
            )
    # More than one scope: another spelling of the path, or GET's for a HEAD.
    needed_text = needed[0] if len(needed) == 1 else (" ".join(needed) or None)
    return _allowed(token.id, token.owner, needed_text, described)


@lru_cache(maxsize=16384)
def _allowed(
    token_id: str, user: str, scope: str | None, scopes: tuple[str, ...]
) -> Decision:
    # Decisions are frozen, so one instance serves every request it fits;
    # building a 9-field frozen dataclass costs ~1.2 us on the hot path.
    return Decision(
        allowed=True,
        status=200,
        reason="ok",
        scope=scope,
        token_id=token_id,
        user=user,
        scopes=scopes,
    )


def _hash_valid(grant: TokenGrant, presented: bytes, now: float) -> bool:
    token = grant.token
    # SECURITY: constant-time comparisons, both always made, so timing says
    # nothing about which of the two hashes matched.
    current = hashes_match(token.token_hash, presented)
    previous = token.previous_hash is not None and hashes_match(
        token.previous_hash, presented
    )
    in_grace = token.previous_hash_until is not None and now < token.previous_hash_until
    return current or (previous and in_grace)


def _unauthorized(
    reason: str, token_id: str | None = None, user: str | None = None
) -> Decision:
    return Decision(
        allowed=False,
        status=401,
        error="invalid_token",
        reason=reason,
        token_id=token_id,
        user=user,
    )


def _insufficient(
    reason: str, scope: str | None, token_id: str, user: str, scopes: tuple[str, ...]
) -> Decision:
    return Decision(
        allowed=False,
        status=403,
        error="insufficient_scope",
        reason=reason,
        scope=scope,
        token_id=token_id,
        user=user,
        scopes=scopes,
    )


@lru_cache(maxsize=4096)
def _effective(
    token_scopes: tuple[str, ...], owner_scopes: tuple[str, ...]
) -> tuple[EffectiveScopes, tuple[str, ...]]:
    # Keyed by the scopes themselves, not by token: an edit that changes them
    # is a new key, so nothing stale can be served from here.
    scopes = effective_scopes(token_scopes, owner_scopes)
    return scopes, describe_scopes(scopes)


def describe_scopes(scopes: EffectiveScopes) -> tuple[str, ...]:
    """The effective scopes, one string each, for ``X-Patgate-Scopes``."""
    nodes = (
        f"node:{node.path}:{'r' if node.read else ''}{'w' if node.write else ''}"
        for node in scopes.nodes or ()
        if node.read or node.write
    )
    return (*scopes.plain, *nodes)


@lru_cache(maxsize=1024)
def _networks(cidrs: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    networks: list[IPNetwork] = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            continue  # an unparsable entry allows nobody (fail closed)
    return tuple(networks)


def _ip_allowed(client_ip: str | None, cidrs: Sequence[str]) -> bool:
    if not client_ip:
        return False
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        # "::ffff:10.0.0.1" is 10.0.0.1 arriving on a dual-stack socket.
        candidates.append(address.ipv4_mapped)
    networks = _networks(tuple(cidrs))
    return any(ip in net for ip in candidates for net in networks)
