"""Config lint: each finding, and none on configs that mean what they say."""

from pathlib import Path

import pytest

from patgate.config import parse_config
from patgate.config.lint import _glob_covers, lint_config

ROOT = Path(__file__).resolve().parents[2]


def lint(routes: str, top: str = "") -> list[str]:
    config = parse_config(f"{top}\nroutes:\n{routes}", {}, "/srv")
    return [str(warning) for warning in lint_config(config)]


def route(name: str, prefix: str, *lines: str) -> str:
    more = "".join(f"    {line}\n" for line in lines)
    return f"  - name: {name}\n    prefix: {prefix}\n    upstream: http://u\n{more}"


@pytest.mark.parametrize(
    "path",
    ["gateway.yaml", "tests/data/spec_gateway.yaml", "deploy/compose/gateway.yaml"],
)
def test_the_shipped_examples_are_clean(path):
    config = parse_config((ROOT / path).read_text(), {"PATGATE_PEPPER": "x"}, "/srv")
    assert lint_config(config) == []


def test_a_route_without_any_scope_rule():
    assert lint(route("a", "/a/")) == [
        "routes[0] (a): no scope rule (methods, paths or scope): any valid token passes"
    ]
    assert lint(route("a", "/a/", "scope: a:use")) == []


def test_a_methods_map_without_a_star_names_the_methods_that_pass():
    (found,) = lint(route("dav", "/dav/", "methods: {GET: f:read, PUT: f:write}"))
    assert found.startswith('routes[0] (dav).methods: no "*" entry and no scope: ')
    assert "OPTIONS, POST, PATCH, DELETE, PROPFIND" in found
    for listed in ("GET,", "HEAD,", "PUT,"):
        assert listed not in found
    with_scope = route("dav", "/dav/", "methods: {GET: f:read}", "scope: f:write")
    assert lint(with_scope) == []
    # A paths rule for every path decides first: the map is never reached.
    caught = route("dav", "/dav/", "methods: {GET: f:read}", "paths: {/DAV/*: f:all}")
    assert lint(caught) == []


def test_a_shadowed_path_pattern():
    found = lint(route(
        "paas", "/1.0/", "paths:",
        "  /1.0/environment/*: env:read",
        "  /1.0/environment/control/rest/stopenv: env:control",
        "  /1.0/Environment/control/*: env:control",
        "  /1.0/other/*: {GET: o:read}",
        "  /1.0/other/x: o:write",
        "methods: {'*': paas:use}",
    ))  # fmt: skip
    assert found == [
        "routes[0] (paas).paths./1.0/environment/control/rest/stopenv: never"
        " decides: '/1.0/environment/*' above matches every path it does (first"
        " match wins; put the narrower pattern first)",
        "routes[0] (paas).paths./1.0/Environment/control/*: never decides:"
        " '/1.0/environment/*' above matches every path it does (first match"
        " wins; put the narrower pattern first)",
    ]


def test_narrower_first_is_clean():
    assert lint(route(
        "paas", "/1.0/", "scope: p:use", "paths:",
        "  /1.0/environment/control/rest/stopenv: env:control",
        "  /1.0/environment/*: env:read",
    )) == []  # fmt: skip


@pytest.mark.parametrize(
    ("wide", "narrow", "covers"),
    [
        ("/a/*", "/a/b", True),
        ("/a/*", "/a", True),
        ("/a/*", "/a/b/*", True),
        ("/a/b/*", "/a/*", False),
        ("/a/*/c", "/a/b/c", True),
        ("/a/*/c", "/a/*/d", False),
        ("/a/b", "/a/b/*", False),
        ("/*", "/x/*", True),
        ("/a*", "/ab*", True),
        ("/ab*", "/a*", False),
    ],
)
def test_glob_inclusion(wide, narrow, covers):
    assert _glob_covers(wide, narrow) is covers


def test_public_prefix_under_and_over_a_protected_one():
    under = lint(route("api", "/api/", "scope: a:b") + route(
        "docs", "/API/docs/", "auth: none"
    ))  # fmt: skip
    assert under == [
        "routes[1] (docs).auth: auth: none under routes[0] (api)'s prefix '/api/':"
        " this subtree of a protected route is public"
    ]
    over = lint(route("site", "/", "auth: none") + route("api", "/api/", "scope: a:b"))
    assert len(over) == 1
    assert over[0].startswith("routes[0] (site).auth: auth: none over routes[1] (api)")


def test_routes_on_other_hosts_do_not_overlap():
    routes = route("api", "/api/", "scope: a:b", "host: api.example") + route(
        "docs", "/api/docs/", "auth: none", "host: docs.example"
    )
    assert lint(routes) == []


def test_query_credentials_without_tls_in_front():
    paas = route("paas", "/1.0/", "scope: p:use", "credentials: [query, bearer]",
                 "query_params: [session]")  # fmt: skip
    (found,) = lint(paas, "listen: 0.0.0.0:8080")
    assert found.startswith(
        "routes[0] (paas).credentials: query credentials (session) on 0.0.0.0:8080"
    )
    assert lint(paas, "listen: 127.0.0.1:8080") == []
    assert lint(paas, "listen: 0.0.0.0:8080\ntrusted_proxies: [10.0.0.0/8]") == []
    bearer = route("api", "/api/", "scope: a:b", "credentials: [bearer]")
    assert lint(bearer, "listen: 0.0.0.0:8080") == []
