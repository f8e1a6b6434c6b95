"""gateway.yaml parsing: defaults, the shipped example, SPEC §6, precise errors."""

import re
from pathlib import Path

import pytest

from patgate.config import (
    CacheConfig,
    Config,
    IdentityHeaders,
    Limits,
    RouteConfig,
    Secret,
    SecretHeaders,
    load_config,
    parse_config,
    sqlite_file,
)
from patgate.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
ENV = {"PATGATE_PEPPER": "s3cret-pepper"}
MINIMAL_ROUTE = (
    "routes: [{name: api, prefix: /api/, upstream: 'http://127.0.0.1:8081'}]"
)


def parse(text: str, env=None, base_dir="/srv/patgate") -> Config:
    return parse_config(text, ENV if env is None else env, base_dir)


def error_of(text: str, env=None) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(text, env)
    message = str(caught.value)
    assert "\n" not in message
    return message


def spec_yaml() -> str:
    # A verbatim copy, so the test does not depend on files outside the repo.
    return (ROOT / "tests" / "data" / "spec_gateway.yaml").read_text()


# --------------------------------------------------------------------------
# What parses


def test_empty_file_gives_defaults_and_warnings():
    config = parse("", env={})
    assert config.listen_host == "127.0.0.1"
    assert config.listen_port == 8080
    assert config.store == "sqlite:////srv/patgate/patgate.db"
    assert config.pepper == Secret(b"")
    assert config.cache == CacheConfig()
    assert config.identity_headers == IdentityHeaders()
    assert config.limits == Limits()
    assert config.routes == ()
    assert config.api is True
    # No pepper is no warning here: an SQLite store gets a pepper file
    # (patgate.pepper, tests/integration/test_pepper.py).
    assert not any("pepper" in w for w in config.warnings)
    assert any("no routes" in w for w in config.warnings)


def test_comment_only_file_is_an_empty_config():
    assert parse("# nothing yet\n").routes == ()


def test_empty_sections_mean_defaults():
    config = parse("cache:\nlimits:\nscope_sets:\ntrusted_proxies:\nroutes:\n")
    assert config.cache == CacheConfig()
    assert config.routes == ()


def test_the_shipped_gateway_yaml_parses_without_warnings():
    config = parse((ROOT / "gateway.yaml").read_text(), base_dir=str(ROOT))
    assert config.warnings == ()
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 8080)
    assert config.store == f"sqlite:///{ROOT / 'patgate.db'}"
    api, public = config.routes
    assert api.prefix == "/api/"
    assert api.upstream == "http://127.0.0.1:8081"
    assert api.methods["GET"] == "api:read"
    assert api.methods["*"] == "api:write"
    assert public.auth == "none"


def test_the_shipped_gateway_yaml_commented_routes_parse_too():
    text = (ROOT / "gateway.yaml").read_text()
    start = text.index("  # - name: files")
    uncommented = text[:start] + re.sub(r"(?m)^  # (- |  )", r"  \1", text[start:])
    env = {**ENV, "PAAS_UPSTREAM_TOKEN": "upstream-secret"}
    config = parse(uncommented, env=env)
    names = [route.name for route in config.routes]
    assert names == ["api", "public", "files", "paas"]
    paas = config.routes[3]
    assert dict(paas.upstream_headers) == {"Authorization": "Bearer upstream-secret"}


def test_spec_example_parses():
    config = parse(spec_yaml())
    files, paas, public = config.routes
    assert files.credentials == ("basic", "bearer")
    assert files.realm == "files"
    assert files.methods["PROPFIND"] == "files:read"
    assert paas.query_params == ("session",)
    assert paas.error_style == "result"
    assert paas.paths == (
        ("/1.0/environment/control/rest/stopenv", "env:control"),
        ("/1.0/environment/*", "env:read"),
    )
    assert public.auth == "none"
    assert public.credentials == ("bearer", "basic", "query", "header")
    assert config.scope_sets["files-rw"] == ("files:read", "files:write")
    assert config.cache == CacheConfig(30, 5, 100_000, 60)


