"""Which route a request takes, and which scopes the route requires of it.

:class:`Router` picks the route for a canonical path (see :mod:`patgate.paths`)
and host: the longest prefix wins, matched segment by segment, and a route
bound to a host beats a host-less one with the same prefix. The query never
takes part. :class:`CompiledRoute` precompiles the route's scope rules so that
:meth:`CompiledRoute.required_scopes` is cheap on every request.

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

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from patgate.config import RouteConfig
from patgate.paths import Glob, PathPattern, decode_text
from patgate.scopes import NO_SETS, ScopeSets

__all__ = ["NO_SCOPE", "CompiledRoute", "Router", "Scopes"]

Scopes = tuple[str, ...]
NO_SCOPE: Scopes = ()
Rule = str | Mapping[str, str]


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
        "scope_sets",
    )

    def __init__(self, config: RouteConfig, scope_sets: ScopeSets = NO_SETS) -> None:
        self.config = config
        # The config's sets as this route was compiled with them: what a
        # token's "@set" means on it (rebuilt with the route on a reload).
        self.scope_sets = scope_sets
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
    def from_config(
        cls, routes: Iterable[RouteConfig], scope_sets: ScopeSets = NO_SETS
    ) -> Router:
        return cls(CompiledRoute(route, scope_sets) for route in routes)

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
