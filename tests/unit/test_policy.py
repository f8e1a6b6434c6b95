"""Routing, required scopes and the decision, branch by branch."""

import dataclasses
from types import MappingProxyType

import pytest

from patgate.config import RouteConfig, parse_config
from patgate.models import ExpiryModel, TokenGrant, TokenRecord, TokenStatus, User
from patgate.paths import PathError, normalise_path
from patgate.policy import Attempt, Decision, decide
from patgate.routing import CompiledRoute, Router
from patgate.tokens import hash_token

NOW = 1_800_000_000.0
VALUE = "pgt_AbCd12340123456789abcdefghijABCDEFGHIJkl08YpVI"
OLD_VALUE = "pgt_00000000000000000000000000000000000000000UBqSV"
HASH = hash_token(VALUE, b"pepper")
OLD_HASH = hash_token(OLD_VALUE, b"pepper")

SPEC_ROUTES = """
scope_sets:
  files-rw: [files:read, files:write]
routes:
  - name: files
    prefix: /dav/
    upstream: http://127.0.0.1:8081
    credentials: [basic, bearer]
    methods: {GET: files:read, HEAD: files:read, OPTIONS: files:read,
              PROPFIND: files:read, "*": files:write}
  - name: paas
    prefix: /1.0/
    upstream: http://127.0.0.1:8082
    credentials: [query, bearer]
    error_style: result
    paths:
      /1.0/environment/control/rest/stopenv: env:control
      /1.0/environment/*: env:read
  - name: public
    prefix: /public/
    upstream: http://127.0.0.1:8083
    auth: none
"""


def spec_router() -> Router:
    return Router.from_config(parse_config(SPEC_ROUTES, {}, "/srv").routes)


def route_named(name: str) -> CompiledRoute:
    route = next(r for r in spec_router().routes if r.config.name == name)
    return route


def route(**kwargs) -> CompiledRoute:
    fields = {"name": "r", "prefix": "/", "upstream": "http://127.0.0.1:1"}
    fields.update(kwargs)
    for key in ("methods",):
        if key in fields:
            fields[key] = MappingProxyType(fields[key])
    return CompiledRoute(RouteConfig(**fields))


def grant(
    token_scopes=("*",), owner_scopes=("*",), owner=None, **token_fields
) -> TokenGrant:
    record = TokenRecord(
        id="AbCd1234",
        owner="alice",
        token_hash=HASH,
        scopes=tuple(token_scopes),
        created_at=NOW - 3600,
        **token_fields,
    )
    user = owner or User(login="alice", scopes=tuple(owner_scopes))
    return TokenGrant(record, user)


def check(
    compiled,
    path="/dav/a.txt",
    method="GET",
    the_grant=None,
    presented=HASH,
    now=NOW,
    client_ip="192.0.2.10",
    login=None,
) -> Decision:
    attempt = Attempt(method, path, client_ip, login, presented)
    return decide(compiled, attempt, the_grant, now)


# --------------------------------------------------------------------------
# Router


def test_longest_prefix_wins():
    router = Router.from_config(
        [
            RouteConfig("root", "/", "http://a"),
            RouteConfig("dav", "/dav/", "http://b"),
            RouteConfig("deep", "/dav/projects/", "http://c"),
        ]
    )
    assert router.match(None, "/dav/projects/x").config.name == "deep"
    assert router.match(None, "/dav/projectsx").config.name == "dav"
    assert router.match(None, "/dav/x").config.name == "dav"
    assert router.match(None, "/other").config.name == "root"


@pytest.mark.parametrize(
    ("path", "matched"),
    [
        ("/dav/x", True),
        ("/dav/", True),
        ("/dav", True),
        ("/dav/a/b/c", True),
        ("/davx", False),
        ("/davx/y", False),
        ("/da", False),
        ("/", False),
        ("/DAV/x", True),
        ("/Dav", True),
        ("/DAVX/y", False),
    ],
)
def test_prefix_matching_is_segment_aware(path, matched):
    router = Router.from_config([RouteConfig("dav", "/dav/", "http://b")])
    assert (router.match(None, path) is not None) is matched


def test_case_sensitive_route_matches_its_prefix_as_written():
    router = Router.from_config(
        [RouteConfig("dav", "/dav/", "http://b", case_sensitive=True)]
    )
    assert router.match(None, "/dav/x") is not None
    assert router.match(None, "/dav/") is not None
    assert router.match(None, "/DAV/x") is None


