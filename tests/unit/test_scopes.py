import pytest

from patgate.errors import UsageError
from patgate.scopes import (
    NOWHERE,
    NodeScope,
    ScopeSets,
    accepting_scopes,
    canonical_scope,
    covered_by,
    effective_scopes,
    expand_scopes,
    name_scopes,
    parse_node_scope,
    uncovered,
)

SETS = {"files-rw": ["files:read", "files:write"]}


def test_sets_expand_and_default_is_all():
    assert expand_scopes(["@files-rw", "files:read"], SETS) == (
        "files:read",
        "files:write",
    )
    assert expand_scopes([], SETS) == ("*",)


@pytest.mark.parametrize("scope", ["@nope", "bad scope", "node:relative:rw", "a::b"])
def test_bad_scopes_are_refused(scope):
    with pytest.raises(UsageError):
        expand_scopes([scope], SETS)


@pytest.mark.parametrize(
    ("wanted", "held", "ok"),
    [
        ("files:read", ["*"], True),
        ("files:read", ["files:*"], True),
        ("files:*", ["files:*"], True),
        ("files:*", ["files:read"], False),
        ("*", ["files:*"], False),
        ("filesystem:read", ["files:*"], False),
        ("node:/dav/a/b:r", ["node:/dav/a:rw"], True),
        ("node:/dav/a:rw", ["node:/dav/a:r"], False),
        ("node:/dav/ab:r", ["node:/dav/a:rw"], False),
        # A node scope only narrows: an owner confined to no node grants any.
        ("node:/dav:r", ["files:*"], True),
        ("node:/dav/b:r", ["files:*", "node:/dav/a:rw"], False),
    ],
)
def test_subset_rule(wanted, held, ok):
    assert covered_by(wanted, held) is ok
    assert (uncovered([wanted], held) == []) is ok


def test_star_token_follows_the_owner_at_request_time():
    scopes = effective_scopes(["*"], ["files:read"])
    assert scopes.grants("files:read")
    assert not scopes.grants("files:write")


def test_token_loses_what_the_owner_lost():
    assert not effective_scopes(["files:write"], ["files:read"]).grants("files:write")


def test_node_only_token_holds_everything_inside_its_nodes():
    scopes = effective_scopes(["node:/dav/alpha:r"], ["*"])
    assert scopes.grants("files:write")
    assert scopes.allows_path("/dav/alpha/x.txt", "GET")
    assert not scopes.allows_path("/dav/alpha/x.txt", "PUT")
    assert not scopes.allows_path("/dav/alphabet", "GET")
    assert not scopes.allows_path("/dav", "GET")


def test_node_scope_owner_no_longer_holds_grants_nothing():
    scopes = effective_scopes(["node:/dav/alpha:rw"], ["node:/dav/beta:rw"])
    assert not scopes.allows_path("/dav/alpha/x", "GET")
    assert not scopes.allows_path("/dav/beta/x", "GET")


def test_token_node_scopes_confine_whatever_the_owner_holds():
    token = ["node:/dav/carol:rw", "files:read", "files:write"]
    for owner in (["*"], ["files:read", "files:write"], ["files:*"]):
        scopes = effective_scopes(token, owner)
        assert scopes.allows_path("/dav/carol/x", "PUT")
        assert not scopes.allows_path("/dav/bob/secret", "GET")
        assert not scopes.allows_path("/dav/bob/secret", "PUT")


def test_owner_node_scopes_confine_every_token_and_the_two_intersect():
    owner = ["files:*", "node:/dav/a:rw", "node:/dav/b:r"]
    explicit = effective_scopes(["files:read"], owner)
    assert explicit.nodes == effective_scopes(["*"], owner).nodes
    assert explicit.allows_path("/dav/a/x", "PUT")
    assert not explicit.allows_path("/dav/b/x", "PUT")
    assert not explicit.allows_path("/dav/c", "GET")
    both = effective_scopes(["node:/dav:rw", "node:/dav/a/deep:r"], owner)
    assert both.nodes == (
        NodeScope("/dav/a", True, True),
        NodeScope("/dav/b", True, False),
        NodeScope("/dav/a/deep", True, False),
    )
    assert not effective_scopes(["node:/dav/c:rw"], owner).allows_path("/dav/c", "GET")


def test_unconfined_means_none_and_confined_to_nothing_means_empty():
    assert effective_scopes(["files:read"], ["*"]).nodes is None
    assert effective_scopes(["node:/a:r"], ["node:/b:r"]).nodes == ()
    assert effective_scopes(["node:/a:r"], ["node:/a:w"]).nodes == ()


def test_a_node_scope_stored_before_paths_were_canonical_still_confines():
    # As written: a literal subtree, never more. Unreadable ones: nowhere.
    legacy = parse_node_scope("node:/dav/x,*,admin:rw")
    assert legacy == NodeScope("/dav/x,*,admin", True, True)
    scopes = effective_scopes(["files:read", "node:/dav/x,*,admin:rw"], ["*"])
    assert scopes.allows_path("/dav/x,*,admin/f", "GET")
    assert not scopes.allows_path("/dav/x", "GET")
    for stored in ("node:/dav/a b:r", "node:dav:rw", "node:/dav:x", "node:/a:b:r"):
        assert parse_node_scope(stored) == NOWHERE
        assert effective_scopes(["files:read", stored], ["*"]).nodes == ()


