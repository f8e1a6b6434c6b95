"""Scope strings and what covers what.

Grammar:
  ``*``                      everything the owner holds
  ``files:*``                every scope starting with ``files:``
  ``files:read``             one scope
  ``@files-rw``              a scope set from the config, expanded when granted
  ``node:/dav/alpha:rw``     a subtree of paths; ``r`` = safe methods, ``w`` = the rest

Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from patgate.errors import UsageError

ALL = "*"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PROPFIND"})
_PLAIN = re.compile(r"^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)*(:\*)?$")
_NODE = re.compile(r"^node:(/[^\s:]*):(rw|r|w)$")


@dataclass(frozen=True, slots=True)
class NodeScope:
    """A subtree grant: ``path`` and below, for reading and/or writing."""

    path: str
    read: bool
    write: bool

    def allows(self, path: str, method: str) -> bool:
        if not path_within(path, self.path):
            return False
        return self.read if method in SAFE_METHODS else self.write

    def covers(self, other: NodeScope) -> bool:
        return (
            path_within(other.path, self.path)
            and (self.read or not other.read)
            and (self.write or not other.write)
        )


def path_within(path: str, root: str) -> bool:
    """True when ``path`` is ``root`` or below it (segment-wise, not by prefix)."""
    root = root.rstrip("/")
    if root == "":
        return True
    return path == root or path.startswith(root + "/")


def parse_node_scope(scope: str) -> NodeScope | None:
    match = _NODE.match(scope)
    if not match:
        return None
    mode = match.group(2)
    path = match.group(1).rstrip("/") or "/"
    return NodeScope(path=path, read="r" in mode, write="w" in mode)


def validate_scope(scope: str) -> None:
    """Raise UsageError unless ``scope`` is well-formed."""
    if scope == ALL or parse_node_scope(scope) is not None:
        return
    if scope.startswith("node:"):
        raise UsageError(
            f"invalid node scope {scope!r}: expected node:/path:r, :w or :rw"
        )
    if not _PLAIN.match(scope):
        raise UsageError(
            f"invalid scope {scope!r}: use letters, digits, '.', '_', '-' and ':'"
            " (e.g. files:read, files:*, *)"
        )


def expand_scopes(
    requested: Iterable[str], scope_sets: Mapping[str, Sequence[str]]
) -> tuple[str, ...]:
    """Expand ``@set`` names, validate every scope, drop duplicates (order kept)."""
    result: list[str] = []
    for scope in requested:
        scope = scope.strip()
        if scope.startswith("@"):
            name = scope[1:]
            if name not in scope_sets:
                known = ", ".join(sorted(scope_sets)) or "none defined"
                raise UsageError(f"unknown scope set {scope!r} (known: {known})")
            members: Sequence[str] = scope_sets[name]
        else:
            members = (scope,)
        for member in members:
            validate_scope(member)
            if member not in result:
                result.append(member)
    return tuple(result) if result else (ALL,)


def scope_covers(held: str, wanted: str) -> bool:
    """True when holding ``held`` grants ``wanted`` (both non-node scopes)."""
    if held in (ALL, wanted):
        return True
    if held.endswith(":*"):
        return wanted.startswith(held[:-1])
    return False


def covered_by(wanted: str, held: Iterable[str]) -> bool:
    """True when any of ``held`` grants ``wanted`` (node scopes included)."""
    wanted_node = parse_node_scope(wanted)
    for scope in held:
        if scope == ALL:
            return True
        if wanted_node is not None:
            held_node = parse_node_scope(scope)
            if held_node is not None and held_node.covers(wanted_node):
                return True
        elif scope_covers(scope, wanted):
            return True
    return False


def uncovered(wanted: Iterable[str], held: Sequence[str]) -> list[str]:
    """The scopes of ``wanted`` that ``held`` does not grant (the subset rule)."""
    return [scope for scope in wanted if not covered_by(scope, held)]


@dataclass(frozen=True, slots=True)
class EffectiveScopes:
    """What a token may do right now, after its owner's scopes are applied.

    ``plain`` are the non-node scopes (``*`` expanded to the owner's);
    ``nodes`` restrict the token to subtrees when not empty.
    """

    plain: tuple[str, ...]
    nodes: tuple[NodeScope, ...]

    def grants(self, wanted: str | None) -> bool:
        if wanted is None:
            return True
        return _any_covers(self.plain, wanted)

    def allows_path(self, path: str, method: str) -> bool:
        if not self.nodes:
            return True
        return any(node.allows(path, method) for node in self.nodes)


@lru_cache(maxsize=4096)
def _any_covers(held: tuple[str, ...], wanted: str) -> bool:
    """Memoised: every request asks it, of a handful of distinct scope sets."""
    return any(scope_covers(scope, wanted) for scope in held)


def effective_scopes(
    token_scopes: Sequence[str], owner_scopes: Sequence[str]
) -> EffectiveScopes:
    """Apply the subset rule at request time.

    ``*`` on the token means the owner's scopes as they are now; any other
    token scope counts only while the owner still holds it. A token whose only
    scopes are node scopes holds ``*`` (of the owner) inside those nodes.
    """
    nodes: list[NodeScope] = []
    plain: list[str] = []
    for scope in token_scopes:
        node = parse_node_scope(scope)
        if node is not None:
            if covered_by(scope, owner_scopes):
                nodes.append(node)
        elif scope == ALL:
            plain.extend(s for s in owner_scopes if parse_node_scope(s) is None)
            nodes.extend(
                n for s in owner_scopes if (n := parse_node_scope(s)) is not None
            )
        elif covered_by(scope, owner_scopes):
            plain.append(scope)
    has_node_scope = any(parse_node_scope(s) for s in token_scopes)
    if has_node_scope and not any(parse_node_scope(s) is None for s in token_scopes):
        plain.extend(s for s in owner_scopes if parse_node_scope(s) is None)
        if not nodes:
            # SECURITY: node scopes the owner no longer holds must not widen the
            # token to every path; it keeps an empty, impossible subtree instead.
            nodes.append(NodeScope(path="/\x00", read=False, write=False))
    return EffectiveScopes(plain=tuple(dict.fromkeys(plain)), nodes=tuple(nodes))