def test_spellings_routed_to_two_routes_match_none():
    router = Router.from_config(
        [
            RouteConfig("root", "/", "http://a"),
            RouteConfig("api", "/api/", "http://b"),
            RouteConfig("pub", "/public/", "http://c", auth="none"),
        ]
    )
    assert router.match(None, "/api/x").config.name == "api"
    assert router.match(None, "/Other/X").config.name == "root"
    assert router.match(None, "/caf%C3%A9").config.name == "root"
    # As sent, the catch-all; in another case or decoded, another route.
    assert router.match(None, "/API/x") is None
    assert router.match(None, "/PUBLIC/x") is None
    assert router.match(None, "/public%3Bx/y") is None
    assert router.match(None, "/ap%C4%B1/x") is None  # dotless i
    without_root = Router(r for r in router.routes if r.config.name != "root")
    assert without_root.match(None, "/API/x").config.name == "api"
    assert without_root.match(None, "/api%3Bx/y").config.name == "api"


def test_prefix_without_trailing_slash_matches_the_same_paths():
    router = Router.from_config([RouteConfig("dav", "/dav", "http://b")])
    assert router.match(None, "/dav/x") is not None
    assert router.match(None, "/dav") is not None
    assert router.match(None, "/davx") is None


def test_no_route():
    assert spec_router().match(None, "/admin") is None


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("files.example.com", "dav-host"),
        ("FILES.Example.COM", "dav-host"),
        ("files.example.com:8443", "dav-host"),
        ("files.example.com.", "dav-host"),
        ("other.example.com", "dav"),
        (None, "dav"),
        ("", "dav"),
        ("[::1]:8080", "dav"),
    ],
)
def test_host_route_beats_hostless_route_of_same_prefix(host, expected):
    router = Router.from_config(
        [
            RouteConfig("dav", "/dav/", "http://a"),
            RouteConfig("dav-host", "/dav/", "http://b", host="files.example.com"),
        ]
    )
    assert router.match(host, "/dav/x").config.name == expected


def test_host_only_route_does_not_answer_other_hosts():
    router = Router.from_config(
        [RouteConfig("dav", "/dav/", "http://b", host="files.example.com")]
    )
    assert router.match("evil.example.com", "/dav/x") is None
    assert router.match(None, "/dav/x") is None


def test_longer_prefix_beats_host_binding():
    router = Router.from_config(
        [
            RouteConfig("host-root", "/", "http://a", host="files.example.com"),
            RouteConfig("api", "/api/", "http://b"),
        ]
    )
    assert router.match("files.example.com", "/api/x").config.name == "api"
    assert router.match("files.example.com", "/x").config.name == "host-root"


@pytest.mark.parametrize(
    ("raw", "route_name"),
    [
        ("/public/%2e%2e/1.0/environment/x", "paas"),
        ("/public/../dav/secret", "files"),
        ("/public//x", "public"),
        ("/dav/%2e%2e/public/x", "public"),
        ("/public/a/%2E%2E/b", "public"),
    ],
)
def test_routing_runs_on_the_canonical_path(raw, route_name):
    assert spec_router().match(None, normalise_path(raw)).config.name == route_name


@pytest.mark.parametrize(
    "raw", ["/public/%252e%252e/admin", "/public/..%2fadmin", "/public/..\\admin"]
)
def test_encoded_escapes_from_public_are_refused(raw):
    with pytest.raises(PathError):
        normalise_path(raw)


@pytest.mark.parametrize(
    ("prefix", "strip", "path", "upstream"),
    [
        ("/dav/", False, "/dav/a/b", "/dav/a/b"),
        ("/dav/", True, "/dav/a/b", "/a/b"),
        ("/dav/", True, "/dav/", "/"),
        ("/dav/", True, "/dav", "/"),
        ("/dav", True, "/dav/a%23b/", "/a%23b/"),
        ("/", True, "/a", "/a"),
        ("/", True, "/", "/"),
        # Matched under another spelling: as many segments go as the prefix has.
        ("/dav/", True, "/DAV/a/b", "/a/b"),
        ("/dav/", True, "/Dav", "/"),
        ("/a/b/", True, "/A/B/c", "/c"),
        ("/kpi/", True, "/%E2%84%AApi/x", "/x"),
    ],
)
def test_upstream_path(prefix, strip, path, upstream):
    assert route(prefix=prefix, strip_prefix=strip).upstream_path(path) == upstream


