"""The decision: may this token make this request on this route.

:func:`decide` takes the decision for one request from the route, the cached
grant (token + owner) and the :class:`Attempt` (path, method, client
address, Basic login, presented hash) at a given time. It is pure and is
taken per request; it is never cached by path. Every 401 looks the same
outside (``invalid_token``); only ``reason``, which goes to the log, says
why. Which scopes a request needs is the route's business
(:mod:`patgate.routing`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from patgate.models import TokenGrant, TokenStatus
from patgate.routing import CompiledRoute
from patgate.scopes import (
    SAFE_METHODS,
    EffectiveScopes,
    ScopeSets,
    effective_scopes,
)
from patgate.tokens import hashes_match

__all__ = [
    "PUBLIC",
    "Attempt",
    "Decision",
    "decide",
    "describe_scopes",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


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
# The decision


@dataclass(slots=True)  # made per request: not frozen, which costs more
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

    known token → hash (current, or previous during its grace period or
    until an activate-on-use value is first used; a retired one is
    ``rotation_reuse``) → not a canary →
    not revoked/expired → owner enabled → Basic login is the owner →
    client IP allowed → node scopes (the token's and its owner's) allow the
    path → scopes grant every scope the route requires for it.
    """
    if route.config.auth == "none":
        return PUBLIC
    if grant is None:
        return _unauthorized("unknown_token")
    token, owner = grant.token, grant.owner
    refused = _check_value(grant, attempt.token_hash, now)
    if refused is not None:
        return refused
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


def _check_value(grant: TokenGrant, presented: bytes, now: float) -> Decision | None:
    """The refusal of a value that is not live, or of a canary; None if live."""
    token = grant.token
    if not _hash_valid(grant, presented, now):
        if token.status is not TokenStatus.REVOKED and _hash_retired(
            token.retired_hashes, presented
        ):
            # A value regenerated away, back after its grace: likely stolen.
            return _unauthorized("rotation_reuse", token.id, token.owner)
        return _unauthorized("hash_mismatch", token.id)
    if token.canary:
        # SECURITY: refused exactly like an unknown token (the same answer
        # as any 401 here); only the log and the canary.used event know.
        return _unauthorized("canary", token.id, token.owner)
    return None


def _check_scopes(
    route: CompiledRoute, path: str, method: str, grant: TokenGrant
) -> Decision:
    token = grant.token
    scopes, described = _effective(token.scopes, grant.owner.scopes, route.scope_sets)
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
    in_grace = token.activate_on_use or (
        token.previous_hash_until is not None and now < token.previous_hash_until
    )
    return current or (previous and in_grace)


def _hash_retired(retired: tuple[bytes, ...], presented: bytes) -> bool:
    # Every comparison made: the time says nothing about which one matched.
    found = False
    for old in retired:
        found |= hashes_match(old, presented)
    return found


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
    token_scopes: tuple[str, ...], owner_scopes: tuple[str, ...], sets: ScopeSets
) -> tuple[EffectiveScopes, tuple[str, ...]]:
    # Keyed by the scopes themselves, not by token: an edit that changes them
    # is a new key, so nothing stale can be served from here; and by the
    # config's sets, hashed by identity, so a reload is a new key too.
    scopes = effective_scopes(token_scopes, owner_scopes, sets)
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
    return _ip_in(client_ip, tuple(cidrs))


@lru_cache(maxsize=4096)
def _ip_in(client_ip: str, cidrs: tuple[str, ...]) -> bool:
    """Parsing the address is the costly part (pure Python): once per pair."""
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
