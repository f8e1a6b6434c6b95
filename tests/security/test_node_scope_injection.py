"""Node-scope injection: a node path must not carry list separators.

Issue 11, finding 10 (the grant side): ``node:/dav/alice/x,*,admin:rw`` was
accepted and forwarded as it is in ``X-Patgate-Scopes``, where an upstream
splitting the list at commas read ``*`` and ``admin:rw`` as scopes of the
token. (The encoding of the header itself is ``web.gateway.headers``'s business.)

Stopped in ``scopes.canonical_scope``, which every door to a grant goes
through (``token create/edit``, ``user add/scopes`` on the CLI and the API,
``scope_sets`` in the config): a node path is a canonical path of letters,
digits, ``-._~!$&'()+@`` and percent-escapes, and is stored canonicalised.
A node scope stored before the rule and not canonical confines its token to
nothing (``scopes.parse_node_scope``), so it can never widen one or reach an
upstream.
"""

from __future__ import annotations

import base64
import re
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote

import aiohttp
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from patgate.config import parse_config
from patgate.errors import ConfigError, UsageError
from patgate.paths import normalise_path
from patgate.policy import describe_scopes
from patgate.scopes import canonical_scope, effective_scopes
from patgate.web.gateway.headers import encode_scopes
from tests.gateway_harness import ADMIN, Gateway, RecordingUpstream, StartGateway
from tests.integration.test_cli import Cli

ROUTES = """\
  - name: files
    prefix: /dav/
    upstream: {upstream}
    methods: {{GET: files:read, '*': files:write}}
"""
INJECTIONS = [
    "node:/dav/alice/x,*,admin:rw",
    "node:/dav/alice/x, *:rw",
    "node:/dav/alice x:rw",
    "node:/dav/alice\tx:r",
    "node:/dav/alice/x\r\nX-Patgate-User: root:rw",
    'node:/dav/alice/"x":rw',
    "node:/dav/alice;x=1:rw",
    "node:/dav/alice=x:rw",
    "node:/dav/alice:x:rw",
    "node:/dav/alice/*:rw",
    "node:/dav/alice/../../admin:rw",
    "node:/dav/alice/%2e%2e/bob:rw",
    "node:/dav/alice%2fbob:rw",
    "node:/dav/alice\u00e9:rw",
    "node:dav/alice:rw",
]
CANONICAL = [
    ("node:/dav/alice/:rw", "node:/dav/alice:rw"),
    ("node:/dav/%7ealice/caf%c3%a9:r", "node:/dav/~alice/caf%C3%A9:r"),
    ("node:/dav/a%2Cb:w", "node:/dav/a%2Cb:w"),
    ("node:/:r", "node:/:r"),
]
PASSWORD = "correct horse battery"


@pytest.fixture
async def gateway(
    make_gateway: StartGateway, upstream: RecordingUpstream, sqlite_url: str
) -> Gateway:
    return await make_gateway(sqlite_url, ROUTES.format(upstream=upstream.url))