# --------------------------------------------------------------------------
# Required scope (SPEC §6)


@pytest.mark.parametrize(
    ("method", "scope"),
    [
        ("GET", "files:read"),
        ("HEAD", "files:read"),
        ("OPTIONS", "files:read"),
        ("PROPFIND", "files:read"),
        ("PUT", "files:write"),
        ("DELETE", "files:write"),
        ("MKCOL", "files:write"),
        ("MOVE", "files:write"),
        ("PROPPATCH", "files:write"),
        ("LOCK", "files:write"),
        ("get", "files:read"),
        ("pUT", "files:write"),
    ],
)
def test_files_route_scope_by_method(method, scope):
    assert route_named("files").required_scopes("/dav/x", method) == (scope,)


@pytest.mark.parametrize(
    ("path", "scope"),
    [
        ("/1.0/environment/control/rest/stopenv", "env:control"),
        ("/1.0/environment/control/rest/getenvinfo", "env:read"),
        ("/1.0/environment/x", "env:read"),
        ("/1.0/environment/", "env:read"),
        # A trailing slash is the same endpoint (it used to fall to env:read).
        ("/1.0/environment/control/rest/stopenv/", "env:control"),
        # "/1.0/environment/*" covers the bare parent too (it used to be None).
        ("/1.0/environment", "env:read"),
        ("/1.0/users/account/rest/getuserinfo", None),
    ],
)
def test_paas_route_scope_by_path_first_match_wins(path, scope):
    expected = (scope,) if scope else ()
    assert route_named("paas").required_scopes(path, "POST") == expected


def test_path_rule_with_method_map_and_fallthrough():
    compiled = route(
        prefix="/api/",
        paths=(
            (
                "/api/admin/*",
                MappingProxyType({"GET": "admin:read", "*": "admin:write"}),
            ),
            ("/api/items/*", MappingProxyType({"DELETE": "items:delete"})),
            ("/api/items/special", "special"),
        ),
        methods={"GET": "api:read"},
        scope="api:any",
    )
    assert compiled.required_scopes("/api/admin/x", "GET") == ("admin:read",)
    assert compiled.required_scopes("/api/admin/x", "POST") == ("admin:write",)
    assert compiled.required_scopes("/api/items/1", "DELETE") == ("items:delete",)
    # The items map does not name GET: the search goes on to methods.
    assert compiled.required_scopes("/api/items/1", "GET") == ("api:read",)
    assert compiled.required_scopes("/api/items/special", "PUT") == ("special",)
    assert compiled.required_scopes("/api/other", "PUT") == ("api:any",)


def test_glob_star_crosses_segments_and_nothing_else_is_special():
    compiled = route(
        paths=(("/a/*/c", "x"), ("/b.?[z]", "y"), ("/lit", "z")),
    )
    assert compiled.required_scopes("/a/b/b/c", "GET") == ("x",)
    assert compiled.required_scopes("/a//c", "GET") == ("x",)
    assert compiled.required_scopes("/a/b/cd", "GET") == ()
    assert compiled.required_scopes("/b.?[z]", "GET") == ("y",)
    assert compiled.required_scopes("/bx?z", "GET") == ()
    # A trailing slash is the same path (it used to match no rule).
    assert compiled.required_scopes("/lit/", "GET") == ("z",)


@pytest.mark.parametrize(
    ("path", "scopes"),
    [
        ("/api/admin", {"admin"}),
        ("/api/admin/", {"admin"}),
        ("/api/admin/x/", {"admin"}),
        ("/api/administrator", {"api"}),
        # Other spellings: what each meets (as sent, folded, decoded) counts.
        ("/api/ADMIN/users", {"admin", "api"}),
        ("/API/Admin", {"admin", "api"}),
        ("/api/admin%3Bx=1/users", {"admin", "api"}),
        ("/api/adm%C4%B1n", {"admin", "api"}),
        ("/api/LIT", {"lit"}),
        ("/api/Lit/", {"lit", "api"}),
        ("/api/lit", {"lit", "api"}),
        ("/api/lit/x", {"api"}),
    ],
)
def test_rules_match_every_spelling_segment_wise(path, scopes):
    compiled = route(
        prefix="/api/",
        paths=(("/api/admin/*", "admin"), ("/api/LIT/", "lit")),
        scope="api",
    )
    assert set(compiled.required_scopes(normalise_path(path), "GET")) == scopes