def test_every_setting():
    config = parse(
        """
listen: "[::1]:9000"
store: redis://:pw@127.0.0.1:6379/2
pepper_env: MY_PEPPER
token_prefix: acme
workers: 4
cache: {ttl: 1m, negative_ttl: 0, max_entries: 10, max_stale: 90.5}
identity_headers: {user: X-User, token_id: X-Token, scopes: X-Scopes}
scope_sets:
  ro: [a:read]
  rw: ["@ro", a:write, a:read]
trusted_proxies: [10.0.0.0/8, "2001:db8::/32", 192.0.2.1]
limits: {max_header_bytes: 4096, max_url_bytes: 2048, max_body_bytes: 1048576,
         failed_auth_per_minute: 0}
usage_flush_interval: 2s
api: false
routes:
  - name: api
    prefix: /api
    upstream: https://backend.internal:8443/v2
    host: API.Example.com
    strip_prefix: true
    credentials: [header, bearer, header]
    query_params: [tok]
    api_key_header: X-Key
    realm: The API
    methods: {GET: a:read, M-SEARCH: a:read, "*": a:write}
    paths:
      /api/admin/*: {GET: admin:read, "*": admin:write}
      /api/health: "*"
    scope: a:other
    error_style: result
    upstream_headers: {Authorization: "Bearer ${UP}", X-Tenant: "t-${TENANT}-x"}
    connect_timeout: 2s
    read_timeout: 3600
    websocket: false
""",
        env={"MY_PEPPER": "p", "UP": "tok", "TENANT": "7"},
    )
    assert config.warnings == ()
    assert (config.listen_host, config.listen_port) == ("::1", 9000)
    assert config.store == "redis://:pw@127.0.0.1:6379/2"
    assert config.pepper.value == b"p"
    assert config.token_prefix == "acme"
    assert config.workers == 4
    assert config.cache == CacheConfig(60.0, 0.0, 10, 90.5)
    assert config.identity_headers == IdentityHeaders("X-User", "X-Token", "X-Scopes")
    assert config.scope_sets["rw"] == ("a:read", "a:write")
    assert config.trusted_proxies == ("10.0.0.0/8", "2001:db8::/32", "192.0.2.1/32")
    assert config.limits == Limits(4096, 2048, 1048576, 0)
    assert config.usage_flush_interval == 2.0
    assert config.api is False
    (route,) = config.routes
    assert route == RouteConfig(
        name="api",
        prefix="/api",
        upstream="https://backend.internal:8443/v2",
        host="api.example.com",
        strip_prefix=True,
        credentials=("header", "bearer"),
        query_params=("tok",),
        api_key_header="X-Key",
        realm="The API",
        auth="token",
        methods={"GET": "a:read", "M-SEARCH": "a:read", "*": "a:write"},
        paths=(
            ("/api/admin/*", {"GET": "admin:read", "*": "admin:write"}),
            ("/api/health", "*"),
        ),
        scope="a:other",
        error_style="result",
        upstream_headers=SecretHeaders(
            {"Authorization": "Bearer tok", "X-Tenant": "t-7-x"}
        ),
        connect_timeout=2.0,
        read_timeout=3600.0,
        websocket=False,
    )


