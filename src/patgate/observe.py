"""Observe, then suggest: the least scopes that cover what a token really did.

While a token is observed (``observe_until``), the gate notes the route,
method and :func:`path_pattern` of each request it lets through (coalesced
by :mod:`patgate.usage`, kept bounded by the store). :func:`suggest` turns
those observations into the smallest set of scopes that still passes every
one of them, asking the routes themselves what each request needs
(:meth:`patgate.routing.CompiledRoute.required_scopes`, as ``explain`` and
the gateway do), so the suggestion never restates a rule:

- the plain scopes are exactly the scopes the rules name (``env:read``,
  never ``env:*`` or ``*``), each with the requests it covers;
- node scopes are added when, on some route, every observed path lies
  under one directory deeper than the route's prefix: that directory,
  ``r`` if only safe methods were seen there, ``rw`` otherwise. Node scopes
  confine the whole token, so then every other route used gets one too (its
  prefix, or its own deeper directory).

:func:`narrow` applies a suggestion to a token without ever widening it:
the result is the intersection of what the token holds and what was seen.

A pattern holds no identifiers and no token value: segments that look like
ids (digits, UUIDs, long hex, long token-like runs) become ``*``.

Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from patgate.durations import format_time
from patgate.errors import ConflictError, UsageError
from patgate.models import Observed, TokenRecord
from patgate.routing import CompiledRoute, Router
from patgate.scopes import (
    ALL,
    SAFE_METHODS,
    NodeScope,
    ScopeSets,
    canonical_node_path,
    covered_by,
    held_scopes,
    parse_node_scope,
)

__all__ = [
    "ANY",
    "Covered",
    "Suggestion",
    "narrow",
    "observed_pattern",
    "path_pattern",
    "suggest",
    "suggestion_json",
]

ANY = "*"
# Segments that name one thing rather than a kind of thing.
_DIGITS = re.compile(r"[0-9]+")
_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_HEX = re.compile(r"[0-9a-fA-F]{12,}")
_TOKEN_LIKE = re.compile(r"[A-Za-z0-9_-]{16,}")
# SECURITY: anything this long is never kept, whatever it looks like (a
# token value pasted into a path must not reach the store or a suggestion).
MAX_SEGMENT = 40


def path_pattern(path: str) -> str:
    """The pattern of a canonical path: id-like segments become ``*``.

    ``/api/users/42/repos`` → ``/api/users/*/repos``. A trailing slash is
    dropped (routes and node scopes ignore it).
    """
    parts = path.split("/")
    pattern = "/".join(ANY if _is_id(part) else part for part in parts)
    if len(pattern) > 1:
        pattern = pattern.rstrip("/")
    return pattern or "/"


def observed_pattern(route: CompiledRoute, path: str, method: str) -> str:
    """What the gate notes of a request: its :func:`path_pattern`, unless the
    route needs other scopes for the pattern than for the path (a rule that
    names one id, such as ``/api/items/42/secret``); then the path itself,
    with only over-long segments (a pasted token value) made ``*``. So a
    suggestion read from the notes is what the real requests needed.
    """
    pattern = path_pattern(path)
    if pattern == path or route.config.auth == "none":
        return pattern
    if route.required_scopes(pattern, method) == route.required_scopes(path, method):
        return pattern
    kept = "/".join(ANY if len(p) > MAX_SEGMENT else p for p in path.split("/"))
    return kept.rstrip("/") if len(kept) > 1 else kept


def _is_id(segment: str) -> bool:
    if not segment:
        return False
    if len(segment) > MAX_SEGMENT or _DIGITS.fullmatch(segment):
        return True
    if _UUID.fullmatch(segment):
        return True
    if _HEX.fullmatch(segment) and any(c.isdigit() for c in segment):
        return True
    return bool(
        _TOKEN_LIKE.fullmatch(segment)
        and any(c.isdigit() for c in segment)
        and any(c.isalpha() for c in segment)
    )


@dataclass(frozen=True, slots=True)
class Covered:
    """One suggested scope and the observed requests it covers."""

    scope: str
    requests: tuple[Observed, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "requests": [_request_json(r) for r in self.requests],
        }


@dataclass(frozen=True, slots=True)
class Suggestion:
    """What :func:`suggest` found (see the module docstring).

    ``unscoped`` are requests any valid token passes; ``unknown`` those on
    routes the config no longer has (they count for nothing).
    """

    scopes: tuple[Covered, ...] = ()
    nodes: tuple[Covered, ...] = ()
    unscoped: tuple[Observed, ...] = ()
    unknown: tuple[Observed, ...] = ()

    @property
    def granted(self) -> tuple[str, ...]:
        """The scopes to give the token: plain ones, then node scopes."""
        return tuple(c.scope for c in (*self.scopes, *self.nodes))

    @property
    def empty(self) -> bool:
        return not (self.scopes or self.nodes or self.unscoped)

    def to_json(self) -> dict[str, Any]:
        return {
            "scopes": list(self.granted),
            "covers": [c.to_json() for c in (*self.scopes, *self.nodes)],
            "unscoped": [_request_json(r) for r in self.unscoped],
            "unknown_routes": [_request_json(r) for r in self.unknown],
        }


def suggestion_json(
    record: TokenRecord, found: Suggestion, now: float
) -> dict[str, Any]:
    """The answer of ``token suggest --json`` and of the API."""
    return {
        "id": record.id,
        "scopes": list(record.scopes),
        "observe_until": format_time(record.observe_until),
        "observing": record.observing(now),
        "suggestion": found.to_json(),
    }


def _request_json(seen: Observed) -> dict[str, Any]:
    return {
        "route": seen.route,
        "method": seen.method,
        "path": seen.pattern,
        "count": seen.count,
        "last_seen": format_time(seen.last_seen),
    }


def suggest(observed: Iterable[Observed], router: Router) -> Suggestion:
    """The smallest set of scopes covering ``observed`` on ``router``'s routes."""
    routes = {route.config.name: route for route in router.routes}
    by_scope: dict[str, list[Observed]] = {}
    by_route: dict[str, list[Observed]] = {}
    unscoped: list[Observed] = []
    unknown: list[Observed] = []
    for seen in sorted(observed, key=_order):
        route = routes.get(seen.route)
        if route is None:
            unknown.append(seen)
            continue
        by_route.setdefault(seen.route, []).append(seen)
        if route.config.auth == "none":
            unscoped.append(seen)
            continue
        needed = route.required_scopes(seen.pattern, seen.method)
        if not needed:
            unscoped.append(seen)
        for scope in needed:
            by_scope.setdefault(scope, []).append(seen)
    scopes = tuple(Covered(s, tuple(reqs)) for s, reqs in sorted(by_scope.items()))
    nodes = _node_scopes({name: routes[name] for name in by_route}, by_route)
    return Suggestion(scopes, nodes, tuple(unscoped), tuple(unknown))


def _order(seen: Observed) -> tuple[str, str, str]:
    return (seen.route, seen.pattern, seen.method)


def _node_scopes(
    routes: dict[str, CompiledRoute], by_route: dict[str, list[Observed]]
) -> tuple[Covered, ...]:
    """Node scopes, when some route's paths share a deeper directory."""
    found: dict[str, tuple[str, bool, list[Observed]]] = {}
    deeper = False
    for name, seen in by_route.items():
        route = routes[name]
        root = route.root or "/"
        common = _common_directory(s.pattern for s in seen)
        if common is not None and _depth(common) > _depth(root):
            deeper = True
            directory = common
        else:
            directory = root
        try:
            directory = canonical_node_path(directory)
        except UsageError:
            return ()  # cannot be granted: no node scopes rather than wrong ones
        # As the gateway reads it (NodeScope.allows): "get" is not a safe method.
        write = any(s.method not in SAFE_METHODS for s in seen)
        _, wrote, requests = found.get(directory, (directory, False, []))
        found[directory] = (directory, write or wrote, requests + seen)
    if not deeper:
        return ()
    return tuple(
        Covered(f"node:{path}:{'rw' if write else 'r'}", tuple(requests))
        for path, write, requests in sorted(found.values())
    )


def _common_directory(patterns: Iterable[str]) -> str | None:
    """The deepest directory holding every pattern (before any ``*``)."""
    common: list[str] | None = None
    for pattern in patterns:
        parts = [p for p in pattern.split("/") if p]
        # Before the first id, else the directory of a file or collection.
        parts = parts[: parts.index(ANY)] if ANY in parts else parts[:-1]
        if common is None:
            common = parts
        else:
            length = 0
            for a, b in zip(common, parts, strict=False):
                if a != b:
                    break
                length += 1
            common = common[:length]
    if common is None:
        return None
    return "/" + "/".join(common)


def _depth(path: str) -> int:
    return len([p for p in path.split("/") if p])


def narrow(
    held: Sequence[str], suggestion: Suggestion, sets: ScopeSets
) -> tuple[str, ...]:
    """The token's scopes narrowed to ``suggestion``, never wider than ``held``.

    A suggested plain scope is kept only if ``held`` grants it; when no
    scope is needed at all the held plain scopes stay. A suggested node
    scope is kept where the held node scopes allow it (their meet).
    ConflictError when there is nothing to narrow to.
    """
    if suggestion.empty:
        raise ConflictError("nothing observed on the configured routes: no suggestion")
    plain, nodes = _held(held, sets)
    if suggestion.scopes:
        kept = [c.scope for c in suggestion.scopes if covered_by(c.scope, plain)]
        if not kept:
            raise ConflictError("the suggestion holds nothing the token holds")
    else:
        kept = list(plain)
    narrowed_nodes = _narrow_nodes(nodes, [c.scope for c in suggestion.nodes])
    if nodes and suggestion.nodes and not narrowed_nodes:
        raise ConflictError("the suggested node scopes lie outside the token's")
    if not suggestion.nodes:
        narrowed_nodes = [f"node:{n.path}:{_mode(n)}" for n in nodes]
    if not kept:
        # SECURITY: no plain scope left would read as "*", a widening.
        raise ConflictError("nothing to narrow to")
    return tuple(dict.fromkeys((*kept, *narrowed_nodes)))


def _held(
    held: Sequence[str], sets: ScopeSets
) -> tuple[tuple[str, ...], list[NodeScope]]:
    """The token's plain scopes (sets expanded; ``*`` if it has only node
    scopes) and its node scopes, as the gate reads them."""
    plain, nodes = held_scopes(held, sets)
    if not plain and not any(s.startswith("@") for s in held):
        plain = (ALL,)
    return plain, list(nodes or ())


def _narrow_nodes(held: list[NodeScope], suggested: list[str]) -> list[str]:
    out: list[str] = []
    for scope in suggested:
        node = parse_node_scope(scope)
        if node is None:
            continue
        if not held:
            out.append(scope)
            continue
        for mine in held:
            met = node.meet(mine)
            if met is not None:
                out.append(f"node:{met.path}:{_mode(met)}")
    return list(dict.fromkeys(out))


def _mode(node: NodeScope) -> str:
    return ("r" if node.read else "") + ("w" if node.write else "")
