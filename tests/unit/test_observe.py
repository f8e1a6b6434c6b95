"""Observe, then suggest: path patterns, suggestions and narrowing (pure)."""

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patgate.config import parse_config
from patgate.errors import ConflictError
from patgate.explain import explain_request, grant_of_scopes
from patgate.gate import Rules
from patgate.models import Observed, Usage
from patgate.observe import narrow, observed_pattern, path_pattern, suggest
from patgate.usage import MAX_PENDING_OBSERVED, UsageRecorder
from tests.factories import NOW

SPEC = Path(__file__).resolve().parents[1] / "data" / "spec_gateway.yaml"
RULES = Rules.from_config(parse_config(SPEC.read_text(), {}, "/srv"))
TOKEN = "pgt_AbCd12340123456789abcdefghijABCDEFGHIJkl08YpVI"


def seen(route, method, pattern, count=1):
    return Observed(route, method, pattern, count, NOW)


@pytest.mark.parametrize(
    ("path", "pattern"),
    [
        ("/api/users/42/repos", "/api/users/*/repos"),
        ("/api/items/3f2504e0-4f89-11d3-9a0c-0305e82c3301", "/api/items/*"),
        ("/git/commits/9fceb02d0ae598e95dc970b74767f19372d61af8", "/git/commits/*"),
        ("/files/AbCdEf0123456789XyZ/raw", "/files/*/raw"),
        (f"/leak/{TOKEN}", "/leak/*"),
        ("/dav/projects/alpha/report.txt", "/dav/projects/alpha/report.txt"),
        ("/dav/projects/", "/dav/projects"),
        ("/", "/"),
        (
            "/1.0/environment/control/rest/stopenv",
            "/1.0/environment/control/rest/stopenv",
        ),
    ],
)
def test_path_patterns_hide_ids_and_keep_names(path, pattern):
    assert path_pattern(path) == pattern


segment = st.text(
    st.sampled_from("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789-_.~"), max_size=60
)


@given(st.lists(segment, max_size=8))
def test_a_pattern_keeps_no_long_or_token_like_segment(parts):
    pattern = path_pattern("/" + "/".join(parts))
    assert pattern.startswith("/")
    assert path_pattern(pattern) == pattern  # a pattern is its own pattern
    for part in pattern.split("/"):
        assert len(part) <= 40
        assert not part.isdigit()
    assert TOKEN not in path_pattern(f"/x/{TOKEN}/y")


def test_the_suggestion_is_the_exact_scopes_the_rules_name():
    observed = [
        seen("paas", "GET", "/1.0/environment/control/rest/getenvinfo", 5),
        seen("paas", "POST", "/1.0/environment/control/rest/stopenv", 2),
        seen("files", "GET", "/dav/projects/alpha/a.txt", 3),
        seen("public", "GET", "/public/logo.png"),
        seen("gone", "GET", "/old/thing"),
    ]
    found = suggest(observed, RULES.router)
    assert [c.scope for c in found.scopes] == ["env:control", "env:read", "files:read"]
    covers = {c.scope: c.requests for c in found.scopes}
    assert [r.pattern for r in covers["env:control"]] == [
        "/1.0/environment/control/rest/stopenv"
    ]
    assert [r.route for r in found.unscoped] == ["public"]
    assert [r.route for r in found.unknown] == ["gone"]
    # files: every path under /dav/projects/alpha; the other routes get theirs.
    assert found.nodes[0].scope == "node:/1.0/environment/control/rest:rw"
    assert "node:/dav/projects/alpha:r" in found.granted
    assert "node:/public:r" in found.granted


def test_no_node_scopes_when_no_route_narrows_below_its_prefix():
    observed = [
        seen("files", "GET", "/dav/a.txt"),
        seen("files", "PUT", "/dav/b/c.txt"),
    ]
    found = suggest(observed, RULES.router)
    assert found.granted == ("files:read", "files:write")
    assert found.nodes == ()


def test_writes_make_a_node_scope_rw():
    observed = [
        seen("files", "PROPFIND", "/dav/projects/alpha"),
        seen("files", "PUT", "/dav/projects/alpha/x/y.txt"),
    ]
    found = suggest(observed, RULES.router)
    assert found.granted == ("files:read", "files:write", "node:/dav/projects:rw")


