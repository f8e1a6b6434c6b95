"""The canonical request path: fixed cases, refusals, and properties under fuzzing."""

import contextlib
from urllib.parse import unquote

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from patgate.errors import UsageError
from patgate.paths import PathError, decode_text, fold_case, normalise_path
from patgate.scopes import path_within


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("/a/b/", "/a/b/"),
        ("//a///b//", "/a/b/"),
        ("/a/./b", "/a/b"),
        ("/a/b/../c", "/a/c"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/.", "/"),
        ("/a/..", "/"),
        ("/public/%2e%2e/admin", "/admin"),
        ("/public/%2E./admin", "/admin"),
        ("/public/.%2e/admin/", "/admin/"),
        ("/a/%2e/b", "/a/b"),
        ("/%7e%41%5a%30%2d%5f", "/~AZ0-_"),
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/a%3fb", "/a%3Fb"),
        ("/a%23b", "/a%23b"),
        ("/dav/file#1.txt", "/dav/file%231.txt"),
        ("/dav/a b[1].txt", "/dav/a%20b%5B1%5D.txt"),
        ("/a%3Bb=c/d:e@f!$&'()*+,=", "/a%3Bb=c/d:e@f!$&'()*+,="),
        ("/...", "/..."),
        ("/a/.../b", "/a/.../b"),
        ("/.well-known/x", "/.well-known/x"),
        ("/%2525", "/%2525"),
        ("/%2541", "/%2541"),
        (
            "/1.0/environment/control/rest/stopenv",
            "/1.0/environment/control/rest/stopenv",
        ),
    ],
)
def test_canonical_form(raw, canonical):
    assert normalise_path(raw) == canonical
    assert normalise_path(canonical) == canonical


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "a/b",
        "*",
        "http://example.com/a",
        "/..",
        "/a/../..",
        "/%2e%2e/etc/passwd",
        "/a%2fb",
        "/a%2Fb",
        "/a%5cb",
        "/a%5Cb",
        "/a\\b",
        "/a%00b",
        "/a%0ab",
        "/a%0D%0Ab",
        "/a%7f",
        "/a\x00b",
        "/a\nb",
        "/a\tb",
        "/a\x7fb",
        "/caf\u00e9",
        "/\u2025/",
        "/a%",
        "/a%2",
        "/a%zz",
        "/a%g0",
        "/public/%252e%252e/admin",
        "/public/%252E%252E/admin",
        "/a%252fb",
        "/a%255cb",
        "/a%2500",
        "/a%25252e",
        "/a/%25%32%65",
        "/public/..;/admin",
        "/public/.;x/admin",
        "/public/%2e%2e;/admin",
        "/public/..%3b/admin",
        "/a?b",
        # A raw ";" starts a path parameter to servlet containers: refused.
        "/a;b=c/d",
        "/stopenv;jsessionid=1",
        "/api/x;",
        "/;/x",
    ],
)
def test_ambiguous_paths_are_refused(raw):
    with pytest.raises(PathError):
        normalise_path(raw)


def test_path_error_is_a_usage_error():
    assert issubclass(PathError, UsageError)


def resolve_reference(path: str) -> str:
    """A simple model of what an upstream resolves a decoded path to."""
    segments = path.split("/")[1:]
    kept: list[str] = []
    for segment in segments:
        if segment in ("", "."):
            continue
        if segment == "..":
            kept.pop()
            continue
        kept.append(segment)
    trailing = bool(kept) and segments[-1] in ("", ".", "..")
    return "/" + "/".join(kept) + ("/" if trailing else "")


PIECES = [
    "/",
    "//",
    "a",
    "b",
    "public",
    ".",
    "..",
    "%2e",
    "%2E",
    "%2e%2e",
    ".%2E",
    "%2f",
    "%2F",
    "%5c",
    "%25",
    "%252e",
    "%32",
    "%65",
    "%41",
    "%c3%a9",
    "%3f",
    "%3b",
    ";",
    "#",
    " ",
    "~",
    "\\",
    "\x00",
    "\u00e9",
    "%",
    "?",
]

hostile = st.lists(st.sampled_from(PIECES), max_size=12).map("".join)


@given(st.one_of(st.text(max_size=40), hostile, hostile.map(lambda s: "/" + s)))
@example("/public/%2e%2e/admin")
@example("/public/%25%32%65%25%32%65/admin")
def test_never_raises_anything_but_path_error(raw):
    with contextlib.suppress(PathError):
        normalise_path(raw)


@settings(max_examples=400)
@given(hostile.map(lambda s: "/" + s))
def test_idempotent_and_free_of_dot_segments(raw):
    try:
        canonical = normalise_path(raw)
    except PathError:
        return
    assert normalise_path(canonical) == canonical
    assert canonical.startswith("/")
    assert "//" not in canonical
    assert "/./" not in canonical
    assert "/../" not in canonical
    assert not canonical.endswith(("/.", "/.."))
    assert "%2F" not in canonical.upper()
    assert "\\" not in canonical
    assert "#" not in canonical
    assert all(0x20 < ord(c) < 0x7F for c in canonical)


@settings(max_examples=400)
@given(hostile.map(lambda s: "/public/" + s))
@example("/public/%2e%2e/admin")
@example("/public/.%2e/.%2e/admin")
@example("/public/a/%2e%2e/%2e%2e/admin")
def test_what_is_checked_is_what_the_upstream_sees(raw):
    """One decode of the canonical path equals resolving the decoded raw path.

    So a path under /public/ stays under /public/ for the gateway exactly when
    it does for an upstream that decodes and resolves it.
    """
    try:
        canonical = normalise_path(raw)
    except PathError:
        return
    upstream_view = unquote(canonical, errors="replace")
    assert upstream_view == resolve_reference(unquote(raw, errors="replace"))
    assert resolve_reference(upstream_view) == upstream_view
    assert path_within(canonical, "/public") == path_within(upstream_view, "/public")


# --------------------------------------------------------------------------
# The decoded spelling


@pytest.mark.parametrize(
    ("path", "decoded"),
    [
        ("/a/B/", "/a/b/"),
        ("/x/stopenv%3Bjsessionid=1", "/x/stopenv"),
        ("/a%3Bp/b/", "/a/b/"),
        ("/%3Bp/b", "/b"),
        ("/a%3F/b", "/a"),
        ("/a%23x/b", "/a"),
        ("/CAF%C3%89/", "/caf\u00e9/"),
        ("/adm%C4%B1n", "/admin"),  # dotless i
        ("/%C5%BFtop", "/stop"),  # long s
        ("/%E2%84%AAey", "/key"),  # Kelvin sign
        ("/%C4%B0d", "/id"),  # dotted capital I
        ("/stra%C3%9Fe", "/stra\u00dfe"),  # no "ss": not a simple mapping
        ("/a%20b", "/a b"),
        ("/a%FFb", "/a\udcffb"),
    ],
)
def test_decoded_spelling(path, decoded):
    assert decode_text(path) == decoded


def test_case_sensitive_decoding_keeps_the_case():
    assert decode_text("/A%3Bx/B", case_sensitive=True) == "/A/B"


@given(hostile.map(lambda s: "/" + s))
def test_the_decoded_spelling_ignores_case(raw):
    try:
        canonical = normalise_path(raw)
    except PathError:
        return
    assert decode_text(canonical.upper()) == decode_text(canonical)
    assert fold_case(decode_text(canonical)) == decode_text(canonical)
