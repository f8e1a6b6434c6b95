"""Scope narrowing: taking scopes from a user must never widen their tokens.

Issue 11, finding 1: a token with ``node:/dav/carol:rw files:read
files:write`` whose owner held ``*`` was refused on ``/dav/bob/secret``;
once an admin narrowed the owner to ``files:read files:write``, the node
scope was no longer "covered" and was dropped, and the same token reached
every path. And an owner's own node scopes confined their ``*`` tokens but
not their explicitly scoped ones.

Stopped in ``scopes.effective_scopes``: node scopes only confine, the
token's own always, the owner's for every token, and the two intersect.
The class is held as properties of ``policy.decide`` over generated owner and
token scope sets, and the examples against a real gateway whose owner is
changed while it serves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patgate.config import RouteConfig
from patgate.models import TokenGrant, TokenRecord, User
from patgate.policy import Attempt, decide
from patgate.routing import CompiledRoute
from patgate.tokens import hash_token
from tests.gateway_harness import ADMIN, Gateway, RecordingUpstream, StartGateway

ROUTES = """\
  - name: files
    prefix: /dav/
    upstream: {upstream}
    methods: {{GET: files:read, HEAD: files:read, PROPFIND: files:read,
              '*': files:write}}
  - name: env
    prefix: /env/
    upstream: {upstream}
    scope: env:read
"""


@pytest.fixture
async def gateway(
    make_gateway: StartGateway, upstream: RecordingUpstream, sqlite_url: str
) -> Gateway:
    return await make_gateway(sqlite_url, ROUTES.format(upstream=upstream.url))


async def status(
    client: aiohttp.ClientSession, gateway: Gateway, token: str, path: str, method: str
) -> int:
    async with client.request(
        method,
        gateway.url + path,
        headers={"Authorization": f"Bearer {token}"},
        data=b"x" if method == "PUT" else None,
    ) as response:
        await response.read()
        return response.status


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Wait (up to 3 s) for a change to reach the gateway's cache."""
    deadline = time.monotonic() + 3.0
    while not await check():
        assert time.monotonic() < deadline, "the change never reached the gateway"
        await asyncio.sleep(0.05)


async def narrow_owner(
    client: aiohttp.ClientSession, gateway: Gateway, login: str, scopes: Sequence[str]
) -> None:
    """Change ``login``'s scopes, and wait until the gateway applies it.

    A ``*`` probe token on a route needing ``env:read`` shows when: the new
    scopes hold no ``env:read``.
    """
    probe = await gateway.token(login)
    assert await status(client, gateway, probe, "/env/x", "GET") == 200
    await gateway.service.set_user_scopes(ADMIN, login, scopes)

    async def applied() -> bool:
        return await status(client, gateway, probe, "/env/x", "GET") == 403

    await eventually(applied)


async def test_narrowing_the_owner_keeps_the_tokens_node_confinement(
    gateway: Gateway, upstream: RecordingUpstream, client: aiohttp.ClientSession
) -> None:
    token = await gateway.token(
        "carol", scopes=["node:/dav/carol:rw", "files:read", "files:write"]
    )
    for method in ("GET", "PUT"):
        assert await status(client, gateway, token, "/dav/bob/secret", method) == 403
    await narrow_owner(client, gateway, "carol", ["files:read", "files:write"])
    for method in ("GET", "PUT", "DELETE", "PROPFIND"):
        assert await status(client, gateway, token, "/dav/bob/secret", method) == 403
        assert await status(client, gateway, token, "/dav/carol/x", method) == 200
    assert {seen.raw_path for seen in upstream.requests} == {"/env/x", "/dav/carol/x"}


async def test_confining_the_owner_elsewhere_leaves_the_token_nothing(
    gateway: Gateway, client: aiohttp.ClientSession
) -> None:
    token = await gateway.token("carol", scopes=["node:/dav/carol:rw"])
    assert await status(client, gateway, token, "/dav/carol/x", "GET") == 200
    await narrow_owner(client, gateway, "carol", ["files:*", "node:/dav/alice:rw"])
    for path in ("/dav/carol/x", "/dav/alice/x", "/dav/bob/x"):
        assert await status(client, gateway, token, path, "GET") == 403


async def test_owner_node_scopes_confine_explicitly_scoped_tokens(
    gateway: Gateway, upstream: RecordingUpstream, client: aiohttp.ClientSession
) -> None:
    await gateway.add_user("alice", ["files:read", "files:write", "node:/dav/alice:r"])
    explicit = await gateway.token("alice", scopes=["files:read", "files:write"])
    star = await gateway.token("alice")
    for token in (explicit, star):
        assert await status(client, gateway, token, "/dav/bob/x", "GET") == 403
        assert await status(client, gateway, token, "/dav/alice/x", "PUT") == 403
        assert await status(client, gateway, token, "/dav/alice/x", "GET") == 200
    assert [seen.raw_path for seen in upstream.requests] == ["/dav/alice/x"] * 2