@pytest.mark.parametrize(
    ("store", "resolved"),
    [
        ("sqlite:///./patgate.db", "sqlite:////srv/patgate/patgate.db"),
        ("sqlite:///patgate.db", "sqlite:////srv/patgate/patgate.db"),
        ("sqlite:///data/p.db", "sqlite:////srv/patgate/data/p.db"),
        ("sqlite:///../p.db", "sqlite:////srv/p.db"),
        ("sqlite:////var/lib/patgate/p.db", "sqlite:////var/lib/patgate/p.db"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://redis", "redis://redis"),
        ("rediss://user:pw@redis.example.com:6380/1", None),
        ("unix:///run/redis.sock?db=1", None),
        ("redis+sentinel://u:pw@s1:26379,s2:26379/mymaster/1", None),
        ("redis+sentinel://s1/mymaster?sentinel_password=x", None),
        ("redis+cluster://u:pw@n1:7000,n2:7001,n3:7002", None),
    ],
)
def test_store_urls(store, resolved):
    config = parse(f"store: '{store}'")
    assert config.store == (resolved or store)


def test_sqlite_file_of_a_resolved_url():
    assert sqlite_file(parse("").store) == "/srv/patgate/patgate.db"


def test_known_store_url_options_pass_through():
    url = (
        "rediss://u:pw@h:6380/2?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required"
        "&socket_timeout=0.5&health_check_interval=10&socket_keepalive=true"
    )
    assert parse(f"store: '{url}'").store == url


def test_zero_durations_are_zero_in_any_spelling_where_zero_is_allowed():
    for spelling in ("0", "0s", "'0'", "0m"):
        assert parse(f"cache: {{negative_ttl: {spelling}}}").cache.negative_ttl == 0.0
    assert "must be > 0" in error_of("cache: {ttl: 0}")
    assert "greater than zero" in error_of("cache: {ttl: 0s}")


def test_max_stale_defaults_to_at_least_the_ttl():
    assert parse("cache: {ttl: 2m}").cache.max_stale == 120.0
    assert parse("cache: {ttl: 10s}").cache.max_stale == 60.0
    assert parse("cache: {ttl: 10s, max_stale: 10s}").cache.max_stale == 10.0


def test_store_env_overrides_the_file_and_resolves_the_same_way():
    env = {**ENV, "PATGATE_STORE": "sqlite:///./other.db"}
    config = parse("store: redis://x:1/0", env=env)
    assert config.store == "sqlite:////srv/patgate/other.db"
    bad = {**ENV, "PATGATE_STORE": "postgres://x"}
    assert error_of("", env=bad).startswith("$PATGATE_STORE: unsupported store")


def test_secrets_never_print():
    config = parse(
        MINIMAL_ROUTE.replace("}]", ", upstream_headers: {X-Key: '${K}'}}]")
        + "\nstore: redis://:redispw@h:1/0",
        env={"PATGATE_PEPPER": "pepper-value", "K": "header-value"},
    )
    text = repr(config) + str(config)
    for secret in ("pepper-value", "header-value", "redispw"):
        assert secret not in text
    assert str(config.pepper) == "Secret(***)"
    assert repr(config.routes[0].upstream_headers) == "SecretHeaders({'X-Key': '***'})"


def test_config_is_frozen():
    config = parse(MINIMAL_ROUTE)
    with pytest.raises(AttributeError):
        config.workers = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.routes[0].methods["GET"] = "x"  # type: ignore[index]


def test_route_defaults():
    (route,) = parse(MINIMAL_ROUTE).routes
    assert route.realm == "api"
    assert route.credentials == ("bearer", "basic", "query", "header")
    assert route.query_params == ("access_token", "session")
    assert route.api_key_header == "X-API-Key"
    assert route.auth == "token"
    assert route.error_style == "json"
    assert (route.connect_timeout, route.read_timeout) == (5.0, 300.0)
    assert route.websocket is True
    assert route.strip_prefix is False
    assert route.methods == {}
    assert route.paths == ()
    assert route.scope is None
    assert route.case_sensitive is False


def test_warnings():
    config = parse(
        """
routes:
  - {name: everything, prefix: /, upstream: 'http://a', auth: none}
  - name: paas
    prefix: /1.0/
    upstream: http://b
    paths: {/2.0/x: a, /1.0/*: b, /*: c, /1.*: d}
"""
    )
    assert config.warnings == (
        "routes[0] (everything): auth: none on prefix '/' makes every path public",
        "routes[1] (paas).paths./2.0/x: never matches, it is outside the prefix"
        " '/1.0/'",
    )


# --------------------------------------------------------------------------
# What is refused, and how it is said


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("listn: 1.2.3.4:5", "unknown top-level key 'listn' (did you mean 'listen'?)"),
        ("pepper: abc", "unknown top-level key 'pepper' (the pepper is read from"),
        (
            "routes: [{name: files, prefix: /f/, upstrem: 'http://a'}]",
            "routes[0] (files): unknown key 'upstrem' (did you mean 'upstream'?)",
        ),
        ("cache: {ttl: 30x}", "cache.ttl: invalid duration '30x'"),
        ("cache: {ttl: 0}", "cache.ttl: must be > 0, got 0"),
        ("cache: {ttl: -1}", "cache.ttl: must be > 0, got -1"),
        ("cache: {ttl: [1]}", "cache.ttl: expected a duration such as 30s, got a list"),
        ("cache: {max_entries: 0}", "cache.max_entries: must be >= 1, got 0"),
        ("cache: {max_entries: 1.5}", "cache.max_entries: expected a whole number"),
        ("cache: {tll: 1s}", "cache: unknown key 'tll' (did you mean 'ttl'?)"),
        ("cache: 30s", "cache: expected a mapping, got a string"),
        ("listen: 8080", "listen: expected 'host:port' as a string"),
        ("listen: localhost", "listen: expected host:port"),
        ("listen: ':8080'", "listen: expected host:port"),
        ("listen: 'a b:80'", "listen: expected host:port"),
        ("listen: '::1:80'", "listen: expected host:port"),
        ("listen: 'h:99999'", "listen: invalid port '99999'"),
        ("listen: 'h:http'", "listen: invalid port 'http'"),
        ("store: postgres://x/y", "store: unsupported store scheme 'postgres:'"),
        ("store: patgate.db", "store: unsupported store scheme"),
        ("store: 'sqlite://patgate.db'", "store: expected sqlite:///PATH"),
        ("store: 'sqlite:///'", "store: the sqlite URL names no file"),
        ("store: 'sqlite:///x.db?mode=ro'", "store: expected sqlite:///PATH"),
        ("store: 'redis:///0'", "store: redis store URL needs a host"),
        ("store: 'redis://h:port/0'", "store: invalid store URL"),
        ("store: 'redis://h/x'", "store: the path of a redis URL is the database"),
        ("store: 'unix://'", "store: unix store URL needs a socket path"),
        ("store: 'redis+sentinel://s:1'", "store: a redis+sentinel URL names the"),
        ("store: 'redis+cluster://n:1/2'", "store: a redis+cluster URL has no path"),
        (
            "store: 'redis://h:1/0?cluster=true'",
            "store: unknown store URL option 'cluster' (known: db, socket_timeout",
        ),
        (
            "store: 'redis://h:1/0?socket_timeout=soon'",
            "store: store URL option 'socket_timeout' must be seconds",
        ),
        (
            "store: 'redis://h:1/0?socket_timeout=1&socket_timeout=2'",
            "store: store URL option 'socket_timeout' must be seconds",
        ),
        (
            "store: 'redis://h:1/0?ssl_ca_certs=/ca.pem'",
            "store: store URL option 'ssl_ca_certs' needs rediss://",
        ),
        (
            "store: 'rediss://h:1/0?ssl_cert_reqs=maybe'",
            "store: store URL option 'ssl_cert_reqs' must be none, optional",
        ),
        (
            "cache: {max_stale: 8s}",
            "cache.max_stale: 8s is shorter than cache.ttl (30s): a cached token",
        ),
        ("pepper_env: 'MY-PEPPER'", "pepper_env: invalid variable name 'MY-PEPPER'"),
        ("token_prefix: PGT", "token_prefix: invalid prefix 'PGT'"),
        ("workers: 0", "workers: must be between 1 and 1024, got 0"),
        ("workers: true", "workers: expected a whole number, got true/false"),
        ("api: yes please", "api: expected true or false, got a string"),
        ("trusted_proxies: 10.0.0.0/8", "trusted_proxies: expected a list"),
        ("trusted_proxies: [10.0.0.1/8]", "trusted_proxies[0]: invalid CIDR"),
        ("trusted_proxies: [nope]", "trusted_proxies[0]: invalid CIDR"),
        ("limits: {max_body_bytes: -1}", "limits.max_body_bytes: must be >= 0"),
        ("limits: {max_url_bytes: null}", "limits.max_url_bytes: expected a whole"),
        ("usage_flush_interval: 0", "usage_flush_interval: must be > 0"),
        (
            "identity_headers: {user: X-A, token_id: X-A}",
            "identity_headers: the three identity headers must have different names",
        ),
        (
            "identity_headers: {user: X_Patgate_Token_Id}",
            "identity_headers: the three identity headers must have different",
        ),
        (
            "identity_headers: {user: 'X User'}",
            "identity_headers.user: invalid header name 'X User'",
        ),
        (
            "identity_headers: {user: Authorization}",
            "identity_headers.user: 'Authorization' is a header patgate must not",
        ),
        ("scope_sets: {rw: []}", "scope_sets.rw: a scope set needs at least one"),
        ("scope_sets: {rw: files:read}", "scope_sets.rw: expected a list"),
        (
            "scope_sets: {rw: [files:read, 'a b']}",
            "scope_sets.rw[1]: invalid scope 'a b'",
        ),
        ("scope_sets: {rw: ['@ro']}", "scope_sets.rw[0]: unknown scope set '@ro'"),
        (
            "scope_sets: {a: ['@b'], b: ['@a']}",
            "scope_sets.a: scope sets refer to each other in a cycle",
        ),
        ("scope_sets: {'@x': [a]}", "scope_sets: invalid scope set name '@x'"),
        ("routes: {name: x}", "routes: expected a list of routes, got a mapping"),
        ("routes: [files]", "routes[0]: expected a mapping, got a string"),
        ("a: [1, 2", "invalid YAML at line 1, column 9: expected ',' or ']'"),
        ("a: b: c", "invalid YAML at line 1, column 5: mapping values are not"),
        ("cache: {ttl: 1s, ttl: 2s}", "invalid YAML at line 1, column 18: duplicate"),
        ("- a\n- b", "the configuration: expected a mapping, got a list"),
        ("1: x", "the configuration: keys must be strings, got 1"),
    ],
)
def test_top_level_errors(text, message):
    assert error_of(text).startswith(message)


