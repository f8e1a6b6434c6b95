"""The cross-site rules of the management API (patgate.web.origin), as properties."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from patgate.web.manage import origin

HOSTS = st.sampled_from(
    ["gw.example.com", "127.0.0.1", "[::1]", "localhost", "a-b.example"]
)
PORTS = st.one_of(st.none(), st.sampled_from([80, 443, 8080, 8090, 65535]))
SCHEMES = st.sampled_from(["http", "https"])


def authority(host: str, port: int | None) -> str:
    return host if port is None else f"{host}:{port}"


@given(SCHEMES, HOSTS, PORTS)
def test_a_page_matches_the_host_it_was_served_from(scheme, host, port):
    # The browser writes the origin without its default port; the Host
    # header may carry it or not.
    default = {"http": 80, "https": 443}[scheme]
    written = authority(host, None if port == default else port)
    assert origin.origin_matches(
        f"{scheme}://{written}", [authority(host, port)], https=scheme == "https"
    )


@given(SCHEMES, HOSTS, PORTS, HOSTS, PORTS)
def test_another_host_or_port_never_matches(scheme, host, port, other, other_port):
    default = {"http": 80, "https": 443}[scheme]
    same_port = (port or default) == (other_port or default)
    if host == other and same_port:
        return
    assert not origin.origin_matches(
        f"{scheme}://{authority(other, other_port)}",
        [authority(host, port)],
        https=False,
    )


@given(HOSTS, PORTS)
def test_an_http_origin_is_foreign_to_a_request_known_to_be_https(host, port):
    own = authority(host, port)
    assert not origin.origin_matches(f"http://{own}", [own], https=True)


@given(st.text(max_size=60))
def test_anything_that_is_not_an_origin_matches_nothing(text):
    hosts = ["gw.example.com"]
    if text.strip().lower() in ("http://gw.example.com", "https://gw.example.com"):
        return
    if text.strip().lower() in (
        "http://gw.example.com:80",
        "https://gw.example.com:443",
    ):
        return
    assert not origin.origin_matches(text, hosts, https=False)


def test_tricky_origins_do_not_match():
    hosts = ["gw.example.com"]
    for value in (
        "null",
        "",
        "gw.example.com",
        "ftp://gw.example.com",
        "http://gw.example.com.evil.example",
        "http://evil.example/gw.example.com",
        "http://gw.example.com@evil.example",
        "http://user@gw.example.com",
        "http://gw.example.com:80@evil.example",
        "http://gw.example.com\\@evil.example",
        "http://gw.example.com/",
        "http://gw.example.com:",
    ):
        assert not origin.origin_matches(value, hosts, https=False), value


SIMPLE = st.sampled_from(
    [
        "",
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=-",
        "TEXT/PLAIN",
    ]
)


@given(SIMPLE)
def test_no_type_a_cross_site_form_can_send_is_json(content_type):
    assert not origin.is_json(content_type)


@given(st.sampled_from(["json", "merge-patch+json", "problem+json"]), st.booleans())
def test_json_types_are_json(subtype, with_charset):
    content_type = f"application/{subtype}" + ("; charset=utf-8" * with_charset)
    assert origin.is_json(content_type)
    assert origin.is_json(content_type.upper())


SITES = st.sampled_from(["same-origin", "none", "same-site", "cross-site", "x"])


@given(st.one_of(st.none(), SITES), st.one_of(st.none(), st.booleans()))
def test_same_origin_rule(site, origin_is_own):
    headers: CIMultiDict[str] = CIMultiDict()
    if site is not None:
        headers["Sec-Fetch-Site"] = site
    if origin_is_own is not None:
        own = "http://gw.example.com" if origin_is_own else "https://evil.example"
        headers["Origin"] = own
    reason = origin.cross_origin_reason(headers, ["gw.example.com"], https=False)
    allowed = site in (None, "same-origin", "none") and origin_is_own is not False
    assert (reason is None) == allowed


def test_only_safe_methods_change_nothing():
    for method in ("GET", "HEAD", "OPTIONS", "get"):
        assert not origin.changes_state(method)
    for method in ("POST", "PUT", "PATCH", "DELETE", "PROPFIND", "post"):
        assert origin.changes_state(method)


def test_browsers_are_told_apart_from_scripts():
    for browser in (
        {"Sec-Fetch-Mode": "navigate"},
        {"sec-fetch-dest": "image"},
        {"Sec-Fetch-Site": "none"},
        {"Origin": "null"},
        {"Accept": "text/html,application/xhtml+xml"},
    ):
        assert origin.from_browser(CIMultiDict(browser)), browser
    for script in ({}, {"Accept": "*/*"}, {"Accept": "application/json"}):
        assert not origin.from_browser(CIMultiDict(script)), script