async def test_only_removing_a_users_last_node_scope_lifts_the_confinement(
    gateway: Gateway, client: aiohttp.ClientSession
) -> None:
    # The documented exception: without node scopes a user is unconfined, so
    # taking the last one away widens the user (like granting "*") on purpose.
    await gateway.add_user(
        "alice", ["files:read", "env:read", "node:/dav/a:r", "node:/env:r"]
    )
    token = await gateway.token("alice", scopes=["files:read"])
    assert await status(client, gateway, token, "/dav/b/x", "GET") == 403
    await narrow_owner(client, gateway, "alice", ["files:read", "node:/dav/a:r"])
    assert await status(client, gateway, token, "/dav/b/x", "GET") == 403
    assert await status(client, gateway, token, "/dav/a/x", "GET") == 200


# --------------------------------------------------------------------------
# The class, as properties of the decision

PLAIN = ["*", "files:read", "files:write", "files:*", "env:read"]
NODES = [
    f"node:{path}:{mode}"
    for path in ("/", "/dav", "/dav/alice", "/dav/alice/x", "/dav/bob", "/env")
    for mode in ("r", "w", "rw")
]
PATHS = [
    "/",
    "/dav",
    "/dav/alice",
    "/dav/alice/x/y",
    "/dav/alicex",
    "/dav/bob/z",
    "/env/q",
]
METHODS = ["GET", "HEAD", "PROPFIND", "PUT", "DELETE"]
NEEDED = [None, "files:read", "files:write", "env:read", "other:x"]
REQUESTS = [(m, p, s) for m in METHODS for p in PATHS for s in NEEDED]
HASH = hash_token("pgt_AbCd12340123456789abcdefghijABCDEFGHIJkl08YpVI", b"p")


def route_needing(scope: str | None) -> CompiledRoute:
    return CompiledRoute(RouteConfig("r", "/", "http://127.0.0.1:1", scope=scope))


ROUTES_BY_SCOPE = {scope: route_needing(scope) for scope in NEEDED}


def allowed(token: Sequence[str], owner: Sequence[str]) -> set[tuple[str, str, str]]:
    """Every (method, path, needed scope) the token passes with this owner."""
    record = TokenRecord(
        id="AbCd1234", owner="o", token_hash=HASH, scopes=tuple(token), created_at=0
    )
    grant = TokenGrant(record, User(login="o", scopes=tuple(owner)))
    return {
        (method, path, str(scope))
        for method, path, scope in REQUESTS
        if decide(
            ROUTES_BY_SCOPE[scope], Attempt(method, path, None, None, HASH), grant, 1.0
        ).allowed
    }


scope_sets = st.lists(st.sampled_from(PLAIN + NODES), min_size=1, max_size=5).map(
    lambda scopes: tuple(dict.fromkeys(scopes))
)


@st.composite
def narrowings(draw: st.DrawFn) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """An owner's scopes and a narrowing of them: any subset, except that an
    owner confined to nodes stays confined to at least one of them."""
    owner = draw(scope_sets)
    kept = tuple(s for s in owner if draw(st.booleans()))
    nodes = [s for s in owner if s.startswith("node:")]
    if nodes and not any(s.startswith("node:") for s in kept):
        kept += (draw(st.sampled_from(nodes)),)
    return owner, kept


@settings(max_examples=300, deadline=None, derandomize=True)
@given(narrowings(), scope_sets)
def test_narrowing_an_owner_never_widens_a_token(
    owners: tuple[tuple[str, ...], tuple[str, ...]], token: tuple[str, ...]
) -> None:
    owner, narrowed = owners
    assert allowed(token, narrowed) <= allowed(token, owner)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(scope_sets, scope_sets)
def test_a_token_is_never_wider_than_a_star_token_of_its_owner(
    owner: tuple[str, ...], token: tuple[str, ...]
) -> None:
    assert allowed(token, owner) <= allowed(("*",), owner)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(scope_sets, scope_sets)
def test_a_tokens_own_node_scopes_always_confine_it(
    owner: tuple[str, ...], token: tuple[str, ...]
) -> None:
    nodes = [s for s in token if s.startswith("node:")]
    if not nodes:
        return
    alone = allowed(nodes, ("*",))  # what the token's nodes allow at most
    paths_and_methods = {(m, p) for m, p, _ in alone}
    assert {(m, p) for m, p, _ in allowed(token, owner)} <= paths_and_methods
