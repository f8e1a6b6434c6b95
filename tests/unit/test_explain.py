"""``explain_request``: each step of the pipeline, as the proxy takes it."""

from pathlib import Path

import pytest

from patgate.config import parse_config
from patgate.explain import explain_request, grant_of_scopes, split_target
from patgate.gate import Rules
from patgate.models import TokenGrant, TokenStatus
from tests.factories import NOW, make_token, make_user

SPEC = Path(__file__).resolve().parents[1] / "data" / "spec_gateway.yaml"
RULES = Rules.from_config(parse_config(SPEC.read_text(), {}, "/srv"))


def explain(method, url, scopes=None, **kwargs):
    grant = grant_of_scopes(scopes, NOW) if scopes is not None else None
    return explain_request(RULES, method, url, grant=grant, now=NOW, **kwargs)


def test_a_paas_method_needs_its_own_scope():
    said = explain("GET", "/1.0/environment/control/rest/stopenv", ["env:read"])
    assert (said.status, said.reason, said.route) == (403, "scope", "paas")
    assert said.needed == ("env:control",)
    assert said.forwarded is None
    assert "needs env:control" in said.why


def test_other_spellings_need_the_scopes_of_every_rule_they_meet():
    said = explain("GET", "/1.0/environment/control/rest/StopEnv", ["env:control"])
    assert said.needed == ("env:read", "env:control")
    assert said.status == 403


def test_head_needs_what_get_needs():
    said = explain("HEAD", "http://gw.example/dav/a/b", ["files:read"])
    assert said.forwards
    assert said.forwarded == "http://127.0.0.1:8081/dav/a/b"
    assert said.credentials[0].startswith("Authorization: Basic")


def test_the_forwarded_url_is_canonical_and_holds_no_token():
    value = "pgt_AbCd12340123456789abcdefghijABCDEFGHIJkl08YpVI"
    said = explain("GET", f"/1.0/x/../environment/info?session={value}&a=1", ["*"])
    assert said.path == "/1.0/environment/info"
    assert said.forwarded == "http://127.0.0.1:8082/1.0/environment/info?a=1"
    assert value not in repr(said.to_json())


def test_without_a_token_it_says_what_one_needs():
    said = explain("PUT", "/dav/x")
    assert (said.status, said.reason) == (401, "no_credential")
    assert said.needed == ("files:write",)
    assert "files:write" in said.why


def test_public_routes_need_nothing():
    said = explain("DELETE", "/public/x")
    assert (said.status, said.auth, said.credentials) == (200, "none", ())


@pytest.mark.parametrize(
    ("url", "status", "reason"),
    [
        ("/nowhere", 404, "no_route"),
        ("/dav/a%2fb", 400, "bad_path"),
        ("http://bad host/dav/", 400, "bad_host"),
        ("ftp://x/dav/", 400, "bad_url"),
    ],
)
def test_refusals_before_any_token(url, status, reason):
    said = explain("GET", url, ["*"])
    assert (said.status, said.reason, said.route) == (status, reason, None)


def test_node_scopes_confine():
    said = explain("PUT", "/dav/b/x", ["node:/dav/a:rw"])
    assert (said.status, said.reason) == (403, "node")


def test_a_revoked_token_is_refused_with_its_reason():
    record, _ = make_token(status=TokenStatus.REVOKED)
    grant = TokenGrant(token=record, owner=make_user())
    said = explain_request(RULES, "GET", "/dav/x", grant=grant, now=NOW)
    assert (said.status, said.reason, said.token) == (401, "revoked", record.id)


def test_an_address_bound_token_needs_the_client_address():
    record, _ = make_token(allowed_cidrs=("10.0.0.0/8",))
    grant = TokenGrant(token=record, owner=make_user())
    away = explain_request(RULES, "GET", "/dav/x", grant=grant, now=NOW)
    assert (away.status, away.reason) == (403, "ip_not_allowed")
    assert "--from" in away.why
    near = explain_request(
        RULES, "GET", "/dav/x", grant=grant, now=NOW, client_ip="10.1.2.3"
    )
    assert near.forwards


def test_split_target_keeps_escapes_and_drops_the_fragment():
    assert split_target("https://h:8443/a%2Fb?q=1#f") == (
        "/a%2Fb?q=1",
        "h:8443",
        "https",
    )
    assert split_target("/a?b#c") == ("/a?b", None, "http")