def route_error(route_yaml: str, extra: str = "") -> str:
    return error_of(f"{extra}\nroutes:\n  - {route_yaml}")


BASE = "name: paas, prefix: /1.0/, upstream: 'http://127.0.0.1:8082'"


@pytest.mark.parametrize(
    ("route_yaml", "message"),
    [
        (
            "{prefix: /a/, upstream: 'http://a'}",
            "routes[0]: missing required key 'name'",
        ),
        ("{name: a, upstream: 'http://a'}", "routes[0] (a): missing required key"),
        ("{name: a, prefix: /a/}", "routes[0] (a): missing required key 'upstream'"),
        (
            "{name: 'a b', prefix: /a/, upstream: 'http://a'}",
            "routes[0] (a b).name: invalid route name 'a b'",
        ),
        (
            "{name: a, prefix: a/, upstream: 'http://a'}",
            "routes[0] (a).prefix: a prefix starts with '/'",
        ),
        (
            "{name: a, prefix: /a//b/, upstream: 'http://a'}",
            "routes[0] (a).prefix: write the prefix in canonical form: '/a/b/'",
        ),
        (
            "{name: a, prefix: /a%2fb/, upstream: 'http://a'}",
            "routes[0] (a).prefix: request path holds an encoded separator",
        ),
        (
            "{name: a, prefix: /_patgate/x/, upstream: 'http://a'}",
            "routes[0] (a).prefix: /_patgate/ is reserved",
        ),
        (
            "{name: a, prefix: /a/, upstream: 'ftp://a'}",
            "routes[0] (a).upstream: expected an http(s) URL with a host",
        ),
        (
            "{name: a, prefix: /a/, upstream: 'http:///x'}",
            "routes[0] (a).upstream: expected an http(s) URL with a host",
        ),
        (
            "{name: a, prefix: /a/, upstream: 'http://u:p@a'}",
            "routes[0] (a).upstream: put upstream credentials in upstream_headers",
        ),
        (
            "{name: a, prefix: /a/, upstream: 'http://a/?x=1'}",
            "routes[0] (a).upstream: an upstream URL has no query or fragment",
        ),
        (
            "{name: a, prefix: /a/, upstream: 'http://a:99999'}",
            "routes[0] (a).upstream: invalid URL",
        ),
        (
            "{name: a, prefix: /a/, upstream: 'http://a/x/../y'}",
            "routes[0] (a).upstream: the upstream path is not in canonical form",
        ),
        (
            "{name: a, prefix: /a/, upstream: 'http://a', host: 'a.com:80'}",
            "routes[0] (a).host: expected a host name without port",
        ),
        (f"{{{BASE}, auth: maybe}}", "routes[0] (paas).auth: expected token or none"),
        (
            f"{{{BASE}, auth: none, methods: {{GET: a}}}}",
            "routes[0] (paas).methods: has no effect with auth: none",
        ),
        (
            f"{{{BASE}, error_style: xml}}",
            "routes[0] (paas).error_style: expected json or result, got 'xml'",
        ),
        (
            f"{{{BASE}, credentials: [bearer, cookie]}}",
            "routes[0] (paas).credentials[1]: unknown credential source 'cookie'",
        ),
        (
            f"{{{BASE}, credentials: []}}",
            "routes[0] (paas).credentials: name at least one credential source",
        ),
        (
            f"{{{BASE}, credentials: bearer}}",
            "routes[0] (paas).credentials: expected a list, got a string",
        ),
        (
            f"{{{BASE}, query_params: ['a&b']}}",
            "routes[0] (paas).query_params[0]: invalid query parameter name",
        ),
        (
            f"{{{BASE}, api_key_header: X-Patgate-User}}",
            "routes[0] (paas).api_key_header: 'X-Patgate-User' is one of the identity",
        ),
        (
            f"{{{BASE}, api_key_header: x_patgate_scopes}}",
            "routes[0] (paas).api_key_header: 'x_patgate_scopes' is one of the",
        ),
        (
            f"{{{BASE}, realm: 'a\"b'}}",
            "routes[0] (paas).realm: invalid realm",
        ),
        (
            f"{{{BASE}, methods: {{GET: 'a b'}}}}",
            "routes[0] (paas).methods.GET: invalid scope 'a b': use letters",
        ),
        (
            f"{{{BASE}, methods: {{get: a}}}}",
            "routes[0] (paas).methods.get: invalid method name 'get': upper case or"
            " '*' (did you mean 'GET'?)",
        ),
        (
            f"{{{BASE}, methods: {{GET: '@files-rw'}}}}",
            "routes[0] (paas).methods.GET: scope set '@files-rw': a route requires",
        ),
        (
            f"{{{BASE}, methods: {{GET: '@nope'}}}}",
            "routes[0] (paas).methods.GET: unknown scope set '@nope'",
        ),
        (
            f"{{{BASE}, methods: {{GET: 'node:/x:r'}}}}",
            "routes[0] (paas).methods.GET: node scopes restrict tokens",
        ),
        (
            f"{{{BASE}, methods: {{GET: 5}}}}",
            "routes[0] (paas).methods.GET: expected a string, got a number",
        ),
        (
            f"{{{BASE}, methods: [GET]}}",
            "routes[0] (paas).methods: expected a mapping, got a list",
        ),
        (
            f"{{{BASE}, scope: 'x y'}}",
            "routes[0] (paas).scope: invalid scope 'x y'",
        ),
        (
            f"{{{BASE}, paths: {{/1.0/a: {{post: x}}}}}}",
            "routes[0] (paas).paths./1.0/a.post: invalid method name 'post'",
        ),
        (
            f"{{{BASE}, paths: {{/1.0/a: null}}}}",
            "routes[0] (paas).paths./1.0/a: expected a string, got null",
        ),
        (
            f"{{{BASE}, paths: {{1.0/a: x}}}}",
            "routes[0] (paas).paths.1.0/a: a path pattern starts with '/'",
        ),
        (
            f"{{{BASE}, paths: {{'/1.0/./a': x}}}}",
            "routes[0] (paas).paths./1.0/./a: write the pattern in canonical form",
        ),
        (
            f"{{{BASE}, paths: {{'/1.0/%7Ea': x}}}}",
            "routes[0] (paas).paths./1.0/%7Ea: write the pattern in canonical form",
        ),
        (
            f"{{{BASE}, upstream_headers: {{Authorization: '${{NOPE}}'}}}}",
            "routes[0] (paas).upstream_headers.Authorization: environment variable"
            " 'NOPE' is not set",
        ),
        (
            f"{{{BASE}, upstream_headers: {{Host: x}}}}",
            "routes[0] (paas).upstream_headers.Host: 'Host' is a header patgate",
        ),
        (
            f"{{{BASE}, upstream_headers: {{Transfer_Encoding: x}}}}",
            "routes[0] (paas).upstream_headers.Transfer_Encoding: 'Transfer_Encoding'"
            " is a header",
        ),
        (
            f"{{{BASE}, upstream_headers: {{X-Patgate-User: x}}}}",
            "routes[0] (paas).upstream_headers.X-Patgate-User: 'X-Patgate-User' is",
        ),
        (
            f"{{{BASE}, upstream_headers: {{X-A: 5}}}}",
            "routes[0] (paas).upstream_headers.X-A: expected a string, got a number",
        ),
        (
            f"{{{BASE}, connect_timeout: fast}}",
            "routes[0] (paas).connect_timeout: invalid duration 'fast'",
        ),
        (
            f"{{{BASE}, websocket: 1}}",
            "routes[0] (paas).websocket: expected true or false, got a number",
        ),
        (
            f"{{{BASE}, case_sensitive: yes please}}",
            "routes[0] (paas).case_sensitive: expected true or false",
        ),
        (
            f"{{{BASE}, paths: {{'/1.0/a;b': x}}}}",
            "routes[0] (paas).paths./1.0/a;b: request path holds ';'",
        ),
        (
            f"{{{BASE}, paths: {{/1.0/a%3Bb: x}}}}",
            "routes[0] (paas).paths./1.0/a%3Bb: a path pattern cannot hold an"
            " encoded ';', '?' or '#'",
        ),
        (
            f"{{{BASE}, paths: {{/1.0/a%3F: x}}}}",
            "routes[0] (paas).paths./1.0/a%3F: a path pattern cannot hold",
        ),
        (
            "{name: a, prefix: /a%23/, upstream: 'http://a'}",
            "routes[0] (a).prefix: a prefix cannot hold an encoded ';', '?' or '#'",
        ),
        (
            "{name: a, prefix: '/a;b/', upstream: 'http://a'}",
            "routes[0] (a).prefix: request path holds ';'",
        ),
    ],
)
def test_route_errors(route_yaml, message):
    extra = "scope_sets: {files-rw: [files:read]}"
    assert route_error(route_yaml, extra).startswith(message)