def test_a_request_needs_the_rule_of_each_spelling_of_its_path():
    compiled = route_named("paas")
    stop = "/1.0/environment/control/rest/stopenv"
    assert compiled.required_scopes(stop, "POST") == ("env:control",)
    assert compiled.required_scopes(stop + "/", "POST") == ("env:control",)
    for spelling in (stop.replace("stopenv", "StopEnv"), stop + "%3Bjsessionid=1"):
        assert set(compiled.required_scopes(spelling, "POST")) == {
            "env:read",
            "env:control",
        }


def test_case_sensitive_route_matches_rules_as_written():
    compiled = route(
        prefix="/api/", paths=(("/api/admin/*", "admin"),), scope="api",
        case_sensitive=True,
    )  # fmt: skip
    assert compiled.required_scopes("/api/admin/", "GET") == ("admin",)
    assert compiled.required_scopes("/api/admin%3Bx", "GET") == ("api", "admin")
    assert compiled.required_scopes("/api/Admin/x", "GET") == ("api",)


@pytest.mark.parametrize(
    ("methods", "paths", "scope", "head"),
    [
        ({"GET": "export"}, (), "read", ("read", "export")),
        ({"GET": "export", "*": "write"}, (), None, ("write", "export")),
        ({"GET": "export", "HEAD": "read"}, (), None, ("read", "export")),
        ({"GET": "read", "HEAD": "read"}, (), None, ("read",)),
        ({"*": "x"}, (), None, ("x",)),
        ({}, (("/p", MappingProxyType({"GET": "private"})),), "read",
         ("read", "private")),
        ({"GET": "g"}, (("/p", MappingProxyType({"HEAD": "h"})),), None,
         ("h", "g")),
        ({}, (), None, ()),
    ],
)  # fmt: skip
def test_head_needs_its_own_rule_and_what_get_needs(methods, paths, scope, head):
    compiled = route(methods=methods, paths=paths, scope=scope)
    assert compiled.required_scopes("/p", "HEAD") == head
    assert compiled.required_scopes("/p", "head") == head


def test_refusal_names_every_scope_needed():
    compiled = route(methods={"GET": "api:export"}, scope="api:read")
    decision = check(compiled, "/x", "HEAD", grant(token_scopes=("api:read",)))
    expect(decision, 403, "scope", "insufficient_scope")
    assert decision.scope == "api:read api:export"
    both = grant(token_scopes=("api:read", "api:export"))
    assert check(compiled, "/x", "HEAD", both).allowed


def test_route_scope_is_the_last_resort_and_none_means_any_token():
    assert route(scope="api:any").required_scopes("/x", "GET") == ("api:any",)
    assert route().required_scopes("/x", "GET") == ()
    assert route(methods={"GET": "r"}).required_scopes("/x", "PUT") == ()


# --------------------------------------------------------------------------
# decide: every branch


FILES = route_named("files")


def expect(
    decision: Decision, status: int, reason: str, error: str | None = None
) -> None:
    assert (decision.status, decision.reason) == (status, reason)
    assert decision.allowed is (status == 200)
    if error is not None:
        assert decision.error == error


def test_allowed_carries_identity_and_scopes():
    decision = check(FILES, the_grant=grant(owner_scopes=("files:*",)))
    expect(decision, 200, "ok")
    assert decision.error is None
    assert (decision.token_id, decision.user) == ("AbCd1234", "alice")
    assert decision.scope == "files:read"
    assert decision.scopes == ("files:*",)


UNAUTHORIZED_CASES = [
    ("unknown_token", {"the_grant": None}),
    ("hash_mismatch", {"presented": OLD_HASH}),
    ("revoked", {"the_grant": grant(status=TokenStatus.REVOKED)}),
    ("expired", {"the_grant": grant(expiry=ExpiryModel.HARD, expires_at=NOW)}),
    ("expired", {"the_grant": grant(expiry=ExpiryModel.HARD, expires_at=NOW - 1)}),
    (
        "owner_disabled",
        {"the_grant": grant(owner=User(login="alice", disabled=True))},
    ),
    ("owner_mismatch", {"the_grant": grant(owner=User(login="bob"))}),
    ("login_mismatch", {"login": "bob"}),
    ("login_mismatch", {"login": "Alice"}),
    ("login_mismatch", {"login": ""}),
]


