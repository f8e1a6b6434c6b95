"""Credential extraction from headers and query, and query-token stripping."""

import base64
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patgate.extract import (
    SOURCES,
    Credential,
    CredentialError,
    _split_authorization,
    carries_token,
    extract_credential,
    strip_query_params,
    strip_token_pairs,
)
from patgate.tokens import new_token

TOKEN = "pgt_AbCd12340123456789abcdefghijABCDEFGHIJkl08YpVI"
OTHER = "pgt_00000000000000000000000000000000000000000UBqSV"
PARAMS = ("access_token", "session")


def basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


def extract(authorization=(), api_key=(), query="", sources=SOURCES, params=PARAMS):
    return extract_credential(
        list(authorization), list(api_key), query, sources, params
    )


def test_bearer():
    assert extract([f"Bearer {TOKEN}"]) == Credential(TOKEN, "bearer", None)


@pytest.mark.parametrize(
    "header",
    [f"bearer {TOKEN}", f"BEARER {TOKEN}", f"Bearer \t  {TOKEN}", f"  Bearer {TOKEN} "],
)
def test_bearer_scheme_is_case_insensitive_and_tolerates_one_blank_run(header):
    assert extract([header]) == Credential(TOKEN, "bearer", None)


def test_basic_password_is_the_token_and_login_is_kept():
    assert extract([basic(f"alice:{TOKEN}")]) == Credential(TOKEN, "basic", "alice")


def test_basic_splits_at_the_first_colon():
    found = extract([basic("alice:pa:ss")])
    assert found == Credential("pa:ss", "basic", "alice")


def test_basic_utf8_login():
    assert extract([basic(f"zoë:{TOKEN}")]) == Credential(TOKEN, "basic", "zoë")


def test_basic_with_empty_password_is_no_credential():
    assert extract([basic("alice:")]) is None


def test_api_key_header():
    assert extract(api_key=[TOKEN]) == Credential(TOKEN, "header", None)


@pytest.mark.parametrize(
    "query",
    [
        f"access_token={TOKEN}",
        f"session={TOKEN}",
        f"a=1&session={TOKEN}&b=2",
        f"access%5Ftoken={TOKEN}",
        f"access_token={TOKEN.replace('_', '%5F')}",
        f"access_token={TOKEN}&access_token={TOKEN}",
        f"session={TOKEN}&access_token={TOKEN}",
        f"access_token=&session={TOKEN}",
    ],
)
def test_query_credential(query):
    assert extract(query=query) == Credential(TOKEN, "query", None)


@pytest.mark.parametrize("query", ["", "a=1", "access_token", "access_token=", "x=y&&"])
def test_no_query_credential(query):
    assert extract(query=query) is None


def test_nothing_at_all():
    assert extract() is None


@pytest.mark.parametrize(
    ("kwargs", "sources"),
    [
        ({"authorization": [f"Bearer {TOKEN}"]}, ("basic", "query", "header")),
        ({"authorization": [basic(f"a:{TOKEN}")]}, ("bearer",)),
        ({"api_key": [TOKEN]}, ("bearer", "basic", "query")),
        ({"query": f"access_token={TOKEN}"}, ("bearer", "basic", "header")),
    ],
)
def test_sources_the_route_does_not_accept_are_ignored(kwargs, sources):
    assert extract(sources=sources, **kwargs) is None


def test_ignored_source_does_not_conflict_with_an_accepted_one():
    found = extract(
        authorization=[f"Bearer {OTHER}"], query=f"session={TOKEN}", sources=("query",)
    )
    assert found == Credential(TOKEN, "query", None)


@pytest.mark.parametrize(
    "header", ["Digest username=x", "Negotiate abc", "Token abc", "Bearerx abc"]
)
def test_other_schemes_are_ignored(header):
    assert extract([header]) is None
    assert extract([header], query=f"session={TOKEN}") == Credential(
        TOKEN, "query", None
    )


def test_query_param_names_are_configurable():
    assert extract(query=f"session={TOKEN}", params=("access_token",)) is None
    found = extract(query=f"tok={TOKEN}", params=("tok",))
    assert found == Credential(TOKEN, "query", None)