def test_control_characters_in_injected_headers_are_refused_without_echo():
    env = {**ENV, "BAD": "tok\r\nX-Evil: 1"}
    message = error_of(
        f"routes:\n  - {{{BASE}, upstream_headers: {{X-A: '${{BAD}}'}}}}", env=env
    )
    assert message == (
        "routes[0] (paas).upstream_headers.X-A: the value holds a control character"
    )


def test_duplicate_route_names_and_prefixes():
    message = error_of(
        "routes:\n"
        "  - {name: a, prefix: /a/, upstream: 'http://x'}\n"
        "  - {name: a, prefix: /b/, upstream: 'http://x'}\n"
    )
    assert message == "routes[1] (a): name 'a' is already used by routes[0] (a)"
    message = error_of(
        "routes:\n"
        "  - {name: a, prefix: /a/, upstream: 'http://x'}\n"
        "  - {name: b, prefix: /a, upstream: 'http://x'}\n"
    )
    assert message == "routes[1] (b): prefix '/a' is already routed by routes[0] (a)"
    config = parse(
        "routes:\n"
        "  - {name: a, prefix: /a/, upstream: 'http://x'}\n"
        "  - {name: b, prefix: /a/, upstream: 'http://x', host: a.example.com}\n"
    )
    assert len(config.routes) == 2


