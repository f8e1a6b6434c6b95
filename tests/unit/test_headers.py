"""The header helpers of the proxy that need no socket: folding, Host, scopes."""

from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patgate.client import valid_host
from patgate.policy import describe_scopes
from patgate.scopes import EffectiveScopes, NodeScope
from patgate.web.gateway.headers import encode_scopes, header_key

plain_scope = st.from_regex(
    r"[A-Za-z0-9_.-]{1,8}(:[A-Za-z0-9_.-]{1,8}){0,2}(:\*)?", fullmatch=True
) | st.just("*")
# What the node-scope grammar lets a path hold: anything but whitespace and ":".
node_path = (
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
    .filter(lambda text: ":" not in text and not any(c.isspace() for c in text))
    .map(lambda text: "/" + text)
)
node = st.builds(NodeScope, node_path, st.booleans(), st.booleans())


@given(st.lists(plain_scope, max_size=4), st.lists(node, max_size=4))
def test_every_scope_is_one_element_of_the_header(plain, nodes):
    scopes = EffectiveScopes(tuple(plain), tuple(nodes))
    expected = [
        *plain,
        *(
            f"node:{n.path}:{'r' if n.read else ''}{'w' if n.write else ''}"
            for n in nodes
            if n.read or n.write
        ),
    ]
    header = encode_scopes(describe_scopes(scopes))
    assert header.isascii()
    assert " " not in header
    parts = header.split(",") if header else []
    assert [unquote(part) for part in parts] == expected


def test_ordinary_scopes_are_not_encoded():
    scopes = ("files:read", "files:*", "*", "node:/dav/a-b_c.d~e:rw")
    assert encode_scopes(scopes) == ("files:read,files:*,*,node:/dav/a-b_c.d~e:rw")


@pytest.mark.parametrize(
    ("name", "folded"),
    [
        ("X-Patgate-User", "x-patgate-user"),
        ("X_Patgate_User", "x-patgate-user"),
        ("X.Patgate.User", "x-patgate-user"),
        ("x.PATGATE_user", "x-patgate-user"),
    ],
)
def test_header_names_fold_case_dash_underscore_and_dot(name, folded):
    assert header_key(name) == folded


@pytest.mark.parametrize(
    "host",
    [
        "a",
        "a.b.",
        "a-b.c_d",
        "a:",
        "a:0",
        "a:65535",
        "1.2.3.4:80",
        "[::1]",
        "[::ffff:1.2.3.4]:1",
    ],
)
def test_valid_hosts(host):
    assert valid_host(host)


@pytest.mark.parametrize(
    "host",
    [
        "",
        ".",
        "a..",
        ".a",
        "a..b",
        "a:65536",
        "a:1:2",
        "a b",
        "a,b",
        "a@b",
        "[::1",
        "[1.2.3.4]",
        "[::1]]",
    ],
)
def test_invalid_hosts(host):
    assert not valid_host(host)