def test_same_value_in_several_places_is_one_credential():
    found = extract(
        [basic(f"alice:{TOKEN}")], api_key=[TOKEN], query=f"access_token={TOKEN}"
    )
    assert found == Credential(TOKEN, "basic", "alice")


def error_code(result: object) -> str:
    assert isinstance(result, CredentialError)
    assert TOKEN not in result.message
    assert OTHER not in result.message
    return result.code


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        (
            {"authorization": [f"Bearer {TOKEN}", f"Bearer {TOKEN}"]},
            "duplicate_authorization",
        ),
        (
            {"authorization": [f"Bearer {TOKEN}", "Digest x"]},
            "duplicate_authorization",
        ),
        ({"authorization": ["Bearer"]}, "malformed_authorization"),
        ({"authorization": ["Bearer "]}, "malformed_authorization"),
        ({"authorization": [f"Bearer {TOKEN} extra"]}, "malformed_authorization"),
        ({"authorization": [f"Bearer {TOKEN}\n"]}, "malformed_authorization"),
        ({"authorization": ["Bearer t\u00f6ken"]}, "malformed_authorization"),
        ({"authorization": ["Bearer\x00abc"]}, "malformed_authorization"),
        ({"authorization": ["Basic"]}, "malformed_authorization"),
        ({"authorization": [basic("no-colon")]}, "malformed_authorization"),
        ({"authorization": ["Basic !!!!"]}, "malformed_authorization"),
        ({"authorization": ["Basic YWxpY2U6eA"]}, "bad_base64"),
        ({"authorization": ["Basic YWxpY2U6eA="]}, "bad_base64"),
        ({"authorization": ["Basic YWxp=Y2U6eA=="]}, "malformed_authorization"),
        (
            {"authorization": ["Basic " + base64.b64encode(b"al\xffce:x").decode()]},
            "non_utf8",
        ),
        ({"query": "access_token=%ff%fe"}, "non_utf8"),
        (
            {"authorization": [f"Bearer {TOKEN}"], "query": f"access_token={OTHER}"},
            "conflicting_credentials",
        ),
        (
            {"authorization": [basic(f"a:{TOKEN}")], "api_key": [OTHER]},
            "conflicting_credentials",
        ),
        ({"api_key": [TOKEN, OTHER]}, "conflicting_credentials"),
        (
            {"query": f"access_token={TOKEN}&access_token={OTHER}"},
            "conflicting_credentials",
        ),
        (
            {"query": f"access_token={TOKEN}&session={OTHER}"},
            "conflicting_credentials",
        ),
        (
            {"query": f"access_token={TOKEN}&access%5ftoken={OTHER}"},
            "conflicting_credentials",
        ),
    ],
)
def test_ambiguous_credentials_are_refused(kwargs, code):
    assert error_code(extract(**kwargs)) == code


def test_two_authorization_headers_are_refused_even_when_the_route_ignores_them():
    result = extract(["Digest a", "Digest b"], sources=("query",))
    assert error_code(result) == "duplicate_authorization"


def test_credential_repr_hides_the_value():
    credential = Credential(TOKEN, "basic", "alice")
    assert TOKEN not in repr(credential)
    assert "alice" in repr(credential)


@pytest.mark.parametrize(
    ("query", "stripped"),
    [
        ("", ""),
        (f"access_token={TOKEN}", ""),
        (f"a=1&access_token={TOKEN}", "a=1"),
        (f"access_token={TOKEN}&a=1", "a=1"),
        (f"a=%7e+b&session={TOKEN}&c=%2F;d", "a=%7e+b&c=%2F;d"),
        (f"a=1&access_token={TOKEN}&access_token=x&b=2", "a=1&b=2"),
        (f"access%5Ftoken={TOKEN}&b", "b"),
        ("access_token&b=1", "b=1"),
        (f"a&&access_token={TOKEN}", "a&"),
        ("access_tokens=1&xaccess_token=2", "access_tokens=1&xaccess_token=2"),
    ],
)
def test_strip_query_params(query, stripped):
    assert strip_query_params(query, PARAMS) == stripped