def test_prefixes_differing_only_in_case_are_one_prefix_unless_both_say_so():
    routes = (
        "routes:\n"
        "  - {name: a, prefix: /api/, upstream: 'http://x', case_sensitive: %s}\n"
        "  - {name: b, prefix: /API, upstream: 'http://x', case_sensitive: %s}\n"
    )
    for first, second in (("false", "false"), ("true", "false"), ("false", "true")):
        assert error_of(routes % (first, second)) == (
            "routes[1] (b): prefix '/API' is already routed by routes[0] (a)"
        )
    config = parse(routes % ("true", "true"))
    assert [route.case_sensitive for route in config.routes] == [True, True]


def test_patterns_that_are_one_path_are_warned_about():
    config = parse(
        "routes:\n"
        "  - name: a\n"
        "    prefix: /a/\n"
        "    upstream: 'http://x'\n"
        "    paths: {/a/Admin: x, /a/admin/: y, /a/b: z}\n"
        "  - name: b\n"
        "    prefix: /b/\n"
        "    upstream: 'http://x'\n"
        "    case_sensitive: true\n"
        "    paths: {/b/Admin: x, /b/admin: y, /b/admin/: z}\n"
    )
    assert config.warnings == (
        "routes[0] (a).paths./a/admin/: '/a/Admin' above is the same path in"
        " another letter case; a request for it needs the scopes of both (or set"
        " case_sensitive: true)",
        "routes[1] (b).paths./b/admin/: never matches, '/b/admin' above matches the"
        " same paths (a trailing slash does not count)",
    )


def test_node_scopes_in_scope_sets_are_stored_canonical():
    config = parse(
        "scope_sets:\n  team: ['node:/dav//team/%7eshared/:rw', files:read]\n"
    )
    assert config.scope_sets["team"] == ("node:/dav/team/~shared:rw", "files:read")
    message = error_of("scope_sets:\n  team: ['node:/dav/x,*,admin:rw']\n")
    assert message.startswith("scope_sets.team[0]: invalid node path '/dav/x,*,admin'")


def test_duplicate_method_keys_are_refused():
    message = error_of(
        "routes:\n"
        "  - name: a\n"
        "    prefix: /a/\n"
        "    upstream: http://x\n"
        "    methods:\n"
        "      GET: a:read\n"
        "      GET: a:write\n"
    )
    assert message.startswith("invalid YAML at line 7, column 7: duplicate key 'GET'")


def test_auth_none_route_with_realm_and_timeouts_is_fine():
    config = parse(
        "routes: [{name: p, prefix: /p/, upstream: 'http://x', auth: none,"
        " realm: r, read_timeout: 5s}]"
    )
    assert config.routes[0].auth == "none"


# --------------------------------------------------------------------------
# load_config


def test_load_config_reads_the_named_file(tmp_path):
    path = tmp_path / "conf" / "gw.yaml"
    path.parent.mkdir()
    path.write_text(MINIMAL_ROUTE)
    config = load_config(str(path), env=ENV)
    assert config.base_dir == str(path.parent)
    assert config.store == f"sqlite:///{path.parent / 'patgate.db'}"


def test_load_config_uses_patgate_config_env(tmp_path):
    path = tmp_path / "gw.yaml"
    path.write_text("workers: 3")
    assert load_config(None, env={**ENV, "PATGATE_CONFIG": str(path)}).workers == 3
    path2 = tmp_path / "other.yaml"
    path2.write_text("workers: 5")
    explicit = load_config(str(path2), env={**ENV, "PATGATE_CONFIG": str(path)})
    assert explicit.workers == 5


def test_load_config_defaults_to_gateway_yaml_in_the_working_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"no configuration: ./gateway.yaml not"):
        load_config(None, env={})
    (tmp_path / "gateway.yaml").write_text("workers: 2")
    config = load_config(None, env={})
    assert config.workers == 2
    assert config.base_dir == str(tmp_path)


