import pytest

from patgate.errors import UsageError
from patgate.scopes import (
    covered_by,
    effective_scopes,
    expand_scopes,
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
        ("node:/dav:r", ["files:*"], False),
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


def test_parse_node_scope():
    node = parse_node_scope("node:/dav/projects/alpha/:rw")
    assert node is not None
    assert node.path == "/dav/projects/alpha"
    assert node.read
    assert node.write
    assert parse_node_scope("files:read") is None
