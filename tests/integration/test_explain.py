"""``explain`` says what the running gateway does, for every example route.

The routes are those of the shipped examples: tests/data/spec_gateway.yaml
(SPEC.md section 6) and the repository's gateway.yaml, its commented-out
example routes included. Each is served by a real gateway in front of a
recording upstream; every request is sent for real with a real token and
compared with what :func:`explain_request` says of the same token, read
back from the store, as ``patgate explain --token-id`` reads it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from patgate.config import RouteConfig
from patgate.explain import explain_request
from patgate.gate import Rules
from patgate.tokens import token_id_of
from tests.gateway_harness import RecordingUpstream
from tests.integration.test_cli import Cli

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = {
    "spec": ROOT / "tests" / "data" / "spec_gateway.yaml",
    "repo": ROOT / "gateway.yaml",
}
METHODS = ("GET", "HEAD", "PUT", "DELETE", "PROPFIND")
# Example upstream credentials are ${NAME} references; any value will do.
ENV = {"PATGATE_PEPPER": "test-pepper", "PAAS_UPSTREAM_TOKEN": "upstream-secret"}


def example_routes(path: Path) -> str:
    """The body of ``routes:``, with commented-out example routes switched on."""
    text = path.read_text()
    body = text[text.index("\nroutes:\n") + len("\nroutes:\n") :]
    lines: list[str] = []
    in_example = False
    for line in body.splitlines():
        if re.match(r"  # - name: ", line):
            in_example = True
        elif in_example and not re.match(r"  #   ", line):
            in_example = False
        lines.append(line.replace("  # ", "  ", 1) if in_example else line)
    return "\n".join(lines) + "\n"


def with_upstream(routes: str, upstream: RecordingUpstream) -> str:
    return re.sub(
        r"upstream: http://127\.0\.0\.1:\d+", f"upstream: {upstream.url}", routes
    )


def sample_requests(routes: tuple[RouteConfig, ...]) -> list[Sample]:
    """Requests that exercise each route: its prefix, a path below it with
    a query, each ``paths`` pattern as written, in capitals and escaped."""
    samples = [Sample(None, None, "/nowhere/x")]
    for route in routes:
        targets = [route.prefix, route.prefix + "x/y?a=1"]
        for pattern, _ in route.paths:
            path = pattern.replace("*", "a/b")
            targets += [path, path.upper(), path[:-1] + f"%{ord(path[-1]):02X}"]
        samples += [Sample(route, route.host, target) for target in targets]
    return samples


@dataclass
class Sample:
    route: RouteConfig | None
    host: str | None
    target: str

    def sent_with(self, value: str) -> tuple[str, dict[str, str]]:
        """The target and headers carrying token ``value`` as the route reads it:
        in the query if it reads one (explain strips it), else Bearer."""
        headers = {"Host": self.host} if self.host else {}
        route = self.route
        if route is not None and "query" in route.credentials:
            joiner = "&" if "?" in self.target else "?"
            return f"{self.target}{joiner}{route.query_params[0]}={value}", headers
        return self.target, {**headers, "Authorization": f"Bearer {value}"}


@pytest.mark.parametrize("example", sorted(EXAMPLES))
async def test_explain_matches_the_running_gateway(
    example, make_gateway, upstream, sqlite_url
):
    routes = with_upstream(example_routes(EXAMPLES[example]), upstream)
    gateway = await make_gateway(sqlite_url, routes, env=ENV)
    scopes_of_routes = sorted(set(re.findall(r"\b(?:files|env|api):[a-z]+", routes)))
    assert scopes_of_routes, "the example routes name no scope"
    token_scopes = [["*"], *([scope] for scope in scopes_of_routes), ["node:/dav/a:r"]]
    tokens = []
    for scopes in token_scopes:
        value = await gateway.token("alice", scopes=scopes)
        token_id = token_id_of(value, gateway.config.token_prefix)
        assert token_id is not None
        tokens.append((value, token_id))
    rules = Rules.from_config(gateway.config)
    compared = 0
    async with aiohttp.ClientSession() as client:
        for sample in sample_requests(gateway.config.routes):
            for method in METHODS:
                for value, token_id in tokens:
                    grant = await gateway.store.resolve(token_id)
                    target, headers = sample.sent_with(value)
                    url = f"http://{sample.host or gateway.host}{target}"
                    said = explain_request(
                        rules, method, url, grant=grant, now=time.time()
                    )
                    before = len(upstream.requests)
                    async with client.request(
                        method, gateway.url + target, headers=headers
                    ) as response:
                        status = response.status
                    where = f"{method} {sample.target} {grant.token.scopes}: {said}"
                    assert status == said.status, where
                    if said.forwards:
                        assert len(upstream.requests) == before + 1, where
                        forwarded = upstream.url + upstream.last.raw_path
                        assert forwarded == said.forwarded, where
                    else:
                        assert len(upstream.requests) == before, where
                    compared += 1
    assert compared > 100


# the command


@pytest.fixture
def spec_cli(tmp_path):
    text = EXAMPLES["spec"].read_text()
    (tmp_path / "gateway.yaml").write_text(text)
    cli = Cli(tmp_path)
    cli.ok("user", "add", "alice", "-s", "env:read", "-s", "@files-rw")
    return cli


def test_explain_command_with_a_stored_token(spec_cli):
    value = spec_cli.ok("token", "create", "-u", "alice", "-s", "env:read", "-q")
    token_id = token_id_of(value.strip(), "pgt")
    stopenv = "http://gw/1.0/environment/control/rest/stopenv?session=x"
    refused = spec_cli("explain", "POST", stopenv, "--token-id", str(token_id))
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr == ""
    assert "route:         paas (prefix /1.0/)" in refused.stdout
    assert "upstream URL" not in refused.stdout
    assert "scopes needed: env:control" in refused.stdout
    assert "?session=TOKEN; Authorization: Bearer TOKEN" in refused.stdout
    assert "refused: needs env:control, the token holds env:read" in refused.stdout
    info = spec_cli.json("explain", "GET", "/1.0/environment/info?session=x&a=1",
                         "--token-id", str(token_id))  # fmt: skip
    assert info["status"] == 200
    assert info["upstream_url"] == "http://127.0.0.1:8082/1.0/environment/info?a=1"
    assert info["token_scopes"] == ["env:read"]


def test_explain_command_with_scopes_and_without_a_token(spec_cli):
    out = spec_cli.ok("explain", "PROPFIND", "/dav/a", "-s", "@files-rw")
    assert "forwarded: the token holds files:read" in out
    bare = spec_cli("explain", "PUT", "/dav/a")
    assert bare.returncode == 1
    assert "needs a token holding files:write" in bare.stdout
    assert "(prefix /public/, auth: none)" in spec_cli.ok("explain", "GET", "/public/x")


def test_explain_command_errors_are_one_line(spec_cli):
    assert "no token" in spec_cli.fails(1, "explain", "GET", "/dav/", "--token-id",
                                        "AAAAAAAA")  # fmt: skip
    spec_cli.fails(2, "explain", "GET", "/dav/", "-s", "@nope")
    spec_cli.fails(2, "explain", "GET", "/dav/", "--from", "nowhere")
    spec_cli.fails(2, "explain", "GET", "/dav/", "-s", "a", "--token-id", "x")