@pytest.mark.parametrize(
    ("scope", "canonical"),
    [
        ("*", "*"),
        ("files:read", "files:read"),
        ("node:/dav/a/:rw", "node:/dav/a:rw"),
        ("node:/dav//a//b:r", "node:/dav/a/b:r"),
        ("node:/dav/%7e%41:w", "node:/dav/~A:w"),
        ("node:/dav/caf%c3%a9:r", "node:/dav/caf%C3%A9:r"),
        ("node:/:rw", "node:/:rw"),
        ("node://:rw", "node:/:rw"),
        ("node:/a(1)+b@c!$&'~:r", "node:/a(1)+b@c!$&'~:r"),
    ],
)
def test_canonical_scope(scope, canonical):
    assert canonical_scope(scope) == canonical
    assert canonical_scope(canonical) == canonical


@pytest.mark.parametrize(
    "scope",
    [
        "node:/dav/x,*,admin:rw",
        "node:/dav/a b:r",
        "node:/dav/a;b:r",
        "node:/dav/a=b:r",
        "node:/dav/a:b:r",
        "node:/dav/*:r",
        'node:/dav/"a":r',
        "node:/dav/a\nb:r",
        "node:/dav/./a:r",
        "node:/dav/%2e%2E/a:r",
        "node:/dav/a%2fb:r",
        "node:/dav/a%00:r",
        "node:/dav/%:r",
        "node:dav:r",
        "node:/dav:x",
        "node:/dav/\u00e9:r",
    ],
)
def test_node_paths_with_separators_cannot_be_granted(scope):
    with pytest.raises(UsageError, match="invalid node"):
        canonical_scope(scope)
    with pytest.raises(UsageError):
        expand_scopes([scope], SETS)


def test_parse_node_scope():
    node = parse_node_scope("node:/dav/projects/alpha/:rw")
    assert node is not None
    assert node.path == "/dav/projects/alpha"
    assert node.read
    assert node.write
    assert parse_node_scope("files:read") is None


# What would have worked (the 403 hint)


def test_accepting_scopes_lists_the_scope_its_wildcards_and_sets():
    sets = ScopeSets(
        {"env-all": ("env:*",), "ro": ("env:read",), "ctl": ("env:control",)}
    )
    assert accepting_scopes(("env:control",), sets) == (
        "env:control",
        "env:*",
        "@ctl",
        "@env-all",
    )


def test_accepting_scopes_for_several_needs_only_what_covers_them_all():
    sets = ScopeSets({"rw": ("a:b:read", "a:b:write"), "r": ("a:b:read",)})
    assert accepting_scopes(("a:b:read", "a:b:write"), sets) == (
        "a:b:read a:b:write",
        "a:b:*",
        "a:*",
        "@rw",
    )
    assert accepting_scopes(("a:read", "b:read")) == ("a:read b:read",)


def test_accepting_scopes_of_nothing_or_of_a_node():
    assert accepting_scopes(()) == ()
    sets = ScopeSets({"all": ("files:read",)})
    assert accepting_scopes(("node:/dav/a:w",), sets) == ("node:/dav/a:w",)
    assert accepting_scopes(("node:/dav/a,b:w",), sets) == ()


# Live scope sets


def test_a_token_keeps_a_set_by_name():
    assert name_scopes(["@files-rw", " files:read", "@files-rw"], SETS) == (
        "@files-rw",
        "files:read",
    )
    with pytest.raises(UsageError, match="unknown scope set '@nope'"):
        name_scopes(["@nope"], SETS)


def test_a_set_is_read_as_the_config_defines_it_now():
    token = ("@env-all",)
    before = ScopeSets({"env-all": ("env:read",)})
    after = ScopeSets({"env-all": ("env:read", "env:control")})
    assert effective_scopes(token, ("*",), before).plain == ("env:read",)
    assert effective_scopes(token, ("*",), after).plain == ("env:read", "env:control")
    # The subset rule against the expanded set: only what the owner holds.
    assert effective_scopes(token, ("env:read",), after).plain == ("env:read",)


def test_a_removed_set_grants_nothing_even_beside_a_node_scope():
    gone = ScopeSets({})
    assert effective_scopes(("@env-all",), ("*",), gone).plain == ()
    confined = effective_scopes(("@env-all", "node:/dav/a:r"), ("files:read",), gone)
    assert confined.plain == ()
    only_node = effective_scopes(("node:/dav/a:r",), ("files:read",), gone)
    assert only_node.plain == ("files:read",)


def test_a_set_may_hold_node_scopes():
    sets = ScopeSets({"mine": ("node:/dav/a:rw",)})
    scopes = effective_scopes(("@mine",), ("files:read",), sets)
    assert scopes.plain == ("files:read",)
    assert scopes.allows_path("/dav/a/x", "PUT")
    assert not scopes.allows_path("/dav/b", "GET")