def test_load_config_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope.yaml: file not found"):
        load_config(str(missing), env={})
    with pytest.raises(ConfigError, match=r"nope.yaml \(from \$PATGATE_CONFIG\)"):
        load_config(None, env={"PATGATE_CONFIG": str(missing)})
    broken = tmp_path / "broken.yaml"
    broken.write_text("cache: {ttl: 30x}")
    with pytest.raises(ConfigError) as caught:
        load_config(str(broken), env={})
    assert str(caught.value) == (
        f"{broken}: cache.ttl: invalid duration '30x': expected seconds or a number"
        " and a unit s, m, h, d or w (e.g. 3600, 90s, 20d)"
    )
    with pytest.raises(ConfigError, match=r"cannot read"):
        load_config(str(tmp_path), env={})
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match=r"binary.yaml: cannot read"):
        load_config(str(binary), env={})


def test_pass_headers_are_stored_folded_and_default_to_none():
    (route,) = parse(MINIMAL_ROUTE).routes
    assert route.pass_headers == ()
    (route,) = parse(
        f"routes: [{{{BASE}, pass_headers: [X-HTTP-Method-Override,"
        " X_Original_URL, x-http-method-override]}]"
    ).routes
    assert route.pass_headers == ("x-http-method-override", "x-original-url")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[X-Patgate-User]", "pass_headers[0]: 'X-Patgate-User' is not a header"),
        ("[X-Real-IP]", "pass_headers[0]: 'X-Real-IP' is not a header"),
        ("[X-Original-URL, Cookie]", "pass_headers[1]: 'Cookie' is not a header"),
        ("X-Original-URL", "pass_headers: expected a list"),
    ],
)
def test_pass_headers_only_name_override_headers(value, message):
    error = route_error(f"{{{BASE}, pass_headers: {value}}}")
    assert error.startswith(f"routes[0] (paas).{message}"), error


def test_header_timeout_is_a_positive_duration():
    assert parse("limits: {header_timeout: 5s}").limits.header_timeout == 5.0
    assert parse("limits: {header_timeout: 0.5}").limits.header_timeout == 0.5
    assert error_of("limits: {header_timeout: 0}").startswith(
        "limits.header_timeout: must be > 0"
    )
    assert error_of("limits: {header_timeout: soon}").startswith(
        "limits.header_timeout: invalid duration"
    )


# --------------------------------------------------------------------------
# The login budget


def test_login_budget_defaults_to_the_failed_auth_limit():
    assert parse(MINIMAL_ROUTE).limits.login_limit == 30
    same = parse("limits: {failed_auth_per_minute: 7}\n" + MINIMAL_ROUTE)
    assert same.limits.login_limit == 7
    own = parse(
        "limits: {failed_auth_per_minute: 7, logins_per_minute: 100}\n" + MINIMAL_ROUTE
    )
    assert (own.limits.failed_auth_per_minute, own.limits.login_limit) == (7, 100)
    off = parse("limits: {logins_per_minute: 0}\n" + MINIMAL_ROUTE)
    assert off.limits.login_limit == 0
    assert error_of("limits: {logins_per_minute: -1}").startswith(
        "limits.logins_per_minute:"
    )


# --------------------------------------------------------------------------
# Separate listeners (manage:, ops:)


def test_separate_listeners_for_the_page_and_api_and_for_ops():
    config = parse(
        "manage: {listen: '127.0.0.1:8090'}\n"
        "ops: {listen: '[::1]:9100'}\n" + MINIMAL_ROUTE
    )
    assert config.manage_listen == ("127.0.0.1", 8090)
    assert config.ops_listen == ("::1", 9100)
    default = parse(MINIMAL_ROUTE)
    assert (default.manage_listen, default.ops_listen) == (None, None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("manage: {}", "manage: needs listen: host:port"),
        ("manage: '127.0.0.1:8090'", "manage: expected a mapping"),
        ("ops: {listen: 9100}", "ops.listen: expected 'host:port' as a string"),
        ("ops: {listen: 'h:1', port: 2}", "ops: unknown key 'port'"),
        (
            "listen: '127.0.0.1:8080'\nmanage: {listen: '127.0.0.1:8080'}",
            "manage.listen: 127.0.0.1:8080 is already listen;",
        ),
        (
            "manage: {listen: 'h:9'}\nops: {listen: 'h:9'}",
            "ops.listen: h:9 is already manage.listen;",
        ),
    ],
)
def test_separate_listener_errors(text, message):
    assert error_of(f"{text}\n{MINIMAL_ROUTE}").startswith(message)


def test_port_zero_listeners_may_share_the_spelling():
    # Port 0: the kernel picks a free port for each.
    config = parse(
        "listen: '127.0.0.1:0'\nmanage: {listen: '127.0.0.1:0'}\n" + MINIMAL_ROUTE
    )
    assert config.manage_listen == ("127.0.0.1", 0)


TRUSTED = "trusted_proxies: [127.0.0.1/32]\n"


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("forward_auth: {}", "/_patgate/auth"),
        ("forward_auth:", "/_patgate/auth"),
        ("forward_auth: {path: /_patgate/decide}", "/_patgate/decide"),
        ("forward_auth: {path: /_patgate/auth/v1}", "/_patgate/auth/v1"),
    ],
)
def test_forward_auth_is_on_when_the_section_is_present(text, path):
    config = parse(TRUSTED + text)
    assert config.forward_auth is not None
    assert config.forward_auth.path == path
    assert parse(TRUSTED).forward_auth is None
    assert config.forward_auth.listen is None  # the main listener