def test_strip_with_no_names_is_identity():
    assert strip_query_params("access_token=x", ()) == "access_token=x"


query_text = st.text(alphabet=st.sampled_from("ab=&%2F+;?/_ ~\u00e9"), max_size=40)


@given(query_text)
def test_strip_is_identity_without_the_names(query):
    names = ("access_token", "session")
    if any(
        pair.partition("=")[0] in names or "%" in pair.partition("=")[0]
        for pair in query.split("&")
    ):
        return
    assert strip_query_params(query, names) == query


@given(query_text, st.text(alphabet="abcXYZ019", min_size=1, max_size=10))
def test_strip_removes_the_token_and_keeps_the_rest_in_order(query, token):
    pairs = query.split("&")
    inserted = "&".join([*pairs[:1], f"access_token={token}", *pairs[1:]])
    stripped = strip_query_params(inserted, ("access_token",))
    assert f"access_token={token}" not in stripped.split("&")
    kept = [p for p in pairs if p.partition("=")[0] != "access_token"]
    if "%" not in query:
        assert stripped == "&".join(kept)


# --------------------------------------------------------------------------
# carries_token / strip_token_pairs: a token anywhere, in any encoding

surround = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)


def _percent_all(text: str) -> str:
    return "".join(f"%{ord(c):02x}" for c in text)


def _encodings(token: str) -> list[str]:
    body = token.split("_", 1)[1]
    return [
        token,
        _percent_all(token),
        "pgt%5F" + body,
        "pgt%255F" + body,
        "%25%37%30gt_" + body,  # "%70" spelled with escapes: two layers
        quote(quote(token, safe=""), safe="").replace("_", "%255F"),
        "Basic " + base64.b64encode(f"alice:{token}".encode()).decode(),
        "basic\t" + base64.b64encode(token.encode()).decode().rstrip("="),
    ]


@given(
    st.builds(lambda: new_token().value),
    surround,
    surround,
    st.integers(0, 7),
)
def test_carries_token_finds_it_in_every_encoding(token, before, after, how):
    value = _encodings(token)[how]
    text = value if value.lower().startswith("basic") else before + value + after
    assert carries_token(text, "pgt")


@given(surround)
def test_carries_token_ignores_lookalikes(text):
    token = new_token().value
    body = token.split("_", 1)[1]
    for lookalike in (
        token[:-1] + ("A" if token[-1] != "A" else "B"),  # bad checksum
        "xyz_" + body,  # another prefix
        "pgt-" + body,
        token[:-1],  # too short
    ):
        assert not carries_token(text + lookalike, "pgt")


def test_carries_token_fails_closed_on_absurdly_deep_encoding():
    assert carries_token("%" + "25" * 20 + "41" + "x" * 60, "pgt")
    assert not carries_token("%41" + "x" * 60, "pgt")


def test_strip_token_pairs_keeps_every_other_byte():
    token = new_token().value
    query = f"a=%7e+b&x={token}&c=%2F;d&&y=pgt%5F{token[4:]}&z"
    assert strip_token_pairs(query, "pgt") == "a=%7e+b&c=%2F;d&&z"
    assert strip_token_pairs("a=%7e+b&c=%2F;d", "pgt") == "a=%7e+b&c=%2F;d"


@given(
    st.text(alphabet=st.sampled_from("AZaz09._~+/-= \t,:\"'!\u00e9"), max_size=30),
    st.sampled_from(["Bearer ", "Bearer  ", "bearer ", "BEARER ", "Bearer\t"]),
)
def test_the_bearer_shortcut_takes_what_the_general_parse_takes(rest, scheme):
    """'Bearer <token68>' is read without the general parse; same answers."""
    header = scheme + rest
    general = _split_authorization(header, ("bearer",))
    expected = (
        Credential(general[1], "bearer") if isinstance(general, tuple) else general
    )
    assert extract_credential([header], [], "", ("bearer",), ()) == expected
