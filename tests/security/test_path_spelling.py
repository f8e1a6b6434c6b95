"""Path spelling: a ``paths`` rule or a prefix must not be dodged by another
spelling of the same path.

Issue 11, finding 2: with an ``env:read`` token, ``.../rest/stopenv`` was
refused but ``stopenv/``, ``stopenv;jsessionid=1`` and ``StopEnv`` were
forwarded (a JDK server ran the stop for them), and ``/api/admin`` and
``/api/ADMIN/users`` passed an ``/api/admin/*: api:admin`` rule. Upstreams
read a trailing slash, ``;`` parameters and (often) letter case as the same
endpoint.

Stopped in ``paths.normalise_path`` (a raw ``;`` is refused with 400) and
``policy`` + ``paths.decode_text`` (prefixes and rules match with the
trailing slash dropped, case folded unless the route is ``case_sensitive``,
and escapes also decoded, cut at ``;``/``?``/``#`` and Unicode case folded;
``/x/*`` covers ``/x``). The forwarded path is the canonical one, byte for
byte. Against a real gateway whose catch-all public route shares the
upstream, so a spelling that escaped its route would be served; and as
properties of the route matching over generated rules and spellings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from patgate.config import RouteConfig
from patgate.paths import normalise_path
from patgate.routing import CompiledRoute, Router
from tests.gateway_harness import Gateway, RecordingUpstream, StartGateway

ROUTES = """\
  - name: paas
    prefix: /1.0/
    upstream: {upstream}
    error_style: result
    paths:
      /1.0/environment/control/rest/stopenv: env:control
      /1.0/environment/*: env:read
  - name: api
    prefix: /api/
    upstream: {upstream}
    scope: api:read
    paths:
      /api/admin/*: api:admin
  - name: public
    prefix: /
    upstream: {upstream}
    auth: none
"""
STOPENV = "/1.0/environment/control/rest/stopenv"


@pytest.fixture
async def gateway(
    make_gateway: StartGateway, upstream: RecordingUpstream, sqlite_url: str
) -> Gateway:
    return await make_gateway(sqlite_url, ROUTES.format(upstream=upstream.url))


async def fetch(
    client: aiohttp.ClientSession,
    gateway: Gateway,
    target: str,
    token: str | None = None,
    method: str = "POST",
) -> int:
    """``target`` sent exactly as written (no normalising, no re-encoding)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with client.request(
        method, URL(gateway.url + target, encoded=True), headers=headers
    ) as response:
        await response.read()
        return response.status


def forwarded(upstream: RecordingUpstream) -> list[str]:
    return [seen.raw_path for seen in upstream.requests]


SPELLINGS_OF_STOPENV = [
    "StopEnv",
    "STOPENV/",
    "stopenv%3Bjsessionid=1",
    "stopenv%3bjsessionid=1/",
    "stop%45nv",  # an escaped unreserved letter is that letter: "stopEnv"
    "stopenv%3F.json",  # "?" to an upstream behind a decoding hop
    "stopenv%23top",
    "%C5%BFtopenv",  # long s: "s" to Java's equalsIgnoreCase
]


@pytest.mark.parametrize("spelling", SPELLINGS_OF_STOPENV)
async def test_every_spelling_of_a_guarded_path_needs_its_scope(
    gateway: Gateway,
    upstream: RecordingUpstream,
    client: aiohttp.ClientSession,
    spelling: str,
) -> None:
    target = STOPENV.rpartition("/")[0] + "/" + spelling
    reader = await gateway.token("alice", scopes=["env:read"])
    assert await fetch(client, gateway, target, reader) == 403
    assert forwarded(upstream) == []
    # As sent it meets "/1.0/environment/*", read as "stopenv" the stop rule:
    # the request needs both.
    both = await gateway.token("alice", scopes=["env:read", "env:control"])
    assert await fetch(client, gateway, target, both) == 200
    # What was checked is what was sent: the canonical path, byte for byte.
    assert forwarded(upstream) == [normalise_path(target)]


@pytest.mark.parametrize("target", [STOPENV, STOPENV + "/", STOPENV + "/x/.."])
async def test_the_canonical_spelling_needs_its_rule_alone(
    gateway: Gateway,
    upstream: RecordingUpstream,
    client: aiohttp.ClientSession,
    target: str,
) -> None:
    reader = await gateway.token("alice", scopes=["env:read"])
    assert await fetch(client, gateway, target, reader) == 403
    controller = await gateway.token("alice", scopes=["env:control"])
    assert await fetch(client, gateway, target, controller) == 200
    assert forwarded(upstream) == [normalise_path(target)]


@pytest.mark.parametrize(
    "target",
    [
        "/api/admin",
        "/api/admin/",
        "/api/ADMIN/users",
        "/api/Admin",
        "/api/admin%3Bx=1/users",
        "/api/adm%C4%B1n/users",  # dotless i: "i" to .NET and Java
    ],
)
async def test_prefix_glob_covers_its_parent_and_every_spelling(
    gateway: Gateway,
    upstream: RecordingUpstream,
    client: aiohttp.ClientSession,
    target: str,
) -> None:
    assert await fetch(client, gateway, target, method="GET") == 401
    reader = await gateway.token("alice", scopes=["api:read"])
    assert await fetch(client, gateway, target, reader, method="GET") == 403
    assert forwarded(upstream) == []
    admin = await gateway.token("alice", scopes=["api:read", "api:admin"])
    assert await fetch(client, gateway, target, admin, method="GET") == 200
    assert forwarded(upstream) == [normalise_path(target)]
    assert upstream.last.headers["X-Patgate-User"] == "alice"


@pytest.mark.parametrize(
    "target",
    [
        "/API/admin/users",
        "/Api/x",
        "/%41PI/admin/users",
        "/api%3Bx/admin",
        "/ap%C4%B1/admin",
        "/API%3Bx/y",
        "/1.0%3F/environment/control/rest/stopenv",
    ],
)
async def test_a_prefix_spelled_otherwise_does_not_fall_to_the_catch_all(
    gateway: Gateway,
    upstream: RecordingUpstream,
    client: aiohttp.ClientSession,
    target: str,
) -> None:
    # As sent, these are under the public catch-all "/"; read by the shared
    # upstream in another case or decoded, under a token route. Neither route
    # can be trusted with them.
    everything = await gateway.token("alice")
    assert await fetch(client, gateway, target, method="GET") == 404
    assert await fetch(client, gateway, target, everything, method="GET") == 404
    assert forwarded(upstream) == []


async def test_public_paths_in_any_case_still_reach_the_catch_all(
    gateway: Gateway, upstream: RecordingUpstream, client: aiohttp.ClientSession
) -> None:
    assert await fetch(client, gateway, "/Docs/Index.html", method="GET") == 200
    assert forwarded(upstream) == ["/Docs/Index.html"]


@pytest.mark.parametrize(
    "target",
    [
        f"{STOPENV};jsessionid=1",
        f"{STOPENV};",
        "/1.0/environment/control;x/rest/stopenv",
        "/api/admin;x/users",
        "/public;x/y",
        "/;/api/admin",
    ],
)
async def test_raw_path_parameters_are_refused_not_forwarded(
    gateway: Gateway,
    upstream: RecordingUpstream,
    client: aiohttp.ClientSession,
    target: str,
) -> None:
    everything = await gateway.token("alice")
    assert await fetch(client, gateway, target) == 400
    assert await fetch(client, gateway, target, everything) == 400
    assert forwarded(upstream) == []


EXACT = """\
  - name: exact
    prefix: /exact/
    upstream: {upstream}
    case_sensitive: true
    scope: api:read
    paths:
      /exact/admin/*: api:admin
"""


async def test_case_sensitive_route_folds_only_the_trailing_slash(
    make_gateway: StartGateway,
    upstream: RecordingUpstream,
    sqlite_url: str,
    client: aiohttp.ClientSession,
) -> None:
    gateway = await make_gateway(sqlite_url, EXACT.format(upstream=upstream.url))
    reader = await gateway.token("alice", scopes=["api:read"])
    for target in ("/exact/admin", "/exact/admin/", "/exact/admin/x/"):
        assert await fetch(client, gateway, target, reader, method="GET") == 403
    assert forwarded(upstream) == []
    # The route says its upstream tells "Admin" from "admin": another path.
    assert await fetch(client, gateway, "/exact/Admin/x", reader, method="GET") == 200
    assert forwarded(upstream) == ["/exact/Admin/x"]


# --------------------------------------------------------------------------
# The class, as properties of route matching, against a model of the rules

SEGMENTS = ["api", "admin", "stopenv", "x", "v1", "Admin"]
patterns = st.lists(st.sampled_from([*SEGMENTS, "*"]), min_size=1, max_size=4).map(
    lambda parts: "/" + "/".join(parts)
) | st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=3).map(
    lambda parts: "/" + "/".join(parts) + "/*"
)
paths = st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=5).map(
    lambda parts: "/" + "/".join(parts)
)
# What case-insensitive upstreams read as the same letter (Java, .NET).
LOOKALIKES = {"i": "%C4%B1", "s": "%C5%BF", "k": "%E2%84%AA"}


def model_matches(glob: str, path: str) -> bool:
    """The documented glob, written apart from the gateway's: ``*`` is any
    run, a final ``/*`` the parent or below, a trailing slash never counts."""
    path = path.rstrip("/") or "/"
    subtree = glob.endswith("/*")
    body = (glob[:-2] if subtree else glob).rstrip("/")
    if not subtree:
        body = body or "/"
    regex = ".*".join(re.escape(part) for part in body.split("*"))
    return re.fullmatch(regex + ("(/.*)?" if subtree else ""), path) is not None


def model_first(rules: list[str], path: str, fold: bool) -> str:
    """The scope of the first rule ``path`` meets (rule ``i`` needs ``r<i>``)."""
    for index, glob in enumerate(rules):
        if model_matches(
            glob.lower() if fold else glob, path.lower() if fold else path
        ):
            return f"r{index:02}"
    return "fallback"


def route_with(rules: list[str]) -> CompiledRoute:
    return CompiledRoute(
        RouteConfig(
            "r",
            "/",
            "http://127.0.0.1:1",
            paths=tuple((glob, f"r{index:02}") for index, glob in enumerate(rules)),
            scope="fallback",
        )
    )


@st.composite
def recased(draw: st.DrawFn, path: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(path), max_size=len(path)))
    text = "".join(c.swapcase() if f else c for c, f in zip(path, flips, strict=True))
    return text + ("/" if draw(st.booleans()) else "")


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(patterns, min_size=1, max_size=5), paths, st.data())
def test_a_path_needs_the_rule_it_meets_as_sent_and_in_any_case(
    rules: list[str], path: str, data: st.DataObject
) -> None:
    spelling = data.draw(recased(path))
    needed = set(route_with(rules).required_scopes(spelling, "GET"))
    assert needed == {
        model_first(rules, spelling, fold=False),
        model_first(rules, spelling, fold=True),
    }


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(patterns, min_size=1, max_size=5), paths, st.data())
def test_escaped_spellings_need_the_rule_of_the_path_they_stand_for(
    rules: list[str], path: str, data: st.DataObject
) -> None:
    suffix = data.draw(st.sampled_from(["%3Bjsessionid=1", "%3F", "%23x", ""]))
    letters = [i for i, c in enumerate(path) if c.lower() in LOOKALIKES]
    spelling = path
    if letters:
        at = data.draw(st.sampled_from(letters))
        spelling = path[:at] + LOOKALIKES[path[at].lower()] + path[at + 1 :]
    spelling = normalise_path(spelling + suffix)
    needed = route_with(rules).required_scopes(spelling, "GET")
    assert model_first(rules, path, fold=True) in needed


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(paths, min_size=1, max_size=4, unique_by=str.lower), paths, st.data())
def test_a_spelling_is_routed_where_every_spelling_goes_or_nowhere(
    prefixes: list[str], path: str, data: st.DataObject
) -> None:
    router = Router.from_config(
        [RouteConfig(p, p, "http://127.0.0.1:1") for p in prefixes]
    )
    spelling = data.draw(recased(path))

    def longest(fold: bool) -> str | None:
        def key(text: str) -> str:
            return text.lower() if fold else text

        under = [p for p in prefixes if model_matches(key(p) + "/*", key(spelling))]
        return max(under, key=len) if under else None

    routes = {longest(fold=False), longest(fold=True)} - {None}
    route = router.match(None, spelling)
    assert (route and route.config.name) == (routes.pop() if len(routes) == 1 else None)


def test_method_maps_see_every_spelling() -> None:
    rules: Mapping[str, str] = MappingProxyType({"GET": "admin", "*": "admin:w"})
    route = CompiledRoute(
        RouteConfig(
            "r", "/", "http://127.0.0.1:1", paths=(("/admin/*", rules),), scope="any"
        )
    )
    for path in ("/admin", "/admin/", "/admin/x"):
        assert route.required_scopes(path, "GET") == ("admin",)
        assert route.required_scopes(path, "PUT") == ("admin:w",)
    for path in ("/ADMIN/", "/Admin/x", "/admin%3Bx/y"):
        assert set(route.required_scopes(normalise_path(path), "GET")) == {
            "admin",
            "any",
        }