def test_forward_auth_can_have_a_listener_of_its_own():
    config = parse(TRUSTED + "forward_auth: {listen: 127.0.0.1:8082}")
    assert config.forward_auth is not None
    assert config.forward_auth.listen == ("127.0.0.1", 8082)
    assert config.forward_auth.path == "/_patgate/auth"


# incident response: webhooks, delivery, expiry warnings, rotation reuse


def test_webhooks_and_their_delivery_options():
    config = parse(
        "webhooks:\n"
        "  - {url: 'https://hooks.example.com/p', secret: '${HOOK}',"
        " events: [token.revoked, canary.used]}\n"
        "  - {url: 'http://127.0.0.1:9000/all', secret: literal-secret}\n"
        "webhook_delivery: {lease: 5s, timeout: 3, attempts: 3, first_retry: 2}\n"
        "expiry_warnings: [1d, 14d, 1d]\n"
        "rotation_reuse: alert\n",
        {**ENV, "HOOK": "from-the-environment"},
    )
    first, second = config.webhooks
    assert first.secret.value == b"from-the-environment"
    assert "from-the-environment" not in repr(config)
    assert first.wants("canary.used")
    assert not first.wants("token.created")
    assert second.wants("token.created")
    delivery = config.webhook_delivery
    assert (delivery.lease, delivery.attempts, delivery.first_retry) == (5.0, 3, 2.0)
    assert delivery.timeout == 3.0
    assert config.expiry_warnings == (14 * 86400.0, 86400.0)
    assert config.rotation_reuse == "alert"
    defaults = parse("")
    assert defaults.webhooks == ()
    assert defaults.rotation_reuse == "revoke"
    assert defaults.expiry_warnings == (7 * 86400.0, 86400.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "forward_auth: {}",
            "forward_auth: the decision endpoint answers only the proxies in"
            " trusted_proxies, and the list is empty",
        ),
        (
            TRUSTED + "forward_auth: {pth: /_patgate/x}",
            "forward_auth: unknown key 'pth' (did you mean 'path'?)",
        ),
        (TRUSTED + "forward_auth: /_patgate/x", "forward_auth: expected a mapping"),
        (TRUSTED + "forward_auth: {path: 3}", "forward_auth.path: expected a string"),
        (
            TRUSTED + "forward_auth: {path: /auth}",
            "forward_auth.path: '/auth' is not under /_patgate/",
        ),
        (
            TRUSTED + "forward_auth: {path: /_patgate}",
            "forward_auth.path: '/_patgate' is not under /_patgate/",
        ),
        (
            TRUSTED + "forward_auth: {path: /_patgate/api/auth}",
            "forward_auth.path: /_patgate/api is one of patgate's own endpoints",
        ),
        (
            TRUSTED + "forward_auth: {path: /_patgate/healthz}",
            "forward_auth.path: /_patgate/healthz is one of patgate's own",
        ),
        (
            TRUSTED + "forward_auth: {path: /_patgate/auth/}",
            "forward_auth.path: expected a plain path such as /_patgate/auth",
        ),
        (
            TRUSTED + "forward_auth: {path: /_patgate/%61uth}",
            "forward_auth.path: expected a plain path such as /_patgate/auth",
        ),
        (
            TRUSTED + "forward_auth: {path: /_patgate/../auth}",
            "forward_auth.path: ",
        ),
        (
            TRUSTED + "forward_auth: {path: _patgate/auth}",
            "forward_auth.path: expected a plain path such as /_patgate/auth",
        ),
        (
            TRUSTED + "forward_auth: {listen: nowhere}",
            "forward_auth.listen: ",
        ),
        (
            TRUSTED + "listen: 127.0.0.1:8080\nforward_auth: {listen: 127.0.0.1:8080}",
            "forward_auth.listen: 127.0.0.1:8080 is already listen;",
        ),
        (
            TRUSTED
            + "ops: {listen: 127.0.0.1:9000}\nforward_auth: {listen: 127.0.0.1:9000}",
            "forward_auth.listen: 127.0.0.1:9000 is already ops.listen;",
        ),
    ],
)
def test_forward_auth_errors(text, message):
    assert error_of(text).startswith(message)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("webhooks: [{url: 'ftp://x/', secret: s}]", "webhooks[0].url: expected an"),
        ("webhooks: [{url: 'http://x/'}]", "webhooks[0]: secret is required"),
        ("webhooks: [{url: 'http://x/', secret: ''}]", "must not be empty"),
        (
            "webhooks: [{url: 'http://x/', secret: '${NOPE}'}]",
            "environment variable 'NOPE' is not set",
        ),
        (
            "webhooks: [{url: 'http://x/', secret: s, events: [token.stolen]}]",
            "unknown event 'token.stolen'",
        ),
        ("webhooks: [{url: 'http://x/', secret: s, retries: 3}]", "retries"),
        ("webhook_delivery: {attempts: 0}", "webhook_delivery.attempts"),
        (
            "webhook_delivery: {lease: 5s}",
            "must be longer than webhook_delivery.timeout",
        ),
        ("expiry_warnings: 7d", "expected a list"),
        ("rotation_reuse: kill", "expected revoke, alert or ignore"),
    ],
)
def test_bad_incident_settings_are_refused_with_one_line(text: str, message: str):
    assert message in error_of(text)