def basic(login: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()


@pytest.mark.parametrize("scope", INJECTIONS)
async def test_service_never_grants_a_node_path_with_separators(
    gateway: Gateway, scope: str
) -> None:
    await gateway.add_user("alice")
    token, _ = await gateway.service.create_token(ADMIN, "alice", scopes=["*"])
    with pytest.raises(UsageError):
        await gateway.service.create_token(ADMIN, "alice", scopes=[scope])
    with pytest.raises(UsageError):
        await gateway.service.edit_token(ADMIN, token.id, scopes=[scope])
    with pytest.raises(UsageError):
        await gateway.service.add_user(ADMIN, "bob", scopes=[scope])
    with pytest.raises(UsageError):
        await gateway.service.set_user_scopes(ADMIN, "alice", [scope])
    assert (await gateway.store.get_user("alice")).scopes == ("*",)
    assert await gateway.store.get_user("bob") is None


async def test_api_refuses_a_node_path_with_separators(gateway: Gateway) -> None:
    await gateway.add_user("root", admin=True, password=PASSWORD)
    await gateway.add_user("alice")
    auth = {"Authorization": basic("root", PASSWORD)}
    api = gateway.url + "/_patgate/api/v1"
    async with aiohttp.ClientSession() as client:
        for scope in INJECTIONS[:3]:
            body = {"owner": "alice", "scopes": [scope]}
            async with client.post(f"{api}/tokens", json=body, headers=auth) as r:
                assert r.status == 422
                assert "invalid node" in (await r.json())["message"]
            body = {"scopes": [scope]}
            async with client.patch(f"{api}/users/alice", json=body, headers=auth) as r:
                assert r.status == 422
        body = {"owner": "alice", "scopes": ["node:/dav/%7ealice/:rw"]}
        async with client.post(f"{api}/tokens", json=body, headers=auth) as r:
            assert r.status == 201
            assert (await r.json())["scopes"] == ["node:/dav/~alice:rw"]
    assert await gateway.store.list_tokens("alice") != []


def test_cli_refuses_a_node_path_with_separators(tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_text("store: sqlite:///./patgate.db\n")
    cli = Cli(tmp_path)
    cli.ok("user", "add", "alice")
    line = cli.fails(2, "token", "create", "-u", "alice", "-s", INJECTIONS[0])
    assert "invalid node path" in line
    assert cli.fails(2, "user", "add", "bob", "-s", INJECTIONS[0])
    assert cli.fails(2, "user", "scopes", "alice", "-s", INJECTIONS[0])
    value = cli.ok("token", "create", "-u", "alice", "-q", "-s", "node:/dav//a/:r")
    listed = cli.json("token", "list")
    assert isinstance(listed, list)
    assert [token["scopes"] for token in listed] == [["node:/dav/a:r"]]
    assert value.strip()


@pytest.mark.parametrize("scope", INJECTIONS)
def test_config_refuses_a_node_path_with_separators(scope: str) -> None:
    text = "scope_sets:\n  team:\n    - files:read\n    - " + _yaml_string(scope)
    with pytest.raises(ConfigError, match=r"scope_sets\.team"):
        parse_config(text, {}, ".")


def _yaml_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"\n'


@pytest.mark.parametrize(("granted", "stored"), CANONICAL)
async def test_node_paths_are_stored_canonical(
    gateway: Gateway, granted: str, stored: str
) -> None:
    await gateway.add_user("alice", [granted])
    assert (await gateway.store.get_user("alice")).scopes == (stored,)
    record, _ = await gateway.service.create_token(ADMIN, "alice", scopes=[granted])
    assert record.scopes == (stored,)
    config = parse_config(f"scope_sets:\n  s: [{_yaml_string(granted)}]", {}, ".")
    assert config.scope_sets["s"] == (stored,)


async def test_a_node_scope_stored_before_the_rule_never_widens_its_token(
    gateway: Gateway, upstream: RecordingUpstream
) -> None:
    # As if granted before the rule: written into the store directly. It
    # still confines to its subtree as written, and nothing in it becomes
    # an element of its own in X-Patgate-Scopes.
    await gateway.add_user("alice")
    record, value = await gateway.service.create_token(
        ADMIN, "alice", scopes=["files:read", "node:/dav/alice:r"]
    )
    forged = ("files:read", "node:/dav/alice/x,*,admin:rw")
    await gateway.store.update_token(record.with_changes(scopes=forged))
    bobs = await gateway.token("bob")
    bob = await gateway.store.get_user("bob")
    assert bob is not None
    await gateway.store.update_user(
        replace(bob, scopes=("files:read", "node:/dav/b,*:rw", "node:/dav/a b:rw"))
    )
    async with aiohttp.ClientSession() as client:
        for token, path, expected in (
            (value, "/dav/alice/x", 403),
            (value, "/dav/other", 403),
            (value, "/dav/alice/x,*,admin/f", 200),
            (bobs, "/dav/b", 403),
            (bobs, "/dav/a%20b/f", 403),
            (bobs, "/dav/b,*/f", 200),
        ):
            headers = {"Authorization": f"Bearer {token}"}
            async with client.get(gateway.url + path, headers=headers) as response:
                assert response.status == expected, path
    assert [seen.raw_path for seen in upstream.requests] == [
        "/dav/alice/x,*,admin/f",
        "/dav/b,*/f",
    ]
    for seen in upstream.requests:
        elements = seen.headers["X-Patgate-Scopes"].split(",")
        assert elements[0] == "files:read"
        assert len(elements) == 2
        assert "*" not in elements
        assert "admin:rw" not in elements


# --------------------------------------------------------------------------
# The class, as a property of what can be granted

_SAFE_PATH = re.compile(r"/|(?:/(?:[A-Za-z0-9._~!$&'()+@-]|%[0-9A-F]{2})+)+")
node_paths = st.lists(
    st.sampled_from([*"/az.,*: \t\r\n;=\"'%2cCe~@", "%2e", "%7E", "\u00e9"]),
    max_size=20,
).map("".join)


@settings(max_examples=500, deadline=None, derandomize=True)
@given(node_paths, st.sampled_from(["r", "w", "rw"]))
@example("/dav/alice/x,*,admin", "rw")
@example("/dav/%2e%2e/x", "r")
def test_a_granted_node_path_is_canonical_and_holds_no_separator(
    path: str, mode: str
) -> None:
    try:
        scope = canonical_scope(f"node:{path}:{mode}")
    except UsageError:
        return
    granted_path = scope[len("node:") : -len(mode) - 1]
    assert _SAFE_PATH.fullmatch(granted_path)
    assert normalise_path(granted_path) == granted_path
    assert all(part not in (".", "..") for part in granted_path.split("/"))
    assert canonical_scope(scope) == scope
    # Listed in the identity header, it is one element and the one granted.
    scopes = describe_scopes(effective_scopes(("files:read", scope), ("*",)))
    elements = encode_scopes(scopes).split(",")
    assert [unquote(element) for element in elements] == ["files:read", scope]
