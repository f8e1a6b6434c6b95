"""Scope strings and what covers what.

Grammar:
  ``*``                      everything the owner holds
  ``files:*``                every scope starting with ``files:``
  ``files:read``             one scope
  ``@files-rw``              a scope set from the config, kept by name on a
                             token and read from the config at each request
  ``node:/dav/alpha:rw``     a subtree of paths; ``r`` = safe methods, ``w`` = the rest

Node scopes confine; they never grant a path. A token with node scopes acts
only inside them, and a user with node scopes, and every token of that user,
only inside the user's: at request time the two confinements intersect
(:func:`effective_scopes`), so no change to the owner can lift a confinement
the token carries itself. The plain scopes of a token count while the owner
holds them; ``*`` (and a token whose only scopes are node scopes) means the
owner's plain scopes as they are now.

A node path is granted in canonical form only (:func:`canonical_scope`):
segments of letters, digits, ``-._~!$&'()+@`` and percent-escapes, no ``.``
or ``..`` segment, no trailing slash. Nothing that separates list elements or
parameters in a header (``,`` ``;`` ``=`` ``"`` ``:`` white space) can be
granted. A node scope stored before this rule keeps confining its token to its
subtree as written (never to more); one that cannot be read at all confines
it to nothing.

Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote

from patgate.errors import UsageError
from patgate.paths import PathError, normalise_path

ALL = "*"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PROPFIND"})
NODE_PREFIX = "node:"
_PLAIN = re.compile(r"^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)*(:\*)?$")
_NODE = re.compile(r"node:(.*):(rw|r|w)", re.DOTALL)
# SECURITY: node paths are listed in X-Patgate-Scopes; a "," or white space
# in one would forge list elements there ("node:/dav/x,*,admin:rw").
_NODE_PATH = re.compile(r"(?:/(?:[A-Za-z0-9._~!$&'()+@-]|%[0-9A-Fa-f]{2})*)+")
# What node paths were before they had to be canonical (still read, not granted).
_LEGACY_NODE_PATH = re.compile(r"/[^\s:]*")


@dataclass(frozen=True, slots=True)
class NodeScope:
    """A subtree confinement: ``path`` and below, for reading and/or writing."""

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

    def meet(self, other: NodeScope) -> NodeScope | None:
        """Where both allow: the deeper subtree with the modes both hold."""
        if path_within(self.path, other.path):
            inner = self.path
        elif path_within(other.path, self.path):
            inner = other.path
        else:
            return None
        read, write = self.read and other.read, self.write and other.write
        return NodeScope(inner, read, write) if read or write else None


# Confines to nothing: the form of a node scope that cannot be read.
NOWHERE = NodeScope(path="/\x00", read=False, write=False)


def path_within(path: str, root: str) -> bool:
    """True when ``path`` is ``root`` or below it (segment-wise, not by prefix)."""
    root = root.rstrip("/")
    if root == "":
        return True
    return path == root or path.startswith(root + "/")


def is_node_scope(scope: str) -> bool:
    return scope.startswith(NODE_PREFIX)


def canonical_node_path(path: str) -> str:
    """The canonical form of a node path, or UsageError if it cannot be granted."""
    if not _NODE_PATH.fullmatch(path):
        raise UsageError(
            f"invalid node path {path!r}: use '/'-separated names of letters,"
            " digits, '-._~!$&'()+@' and %XX escapes (no ',', ';', ':', '=',"
            " '*' or white space)"
        )
    if any(unquote(part) in (".", "..") for part in path.split("/")):
        raise UsageError(f"invalid node path {path!r}: no '.' or '..' segments")
    try:
        canonical = normalise_path(path)
    except PathError as exc:
        raise UsageError(f"invalid node path {path!r}: {exc}") from None
    return canonical.rstrip("/") or "/"


def parse_node_scope(scope: str) -> NodeScope | None:
    """The node scope ``scope`` names; None for a scope that is not one.

    A stored node path that is not canonical (see :func:`canonical_scope`)
    is read as written: a literal subtree, which only ever matches fewer
    canonical request paths. A ``node:`` scope that cannot be read is
    :data:`NOWHERE`: whatever it was meant to allow, it allows nothing.
    """
    if not is_node_scope(scope):
        return None
    return _parse_node(scope)


@lru_cache(maxsize=4096)
def _parse_node(scope: str) -> NodeScope:
    match = _NODE.fullmatch(scope)
    if not match:
        return NOWHERE
    path, mode = match.groups()
    try:
        path = canonical_node_path(path)
    except UsageError:
        if not _LEGACY_NODE_PATH.fullmatch(path):
            return NOWHERE
        path = path.rstrip("/") or "/"
    return NodeScope(path=path, read="r" in mode, write="w" in mode)


def canonical_scope(scope: str) -> str:
    """``scope`` in the one form it is stored in; UsageError if malformed.

    Node paths are canonicalised (``node:/dav/a/:rw`` → ``node:/dav/a:rw``,
    ``%7e`` → ``~``, escapes in upper case).
    """
    if scope == ALL:
        return scope
    if is_node_scope(scope):
        match = _NODE.fullmatch(scope)
        if not match:
            raise UsageError(
                f"invalid node scope {scope!r}: expected node:/path:r, :w or :rw"
            )
        return f"{NODE_PREFIX}{canonical_node_path(match.group(1))}:{match.group(2)}"
    if not _PLAIN.match(scope):
        raise UsageError(
            f"invalid scope {scope!r}: use letters, digits, '.', '_', '-' and ':'"
            " (e.g. files:read, files:*, *)"
        )
    return scope


def expand_scopes(
    requested: Iterable[str], scope_sets: Mapping[str, Sequence[str]]
) -> tuple[str, ...]:
    """Expand ``@set`` names, canonicalise every scope, drop duplicates (order kept)."""
    result: list[str] = []
    for scope in requested:
        scope = scope.strip()
        if scope.startswith("@"):
            members: Sequence[str] = scope_sets[_known_set(scope, scope_sets)]
        else:
            members = (scope,)
        for member in members:
            canonical = canonical_scope(member)
            if canonical not in result:
                result.append(canonical)
    return tuple(result) if result else (ALL,)


def name_scopes(
    requested: Iterable[str], scope_sets: Mapping[str, Sequence[str]]
) -> tuple[str, ...]:
    """What a token keeps: like :func:`expand_scopes`, but a ``@set`` stays a
    name (it must exist now), so the token follows the set's definition in
    the config as it is at each request (:func:`effective_scopes`)."""
    result: list[str] = []
    for scope in requested:
        scope = scope.strip()
        if scope.startswith("@"):
            canonical = "@" + _known_set(scope, scope_sets)
        else:
            canonical = canonical_scope(scope)
        if canonical not in result:
            result.append(canonical)
    return tuple(result) if result else (ALL,)


def _known_set(scope: str, scope_sets: Mapping[str, Sequence[str]]) -> str:
    name = scope[1:]
    if name not in scope_sets:
        known = ", ".join(sorted(scope_sets)) or "none defined"
        raise UsageError(f"unknown scope set {scope!r} (known: {known})")
    return name


def scope_covers(held: str, wanted: str) -> bool:
    """True when holding ``held`` grants ``wanted`` (both non-node scopes)."""
    if held in (ALL, wanted):
        return True
    if held.endswith(":*"):
        return wanted.startswith(held[:-1])
    return False


def covered_by(wanted: str, held: Iterable[str]) -> bool:
    """True when ``held`` may grant ``wanted`` (the subset rule, node scopes too).

    A node scope only narrows a token, so an owner confined to no node may
    grant any; an owner confined to nodes may grant one inside them.
    """
    wanted_node = parse_node_scope(wanted)
    if wanted_node is None:
        return any(
            scope_covers(scope, wanted) for scope in held if not is_node_scope(scope)
        )
    if wanted_node == NOWHERE:
        return False
    owner_nodes = [node for s in held if (node := parse_node_scope(s)) is not None]
    return not owner_nodes or any(node.covers(wanted_node) for node in owner_nodes)


def uncovered(wanted: Iterable[str], held: Sequence[str]) -> list[str]:
    """The scopes of ``wanted`` that ``held`` does not grant (the subset rule)."""
    return [scope for scope in wanted if not covered_by(scope, held)]


class ScopeSets:
    """The config's scope sets (each already expanded), as requests read them.

    Compared and hashed by identity: every config load makes a new one, so a
    memo keyed by it can never serve a set's old definition after a reload.
    """

    __slots__ = ("members",)

    def __init__(self, members: Mapping[str, Sequence[str]] | None = None) -> None:
        self.members: dict[str, tuple[str, ...]] = {
            name: tuple(scopes) for name, scopes in (members or {}).items()
        }


NO_SETS = ScopeSets()


def accepting_scopes(
    needed: Sequence[str], sets: ScopeSets = NO_SETS
) -> tuple[str, ...]:
    """What a token could have held to be granted every scope of ``needed``.

    Each element alone would do: the scopes themselves (space-separated when
    more than one), then the wildcards that cover them all, narrowest first,
    then the scope sets whose members cover them all. ``*`` is left out: it
    always covers, within what the owner holds.
    """
    if not needed:
        return ()
    if any(is_node_scope(scope) for scope in needed):
        # SECURITY: a request path may hold "," or ";", which would forge list
        # elements in a header; only a node scope that could be granted is named.
        try:
            return (" ".join(canonical_scope(scope) for scope in needed),)
        except UsageError:
            return ()
    found: list[str] = [" ".join(needed)]
    first = needed[0]
    if first:
        parts = first.split(":")
        for length in range(len(parts) - 1, 0, -1):
            wildcard = ":".join(parts[:length]) + ":*"
            if wildcard != first and all(scope_covers(wildcard, s) for s in needed):
                found.append(wildcard)
    for name, members in sorted(sets.members.items()):
        if all(covered_by(scope, members) for scope in needed):
            found.append(f"@{name}")
    return tuple(dict.fromkeys(found))


@dataclass(frozen=True, slots=True)
class EffectiveScopes:
    """What a token may do right now, after its owner's scopes are applied.

    ``plain`` are the non-node scopes (``*`` expanded to the owner's);
    ``nodes`` is None when the token may act on every path, else the subtrees
    it may act in (empty: none).
    """

    plain: tuple[str, ...]
    nodes: tuple[NodeScope, ...] | None

    def grants(self, wanted: str | None) -> bool:
        if wanted is None:
            return True
        return _any_covers(self.plain, wanted)

    def allows_path(self, path: str, method: str) -> bool:
        if self.nodes is None:
            return True
        return any(node.allows(path, method) for node in self.nodes)


@lru_cache(maxsize=4096)
def _any_covers(held: tuple[str, ...], wanted: str) -> bool:
    """Memoised: every request asks it, of a handful of distinct scope sets."""
    return any(scope_covers(scope, wanted) for scope in held)


def effective_scopes(
    token_scopes: Sequence[str],
    owner_scopes: Sequence[str],
    sets: ScopeSets = NO_SETS,
) -> EffectiveScopes:
    """Apply the subset rule at request time.

    ``*`` on the token means the owner's plain scopes as they are now; a
    ``@set`` means the set's members as ``sets`` (the config now) defines
    them, nothing once the set is gone; any other plain scope, and each
    member, counts only while the owner still holds it. A token whose only
    scopes are node scopes holds ``*`` (of the owner) inside those nodes.
    The token acts only where both its own node scopes and its owner's
    allow (each side without node scopes allows every path).
    """
    owner_plain, owner_nodes = _split(owner_scopes)
    gone = False
    if any(scope.startswith("@") for scope in token_scopes):
        token_scopes, gone = _expand_live(token_scopes, sets)
    token_plain, token_nodes = _split(token_scopes)
    plain: list[str] = []
    for scope in token_plain:
        if scope == ALL:
            plain.extend(owner_plain)
        elif covered_by(scope, owner_plain):
            plain.append(scope)
    # SECURITY: a set removed from the config leaves its token nothing; it
    # must not turn "@set + node" into "node only", the owner's "*" there.
    if token_nodes is not None and not token_plain and not gone:
        plain.extend(owner_plain)
    # SECURITY: scope narrowing; a token's own node scopes always confine it,
    # whatever its owner holds now, and the owner's confine every token.
    return EffectiveScopes(
        plain=tuple(dict.fromkeys(plain)), nodes=_confine(token_nodes, owner_nodes)
    )


def held_scopes(
    scopes: Sequence[str], sets: ScopeSets
) -> tuple[tuple[str, ...], tuple[NodeScope, ...] | None]:
    """A token's scopes as the gate reads them: ``@set`` names expanded to
    the members ``sets`` gives them now, then split into plain scopes and
    node scopes (None: no node scope)."""
    return _split(_expand_live(scopes, sets)[0])


def _expand_live(
    scopes: Sequence[str], sets: ScopeSets
) -> tuple[tuple[str, ...], bool]:
    """``@set`` names replaced by the members ``sets`` gives them now, and
    whether any named set is gone."""
    expanded: list[str] = []
    gone = False
    for scope in scopes:
        if scope.startswith("@"):
            members = sets.members.get(scope[1:])
            gone = gone or members is None
            expanded.extend(members or ())
        else:
            expanded.append(scope)
    return tuple(dict.fromkeys(expanded)), gone


def _split(
    scopes: Sequence[str],
) -> tuple[tuple[str, ...], tuple[NodeScope, ...] | None]:
    plain = tuple(s for s in scopes if not is_node_scope(s))
    nodes = tuple(_parse_node(s) for s in scopes if is_node_scope(s))
    return plain, (nodes or None)


def _confine(
    first: tuple[NodeScope, ...] | None, second: tuple[NodeScope, ...] | None
) -> tuple[NodeScope, ...] | None:
    """The subtrees both confinements allow (None: no confinement)."""
    if first is None or second is None:
        confined = second if first is None else first
        if confined is None:
            return None
        return tuple(dict.fromkeys(n for n in confined if n.read or n.write))
    met = (a.meet(b) for a in first for b in second)
    return tuple(dict.fromkeys(node for node in met if node is not None))