@pytest.mark.parametrize(("reason", "kwargs"), UNAUTHORIZED_CASES)
def test_every_401_looks_the_same_outside(reason, kwargs):
    kwargs.setdefault("the_grant", grant())
    decision = check(FILES, **kwargs)
    expect(decision, 401, reason, "invalid_token")
    assert decision.scope is None
    assert decision.scopes == ()


def test_basic_login_matching_the_owner_passes():
    expect(check(FILES, the_grant=grant(), login="alice"), 200, "ok")


def test_revoked_wins_over_later_checks():
    decision = check(
        FILES,
        the_grant=grant(status=TokenStatus.REVOKED, allowed_cidrs=("10.0.0.0/8",)),
        login="bob",
    )
    expect(decision, 401, "revoked")


def test_grace_period_of_the_previous_hash():
    regenerated = grant(previous_hash=OLD_HASH, previous_hash_until=NOW + 60)
    expect(check(FILES, the_grant=regenerated, presented=OLD_HASH), 200, "ok")
    expect(check(FILES, the_grant=regenerated, presented=HASH), 200, "ok")
    after = check(FILES, the_grant=regenerated, presented=OLD_HASH, now=NOW + 60)
    expect(after, 401, "hash_mismatch")
    no_grace = grant(previous_hash=OLD_HASH, previous_hash_until=None)
    expect(check(FILES, the_grant=no_grace, presented=OLD_HASH), 401, "hash_mismatch")


def test_sliding_token_expires_when_not_used_and_at_its_lifetime_cap():
    sliding = grant(
        expiry=ExpiryModel.SLIDING,
        sliding_window=3600,
        expires_at=NOW + 10,
        max_lifetime=7200,
    )
    expect(check(FILES, the_grant=sliding), 200, "ok")
    expect(check(FILES, the_grant=sliding, now=NOW + 10), 401, "expired")
    # created an hour ago with a two-hour cap: dead at NOW + 3600 whatever
    # expires_at says.
    moved = grant(
        expiry=ExpiryModel.SLIDING,
        sliding_window=3600,
        expires_at=NOW + 99_999,
        max_lifetime=7200,
    )
    expect(check(FILES, the_grant=moved, now=NOW + 3599), 200, "ok")
    expect(check(FILES, the_grant=moved, now=NOW + 3600), 401, "expired")


@pytest.mark.parametrize(
    ("cidrs", "client_ip", "allowed"),
    [
        (("10.0.0.0/8",), "10.1.2.3", True),
        (("10.0.0.0/8",), "192.0.2.10", False),
        (("10.0.0.0/8", "192.0.2.0/24"), "192.0.2.10", True),
        (("10.0.0.0/8",), "::ffff:10.1.2.3", True),
        (("2001:db8::/32",), "2001:db8::1", True),
        (("2001:db8::/32",), "10.1.2.3", False),
        (("192.0.2.10",), "192.0.2.10", True),
        (("10.0.0.0/8",), None, False),
        (("10.0.0.0/8",), "", False),
        (("10.0.0.0/8",), "not-an-ip", False),
        (("garbage",), "10.1.2.3", False),
        ((), None, True),
    ],
)
def test_allowed_cidrs(cidrs, client_ip, allowed):
    decision = check(FILES, the_grant=grant(allowed_cidrs=cidrs), client_ip=client_ip)
    if allowed:
        expect(decision, 200, "ok")
    else:
        expect(decision, 403, "ip_not_allowed", "forbidden")


def test_insufficient_scope_names_the_scope():
    decision = check(FILES, method="PUT", the_grant=grant(owner_scopes=("files:read",)))
    expect(decision, 403, "scope", "insufficient_scope")
    assert decision.scope == "files:write"
    assert decision.scopes == ("files:read",)
    assert (decision.token_id, decision.user) == ("AbCd1234", "alice")