routes = st.sampled_from(["files", "paas", "public"])
methods = st.sampled_from(["GET", "HEAD", "PUT", "DELETE", "PROPFIND", "POST"])
tails = st.lists(st.sampled_from(["a", "b", "42", "control", "rest", "stopenv"]))
prefixes = {"files": "/dav/", "paas": "/1.0/environment/", "public": "/public/"}


@given(st.lists(st.tuples(routes, methods, tails), min_size=1, max_size=8))
def test_the_narrowed_token_passes_every_observed_request(requests):
    observed = [
        seen(route, method, path_pattern(prefixes[route] + "/".join(tail)))
        for route, method, tail in requests
    ]
    found = suggest(observed, RULES.router)
    try:
        scopes = narrow(("*",), found, RULES.scope_sets)
    except ConflictError:
        # Only public requests: nothing to narrow to.
        assert not found.scopes
        return
    grant = grant_of_scopes(scopes, NOW)
    for item in observed:
        said = explain_request(RULES, item.method, item.pattern, grant=grant, now=NOW)
        assert said.forwards, (item, scopes, said.why)


def test_narrowing_never_widens():
    found = suggest(
        [
            seen("paas", "GET", "/1.0/environment/info"),
            seen("files", "PUT", "/dav/projects/alpha/x"),
        ],
        RULES.router,
    )
    # The token never held files:write: it is not given.
    narrowed = narrow(("env:*", "files:read"), found, RULES.scope_sets)
    assert "files:write" not in narrowed
    assert "env:read" in narrowed
    # A token confined to a node keeps to it: the meet of the two.
    held = ("@files-rw", "node:/dav/projects:rw")
    only_files = suggest([seen("files", "PUT", "/dav/projects/alpha/x")], RULES.router)
    assert narrow(held, only_files, RULES.scope_sets) == (
        "files:write",
        "node:/dav/projects/alpha:rw",
    )
    with pytest.raises(ConflictError, match="nothing the token holds"):
        narrow(
            ("files:read",),
            suggest([seen("paas", "GET", "/1.0/environment/x")], RULES.router),
            RULES.scope_sets,
        )
    with pytest.raises(ConflictError, match="nothing observed"):
        narrow(("*",), suggest([], RULES.router), RULES.scope_sets)


def test_the_recorder_keeps_observations_bounded_and_restores_them():
    usage = UsageRecorder()
    for i in range(MAX_PENDING_OBSERVED + 10):
        usage.note("Observe1", NOW + i, None, None)
        usage.note_observed("Observe1", NOW + i, "files", "GET", f"/dav/{i}")
    usage.note("Observe1", NOW + 99, None, None)
    usage.note_observed("Observe1", NOW + 99, "files", "GET", "/dav/0")
    batch = usage.drain()
    observed = {s.pattern: s for s in batch[0].observed}
    assert len(observed) == MAX_PENDING_OBSERVED
    assert observed["/dav/0"].count == 2
    assert observed["/dav/0"].last_seen == NOW + 99
    usage.restore(batch)
    usage.restore(
        [Usage("Observe1", NOW, None, 0, observed=(seen("files", "GET", "/dav/0"),))]
    )
    again = usage.drain()[0]
    assert {s.pattern: s.count for s in again.observed}["/dav/0"] == 3
    assert again.count == batch[0].count


def test_a_rule_naming_one_id_keeps_that_id_in_the_pattern():
    config = parse_config(
        "store: sqlite:///x.db\n"
        "routes:\n"
        "  - name: api\n"
        "    prefix: /api/\n"
        "    upstream: http://127.0.0.1:9\n"
        "    paths:\n"
        "      /api/items/42/secret*: items:secret\n"
        "      /api/*: api:read\n",
        {},
        "/srv",
    )
    route = Rules.from_config(config).router.routes[0]
    assert observed_pattern(route, "/api/items/42/secret", "GET") == (
        "/api/items/42/secret"
    )
    assert observed_pattern(route, "/api/items/43/secret", "GET") == (
        "/api/items/*/secret"
    )
    # Even kept, a segment as long as a token value never is.
    assert observed_pattern(route, f"/api/items/42/secret/{TOKEN}", "GET") == (
        "/api/items/42/secret/*"
    )