def test_owner_losing_a_scope_takes_it_from_the_token():
    before = grant(token_scopes=("files:write",), owner_scopes=("files:*",))
    expect(check(FILES, method="PUT", the_grant=before), 200, "ok")
    after = grant(token_scopes=("files:write",), owner_scopes=("files:read",))
    expect(check(FILES, method="PUT", the_grant=after), 403, "scope")
    star = grant(token_scopes=("*",), owner_scopes=("files:read",))
    expect(check(FILES, method="PUT", the_grant=star), 403, "scope")
    expect(check(FILES, method="GET", the_grant=star), 200, "ok")


@pytest.mark.parametrize(
    ("path", "method", "status"),
    [
        ("/1.0/environment/control/rest/stopenv", "POST", 403),
        ("/1.0/environment/control/rest/getenvinfo", "POST", 200),
        ("/1.0/users/account/rest/getuserinfo", "GET", 200),
    ],
)
def test_paas_decisions(path, method, status):
    reader = grant(token_scopes=("env:read",))
    assert check(route_named("paas"), path, method, reader).status == status


def test_public_route_needs_no_token():
    decision = check(route_named("public"), "/public/x", the_grant=None)
    expect(decision, 200, "public")
    assert decision.token_id is None


NODE_TOKEN = ("node:/dav/projects/alpha:rw",)


@pytest.mark.parametrize(
    ("raw", "method", "status"),
    [
        ("/dav/projects/alpha", "PROPFIND", 200),
        ("/dav/projects/alpha/", "PROPFIND", 200),
        ("/dav/projects/alpha/doc.txt", "PUT", 200),
        ("/dav/projects/alpha//doc.txt", "GET", 200),
        ("/dav/projects/alpha/sub/../doc.txt", "GET", 200),
        ("/dav/projects/alphabet/doc.txt", "GET", 403),
        ("/dav/projects/beta/doc.txt", "GET", 403),
        ("/dav/projects", "PROPFIND", 403),
        ("/dav/projects/alpha/../beta/doc.txt", "GET", 403),
        ("/dav/projects/alpha/%2e%2e/beta/doc.txt", "GET", 403),
        ("/dav/projects/alpha/%2E%2E/beta/doc.txt", "PUT", 403),
        ("/dav/projects/alpha/.%2e/beta", "DELETE", 403),
        ("//dav//projects//alpha//x", "GET", 200),
        ("/dav/projects/alpha/%2e%2e%2fbeta", "GET", 400),
        ("/dav/projects/alpha/..%2fbeta", "GET", 400),
        ("/dav/projects/alpha/%252e%252e/beta", "GET", 400),
        ("/dav/projects/alpha/..;/beta", "GET", 400),
    ],
)
def test_node_scope_confines_to_a_subtree_after_normalisation(raw, method, status):
    try:
        path = normalise_path(raw)
    except PathError:
        assert status == 400
        return
    assert status != 400
    decision = check(FILES, path, method, grant(token_scopes=NODE_TOKEN))
    assert decision.status == status
    if status == 403:
        mode = "r" if method in ("GET", "PROPFIND") else "w"
        assert decision.reason == "node"
        assert decision.scope == f"node:{path}:{mode}"
        assert decision.error == "insufficient_scope"


def test_read_only_node_refuses_writes():
    reader = grant(token_scopes=("node:/dav/projects/alpha:r",))
    expect(check(FILES, "/dav/projects/alpha/x", "GET", reader), 200, "ok")
    decision = check(FILES, "/dav/projects/alpha/x", "PUT", reader)
    expect(decision, 403, "node")
    assert decision.scope == "node:/dav/projects/alpha/x:w"


def test_node_token_still_needs_the_owners_plain_scopes():
    token = grant(token_scopes=NODE_TOKEN, owner_scopes=("files:read", *NODE_TOKEN))
    expect(check(FILES, "/dav/projects/alpha/x", "GET", token), 200, "ok")
    expect(check(FILES, "/dav/projects/alpha/x", "PUT", token), 403, "scope")


def test_node_and_plain_scopes_in_the_header():
    token = grant(token_scopes=("files:read", "node:/dav/a:r"))
    decision = check(FILES, "/dav/a/x", "GET", token)
    expect(decision, 200, "ok")
    assert decision.scopes == ("files:read", "node:/dav/a:r")


def test_decision_is_frozen_and_gate_can_build_refusals():
    decision = Decision(allowed=False, status=429, error="rate_limited", retry_after=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.status = 200  # type: ignore[misc]
    assert decision.scopes == ()
