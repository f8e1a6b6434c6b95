"""gateway.yaml → a frozen :class:`Config`, with precise errors.

:func:`parse_config` is pure (text, environment and base directory in, Config
out) and refuses anything it does not understand: unknown keys (with a "did
you mean"), wrong types, duplicate YAML keys, invalid scopes, paths that are
not canonical. Every :class:`~patgate.errors.ConfigError` is one line that
names where the problem is, e.g. ``routes[1] (paas).methods.GET: invalid
scope 'a b': ...``. :func:`load_config` finds and reads the file.

Secrets never print: the pepper is a :class:`Secret`, injected upstream
header values live in a :class:`SecretHeaders` mapping whose ``repr`` hides
them, and the store URL (which may hold a Redis password) is left out of
``repr(Config)``.

The store URL follows SQLAlchemy's convention for SQLite: ``sqlite:///x.db``
and ``sqlite:///./x.db`` are relative, ``sqlite:////var/lib/x.db`` is
absolute. A relative path is resolved against ``base_dir`` (the directory of
the config file, not the working directory), so ``Config.store`` always names
an absolute file. ``$PATGATE_STORE`` overrides ``store`` and is resolved the
same way.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import yaml

from patgate.durations import parse_duration
from patgate.errors import ConfigError, UsageError
from patgate.paths import PathError, normalise_path
from patgate.scopes import parse_node_scope, path_within, validate_scope
from patgate.tokens import DEFAULT_PREFIX, PREFIX_PATTERN

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_PATH",
    "STORE_ENV",
    "CacheConfig",
    "Config",
    "IdentityHeaders",
    "Limits",
    "MethodMap",
    "RouteConfig",
    "Secret",
    "SecretHeaders",
    "load_config",
    "parse_config",
    "sqlite_file",
]

CONFIG_ENV = "PATGATE_CONFIG"
STORE_ENV = "PATGATE_STORE"
DEFAULT_CONFIG_PATH = "./gateway.yaml"
CREDENTIAL_SOURCES = ("bearer", "basic", "query", "header")
_QUERY_PARAMS = ("access_token", "session")

MethodMap = Mapping[str, str]
T = TypeVar("T")


@dataclass(frozen=True, slots=True, repr=False)
class Secret:
    """A secret from the environment; never shown by ``repr`` or ``str``."""

    value: bytes

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__


class SecretHeaders(Mapping[str, str]):
    """Header name → value, read-only, with the values hidden from ``repr``."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        self._items = dict(items or {})

    def __getitem__(self, name: str) -> str:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return "SecretHeaders({" + ", ".join(f"{k!r}: '***'" for k in self) + "})"


def _frozen(items: Mapping[str, T] | None = None) -> Mapping[str, T]:
    return MappingProxyType(dict(items or {}))


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """Token cache bounds; all times in seconds."""

    ttl: float = 30.0
    negative_ttl: float = 5.0
    max_entries: int = 100_000
    max_stale: float = 60.0


@dataclass(frozen=True, slots=True)
class IdentityHeaders:
    user: str = "X-Patgate-User"
    token_id: str = "X-Patgate-Token-Id"  # noqa: S105 - a header name
    scopes: str = "X-Patgate-Scopes"


@dataclass(frozen=True, slots=True)
class Limits:
    max_header_bytes: int = 8190
    max_url_bytes: int = 8190
    max_body_bytes: int | None = None
    failed_auth_per_minute: int = 30


@dataclass(frozen=True, slots=True)
class RouteConfig:
    """One entry of ``routes:``. ``realm`` defaults to the route's name.

    ``paths`` keeps the file's order (first match wins); a value is a scope or
    a method map. Forward to ``upstream.rstrip("/") + upstream path``.
    """

    name: str
    prefix: str
    upstream: str
    host: str | None = None
    strip_prefix: bool = False
    credentials: tuple[str, ...] = CREDENTIAL_SOURCES
    query_params: tuple[str, ...] = _QUERY_PARAMS
    api_key_header: str = "X-API-Key"
    realm: str = ""
    auth: Literal["token", "none"] = "token"
    methods: MethodMap = field(default_factory=_frozen, hash=False)
    paths: tuple[tuple[str, str | MethodMap], ...] = field(default=(), hash=False)
    scope: str | None = None
    error_style: Literal["json", "result"] = "json"
    upstream_headers: Mapping[str, str] = field(
        default_factory=SecretHeaders, hash=False
    )
    connect_timeout: float = 5.0
    read_timeout: float = 300.0
    websocket: bool = True

    def __post_init__(self) -> None:
        if not self.realm:
            object.__setattr__(self, "realm", self.name)


@dataclass(frozen=True, slots=True)
class Config:
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    store: str = field(default="sqlite:///./patgate.db", repr=False)
    pepper: Secret = Secret(b"")
    pepper_env: str = "PATGATE_PEPPER"
    token_prefix: str = DEFAULT_PREFIX
    workers: int = 1
    cache: CacheConfig = CacheConfig()
    identity_headers: IdentityHeaders = IdentityHeaders()
    scope_sets: Mapping[str, tuple[str, ...]] = field(
        default_factory=_frozen, hash=False
    )
    routes: tuple[RouteConfig, ...] = ()
    trusted_proxies: tuple[str, ...] = ()
    limits: Limits = Limits()
    usage_flush_interval: float = 1.0
    api: bool = True
    base_dir: str = "."
    warnings: tuple[str, ...] = ()


# --------------------------------------------------------------------------
# Reading YAML values with their location


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of keeping the last."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Any:
    seen: set[object] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, str | int | float | bool) and key in seen:
            # SECURITY: a second "GET:" silently replacing the first would
            # change what a route requires without anyone noticing.
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _load_yaml(text: str) -> object:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"invalid YAML{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {' '.join(str(exc).split())}") from None


def _at(where: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


def _fail(where: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {message}" if where else message)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _mapping(value: object, where: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise _fail(where, f"expected a mapping, got {_kind(value)}")
    for key in value:
        if not isinstance(key, str):
            raise _fail(where, f"keys must be strings, got {key!r}")
    return value


def _check_keys(
    data: Mapping[str, object],
    allowed: Sequence[str],
    where: str,
    hints: Mapping[str, str] | None = None,
) -> None:
    for key in data:
        if key in allowed:
            continue
        hint = (hints or {}).get(key)
        if hint is None:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean {close[0]!r}?" if close else None
        known = hint or "known keys: " + ", ".join(allowed)
        label = f"{where}: unknown key" if where else "unknown top-level key"
        raise ConfigError(f"{label} {key!r} ({known})")


def _string(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise _fail(where, f"expected a string, got {_kind(value)}")
    return value


def _matching(value: object, where: str, pattern: re.Pattern[str], what: str) -> str:
    text = _string(value, where)
    if not pattern.fullmatch(text):
        raise _fail(where, f"invalid {what} {text!r}")
    return text


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(where, f"expected true or false, got {_kind(value)}")
    return value


def _integer(value: object, where: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(where, f"expected a whole number, got {_kind(value)}")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise _fail(where, f"must be {bound}, got {value}")
    return value


def _seconds(value: object, where: str, *, zero_ok: bool = False) -> float:
    """A duration (``30s``, ``5m``) or a plain number of seconds."""
    if isinstance(value, str):
        try:
            return float(parse_duration(value))
        except UsageError as exc:
            raise _fail(where, str(exc)) from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(where, f"expected a duration such as 30s, got {_kind(value)}")
    if value < 0 or (value == 0 and not zero_ok) or value != value:
        raise _fail(where, f"must be {'>= 0' if zero_ok else '> 0'}, got {value}")
    return float(value)


def _string_list(value: object, where: str) -> list[str]:
    if not isinstance(value, list):
        raise _fail(where, f"expected a list, got {_kind(value)}")
    return [_string(item, _at(where, i)) for i, item in enumerate(value)]


# Sections left empty in YAML ("routes:" with every route commented out) are
# null; they mean the same as leaving the key out.
# fmt: off
_SECTIONS = frozenset((
    "cache", "identity_headers", "scope_sets", "routes", "trusted_proxies",
    "limits", "methods", "paths", "upstream_headers",
))
# fmt: on


def _field_names(cls: type) -> tuple[str, ...]:
    """The YAML keys of a section: the names of its dataclass fields."""
    return tuple(item.name for item in fields(cls))


def _take(
    data: Mapping[str, object],
    key: str,
    where: str,
    read: Callable[[object, str], T],
    default: T,
) -> T:
    if key not in data or (data[key] is None and key in _SECTIONS):
        return default
    return read(data[key], _at(where, key))


# --------------------------------------------------------------------------
# The top level

# fmt: off
_TOP_KEYS = (
    "listen", "store", "pepper_env", "token_prefix", "workers", "cache",
    "identity_headers", "scope_sets", "routes", "trusted_proxies", "limits",
    "usage_flush_interval", "api",
)
# fmt: on
_TOP_HINTS = {
    "pepper": "the pepper is read from the environment variable named by"
    " pepper_env, never from the file",
    "route": "did you mean 'routes'?",
}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9-]+)*\.?")


_NO_SETS: dict[str, tuple[str, ...]] = {}
_NO_ROUTES: tuple[RouteConfig, ...] = ()


def parse_config(text: str, env: Mapping[str, str], base_dir: str) -> Config:
    """The Config in ``text``; raises ConfigError naming the faulty key.

    ``env`` supplies ``$PATGATE_STORE``, the pepper and ``${NAME}`` values of
    ``upstream_headers``; ``base_dir`` anchors relative SQLite paths.
    """
    loaded = _load_yaml(text)
    data = {} if loaded is None else _mapping(loaded, "the configuration")
    _check_keys(data, _TOP_KEYS, "", _TOP_HINTS)
    base_dir = os.path.abspath(base_dir)
    warnings: list[str] = []
    host, port = _take(data, "listen", "", _parse_listen, ("127.0.0.1", 8080))
    pepper_env = _take(
        data, "pepper_env", "", _pattern_reader(_ENV_NAME, "variable name"), ""
    )
    pepper_env = pepper_env or "PATGATE_PEPPER"
    pepper = env.get(pepper_env, "")
    if not pepper:
        warnings.append(
            f"pepper is empty: set ${pepper_env} to a long random value before"
            " creating tokens (token hashes depend on it)"
        )
    identity = _take(
        data, "identity_headers", "", _parse_identity_headers, IdentityHeaders()
    )
    scope_sets = _take(data, "scope_sets", "", _parse_scope_sets, _NO_SETS)
    context = _RouteContext(env, scope_sets, identity, warnings)
    routes = _take(data, "routes", "", context.parse_routes, _NO_ROUTES)
    if not routes:
        warnings.append("no routes: the gateway will answer 404 to every request")
    return Config(
        listen_host=host,
        listen_port=port,
        store=_parse_store_setting(data, env, base_dir),
        pepper=Secret(pepper.encode("utf-8")),
        pepper_env=pepper_env,
        token_prefix=_take(
            data, "token_prefix", "", _pattern_reader(PREFIX_PATTERN, "prefix"), ""
        )
        or DEFAULT_PREFIX,
        workers=_take(data, "workers", "", lambda v, w: _integer(v, w, 1, 1024), 1),
        cache=_take(data, "cache", "", _parse_cache, CacheConfig()),
        identity_headers=identity,
        scope_sets=_frozen(scope_sets),
        routes=routes,
        trusted_proxies=_take(data, "trusted_proxies", "", _parse_networks, ()),
        limits=_take(data, "limits", "", _parse_limits, Limits()),
        usage_flush_interval=_take(data, "usage_flush_interval", "", _seconds, 1.0),
        api=_take(data, "api", "", _bool, True),
        base_dir=base_dir,
        warnings=tuple(warnings),
    )


def _pattern_reader(
    pattern: re.Pattern[str], what: str
) -> Callable[[object, str], str]:
    return lambda value, where: _matching(value, where, pattern, what)


def _parse_listen(value: object, where: str) -> tuple[str, int]:
    if not isinstance(value, str):
        raise _fail(
            where,
            f"expected 'host:port' as a string (e.g. 127.0.0.1:8080), got"
            f" {_kind(value)}; quote it",
        )
    host, sep, port_text = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        valid_host = _is_ip(host, version=6)
    else:
        valid_host = bool(_HOSTNAME.fullmatch(host)) or _is_ip(host, version=4)
    if not sep or not valid_host:
        raise _fail(where, f"expected host:port (e.g. 127.0.0.1:8080), got {value!r}")
    if not port_text.isdigit() or int(port_text) > 65535:
        raise _fail(where, f"invalid port {port_text!r} (0-65535)")
    return host, int(port_text)


def _is_ip(text: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False


def _parse_store_setting(
    data: Mapping[str, object], env: Mapping[str, str], base_dir: str
) -> str:
    if env.get(STORE_ENV):
        return _parse_store(env[STORE_ENV], f"${STORE_ENV}", base_dir)
    raw = _take(data, "store", "", _string, "sqlite:///./patgate.db")
    return _parse_store(raw, "store", base_dir)


def _parse_store(url: str, where: str, base_dir: str) -> str:
    scheme = url.partition(":")[0].lower()
    if scheme == "sqlite":
        return _resolve_sqlite(url, where, base_dir)
    if scheme not in ("redis", "rediss", "unix"):
        raise _fail(
            where,
            f"unsupported store scheme {scheme + ':' if scheme else url!r} (expected"
            " sqlite:///PATH, redis://HOST:PORT/DB, rediss://... or unix:///SOCKET)",
        )
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError as exc:
        raise _fail(where, f"invalid store URL: {exc}") from None
    if scheme == "unix" and not parts.path:
        raise _fail(where, "unix store URL needs a socket path: unix:///path/to.sock")
    if scheme != "unix" and not parts.hostname:
        raise _fail(where, f"{scheme} store URL needs a host: {scheme}://HOST:PORT/DB")
    if scheme != "unix" and parts.path.strip("/") and not parts.path[1:].isdigit():
        raise _fail(where, "the path of a redis URL is the database number, e.g. /0")
    return url


def _resolve_sqlite(url: str, where: str, base_dir: str) -> str:
    if not url.startswith("sqlite:///") or "?" in url or "#" in url:
        raise _fail(where, "expected sqlite:///PATH (e.g. sqlite:///./patgate.db)")
    path = url[len("sqlite:///") :]
    if path == ":memory:":
        return url
    if not path or path.endswith("/"):
        raise _fail(where, "the sqlite URL names no file")
    return "sqlite:///" + os.path.normpath(os.path.join(base_dir, path))


def sqlite_file(store_url: str) -> str:
    """The file (or ``:memory:``) named by a ``sqlite:///`` URL from a Config."""
    return store_url[len("sqlite:///") :]


def _parse_cache(value: object, where: str) -> CacheConfig:
    data = _mapping(value, where)
    _check_keys(data, _field_names(CacheConfig), where)
    default = CacheConfig()

    def zero_ok(v: object, w: str) -> float:
        return _seconds(v, w, zero_ok=True)

    return CacheConfig(
        ttl=_take(data, "ttl", where, _seconds, default.ttl),
        negative_ttl=_take(data, "negative_ttl", where, zero_ok, default.negative_ttl),
        max_entries=_take(
            data, "max_entries", where, lambda v, w: _integer(v, w, 1), 100_000
        ),
        max_stale=_take(data, "max_stale", where, zero_ok, default.max_stale),
    )


# Headers that frame the message or that the gateway itself sets: never
# configurable. Identity and API-key headers may not be Authorization or
# Cookie either; injected upstream headers may (that is what they are for).
# fmt: off
_FRAMING_HEADERS = frozenset((
    "connection", "content-length", "content-type", "destination", "host",
    "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "transfer-encoding", "upgrade", "x-forwarded-for",
    "x-forwarded-host", "x-forwarded-proto",
))
# fmt: on
_CLIENT_HEADERS = _FRAMING_HEADERS | {"authorization", "cookie"}


def _header_name(
    value: object, where: str, reserved: frozenset[str] = _CLIENT_HEADERS
) -> str:
    name = _matching(value, where, _HEADER_NAME, "header name")
    if _fold(name) in reserved:
        raise _fail(where, f"{name!r} is a header patgate must not take over")
    return name


def _parse_identity_headers(value: object, where: str) -> IdentityHeaders:
    data = _mapping(value, where)
    _check_keys(data, _field_names(IdentityHeaders), where)
    default = IdentityHeaders()
    headers = IdentityHeaders(
        user=_take(data, "user", where, _header_name, default.user),
        token_id=_take(data, "token_id", where, _header_name, default.token_id),
        scopes=_take(data, "scopes", where, _header_name, default.scopes),
    )
    folded = {_fold(name) for name in (headers.user, headers.token_id, headers.scopes)}
    if len(folded) != 3:
        raise _fail(where, "the three identity headers must have different names")
    return headers


def _fold(header: str) -> str:
    """A header name as upstreams that fold '-' and '_' (WSGI, CGI) see it."""
    return header.lower().replace("_", "-")


_SET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _parse_scope_sets(value: object, where: str) -> dict[str, tuple[str, ...]]:
    data = _mapping(value, where)
    raw: dict[str, list[str]] = {}
    for name, members in data.items():
        at = _at(where, name)
        _matching(name, where, _SET_NAME, "scope set name")
        raw[name] = _string_list(members, at)
        if not raw[name]:
            # SECURITY: expanding an empty set yields no scopes, which the
            # token service reads as "*" (full access).
            raise _fail(at, "a scope set needs at least one scope")
    return {name: _expand_set(name, raw, where, ()) for name in raw}


def _expand_set(
    name: str, raw: Mapping[str, list[str]], where: str, stack: tuple[str, ...]
) -> tuple[str, ...]:
    if name in stack:
        raise _fail(_at(where, name), "scope sets refer to each other in a cycle")
    result: list[str] = []
    for index, member in enumerate(raw[name]):
        at = _at(_at(where, name), index)
        if member.startswith("@"):
            if member[1:] not in raw:
                raise _fail(at, f"unknown scope set {member!r}")
            found = _expand_set(member[1:], raw, where, (*stack, name))
        else:
            found = (_valid_scope(member, at),)
        result.extend(scope for scope in found if scope not in result)
    return tuple(result)


def _valid_scope(scope: str, where: str) -> str:
    try:
        validate_scope(scope)
    except UsageError as exc:
        raise _fail(where, str(exc)) from None
    return scope


def _parse_networks(value: object, where: str) -> tuple[str, ...]:
    networks = []
    for index, item in enumerate(_string_list(value, where)):
        try:
            networks.append(str(ipaddress.ip_network(item.strip())))
        except ValueError as exc:
            raise _fail(_at(where, index), f"invalid CIDR: {exc}") from None
    return tuple(networks)


def _parse_limits(value: object, where: str) -> Limits:
    data = _mapping(value, where)
    keys = _field_names(Limits)
    _check_keys(data, keys, where)
    default = Limits()

    def positive(v: object, w: str) -> int:
        return _integer(v, w, 1)

    def optional(v: object, w: str) -> int | None:
        return None if v is None else _integer(v, w, 0)

    return Limits(
        max_header_bytes=_take(
            data, keys[0], where, positive, default.max_header_bytes
        ),
        max_url_bytes=_take(data, keys[1], where, positive, default.max_url_bytes),
        max_body_bytes=_take(data, keys[2], where, optional, None),
        failed_auth_per_minute=_take(
            data, keys[3], where, lambda v, w: _integer(v, w, 0), 30
        ),
    )


# --------------------------------------------------------------------------
# Routes

_ROUTE_KEYS = _field_names(RouteConfig)
# fmt: off
_TOKEN_ONLY_KEYS = (
    "methods", "paths", "scope", "credentials", "query_params", "api_key_header",
)
# fmt: on
_ROUTE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_METHOD = re.compile(r"[A-Z][A-Z0-9_-]*")
_QUERY_PARAM = re.compile(r"[A-Za-z0-9_.~-]+")
_REALM = re.compile(r"[^\"\\\x00-\x1f\x7f]+")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass
class _RouteContext:
    """What parsing one route needs from the rest of the file."""

    env: Mapping[str, str]
    scope_sets: Mapping[str, tuple[str, ...]]
    identity: IdentityHeaders
    warnings: list[str]

    def parse_routes(self, value: object, where: str) -> tuple[RouteConfig, ...]:
        if not isinstance(value, list):
            raise _fail(where, f"expected a list of routes, got {_kind(value)}")
        routes: list[RouteConfig] = []
        labels: list[str] = []
        for index, item in enumerate(value):
            label = _route_label(index, item)
            route = self.parse_route(item, label)
            _check_unique(route, label, routes, labels)
            routes.append(route)
            labels.append(label)
        return tuple(routes)

    def parse_route(self, value: object, where: str) -> RouteConfig:
        data = _mapping(value, where)
        _check_keys(data, _ROUTE_KEYS, where)
        for key in ("name", "prefix", "upstream"):
            if key not in data:
                raise _fail(where, f"missing required key {key!r}")
        auth: Literal["token", "none"] = _take(
            data, "auth", where, _parse_auth, "token"
        )
        if auth == "none":
            for key in _TOKEN_ONLY_KEYS:
                if key in data:
                    raise _fail(_at(where, key), "has no effect with auth: none")
        name = _matching(data["name"], _at(where, "name"), _ROUTE_NAME, "route name")
        prefix = _parse_prefix(data["prefix"], _at(where, "prefix"))
        route = RouteConfig(
            name=name,
            prefix=prefix,
            upstream=_parse_upstream(data["upstream"], _at(where, "upstream")),
            host=_take(data, "host", where, _parse_host, None),
            strip_prefix=_take(data, "strip_prefix", where, _bool, False),
            credentials=_take(
                data, "credentials", where, _parse_credentials, CREDENTIAL_SOURCES
            ),
            query_params=_take(
                data, "query_params", where, _parse_query_params, _QUERY_PARAMS
            ),
            api_key_header=_take(
                data, "api_key_header", where, self.header, "X-API-Key"
            ),
            realm=_take(data, "realm", where, _pattern_reader(_REALM, "realm"), ""),
            auth=auth,
            methods=_take(data, "methods", where, self.method_map, _frozen()),
            paths=_take(data, "paths", where, self.path_rules, ()),
            scope=_take(data, "scope", where, self.required_scope, None),
            error_style=_take(data, "error_style", where, _parse_error_style, "json"),
            upstream_headers=_take(
                data, "upstream_headers", where, self.upstream_headers, SecretHeaders()
            ),
            connect_timeout=_take(data, "connect_timeout", where, _seconds, 5.0),
            read_timeout=_take(data, "read_timeout", where, _seconds, 300.0),
            websocket=_take(data, "websocket", where, _bool, True),
        )
        self._warn_about(route, where)
        return route

    def header(
        self, value: object, where: str, reserved: frozenset[str] = _CLIENT_HEADERS
    ) -> str:
        name = _header_name(value, where, reserved)
        identity = (self.identity.user, self.identity.token_id, self.identity.scopes)
        if _fold(name) in {_fold(h) for h in identity}:
            raise _fail(where, f"{name!r} is one of the identity headers")
        return name

    def required_scope(self, value: object, where: str) -> str:
        scope = _string(value, where)
        if scope.startswith("@"):
            known = scope[1:] in self.scope_sets
            raise _fail(
                where,
                f"{'scope set' if known else 'unknown scope set'} {scope!r}: a route"
                " requires one scope; sets are for granting",
            )
        if parse_node_scope(scope) is not None:
            raise _fail(
                where, "node scopes restrict tokens; a route cannot require one"
            )
        return _valid_scope(scope, where)

    def method_map(self, value: object, where: str) -> MethodMap:
        data = _mapping(value, where)
        result: dict[str, str] = {}
        for method, scope in data.items():
            at = _at(where, method)
            if method != "*" and not _METHOD.fullmatch(method):
                upper = method.upper()
                hint = f" (did you mean {upper!r}?)" if _METHOD.fullmatch(upper) else ""
                raise _fail(
                    at, f"invalid method name {method!r}: upper case or '*'{hint}"
                )
            result[method] = self.required_scope(scope, at)
        return _frozen(result)

    def path_rules(
        self, value: object, where: str
    ) -> tuple[tuple[str, str | MethodMap], ...]:
        data = _mapping(value, where)
        rules: list[tuple[str, str | MethodMap]] = []
        for pattern, rule in data.items():
            at = _at(where, pattern)
            _check_pattern(pattern, at)
            if isinstance(rule, dict):
                rules.append((pattern, self.method_map(rule, at)))
            else:
                rules.append((pattern, self.required_scope(rule, at)))
        return tuple(rules)

    def upstream_headers(self, value: object, where: str) -> Mapping[str, str]:
        data = _mapping(value, where)
        result: dict[str, str] = {}
        for name, raw in data.items():
            at = _at(where, name)
            self.header(name, at, _FRAMING_HEADERS)
            text = _string(raw, at)
            # Error messages below never quote the value: it is a credential.
            missing = [n for n in _ENV_REF.findall(text) if n not in self.env]
            if missing:
                raise _fail(at, f"environment variable {missing[0]!r} is not set")
            text = _ENV_REF.sub(lambda m: self.env[m.group(1)], text)
            if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in text):
                # SECURITY: CR/LF in an injected value would split the header.
                raise _fail(at, "the value holds a control character")
            result[name] = text
        return SecretHeaders(result)

    def _warn_about(self, route: RouteConfig, where: str) -> None:
        if route.auth == "none" and route.prefix == "/":
            self.warnings.append(
                f"{where}: auth: none on prefix '/' makes every path public"
            )
        root = route.prefix.rstrip("/")
        for pattern, _ in route.paths:
            head = pattern.split("*", 1)[0]
            if not (path_within(head, root) or (root + "/").startswith(head)):
                self.warnings.append(
                    f"{where}.paths.{pattern}: never matches, it is outside the"
                    f" prefix {route.prefix!r}"
                )


def _route_label(index: int, item: object) -> str:
    label = f"routes[{index}]"
    if isinstance(item, dict) and isinstance(item.get("name"), str):
        label += f" ({item['name']})"
    return label


def _check_unique(
    route: RouteConfig, label: str, routes: Sequence[RouteConfig], labels: list[str]
) -> None:
    for other, other_label in zip(routes, labels, strict=True):
        if other.name == route.name:
            raise _fail(label, f"name {route.name!r} is already used by {other_label}")
        same_prefix = other.prefix.rstrip("/") == route.prefix.rstrip("/")
        if same_prefix and other.host == route.host:
            on_host = f" on host {route.host!r}" if route.host else ""
            raise _fail(
                label,
                f"prefix {route.prefix!r}{on_host} is already routed by {other_label}",
            )


def _choice(value: object, where: str, options: tuple[str, str]) -> str:
    text = _string(value, where)
    if text not in options:
        raise _fail(where, f"expected {options[0]} or {options[1]}, got {text!r}")
    return text


def _parse_auth(value: object, where: str) -> Literal["token", "none"]:
    return "none" if _choice(value, where, ("token", "none")) == "none" else "token"


def _parse_error_style(value: object, where: str) -> Literal["json", "result"]:
    return "result" if _choice(value, where, ("json", "result")) == "result" else "json"


def _parse_prefix(value: object, where: str) -> str:
    prefix = _string(value, where)
    if not prefix.startswith("/"):
        raise _fail(where, f"a prefix starts with '/', got {prefix!r}")
    try:
        canonical = normalise_path(prefix)
    except PathError as exc:
        raise _fail(where, str(exc)) from None
    if canonical != prefix:
        raise _fail(where, f"write the prefix in canonical form: {canonical!r}")
    if prefix != "/" and path_within(prefix.rstrip("/"), "/_patgate"):
        raise _fail(where, "/_patgate/ is reserved for patgate's own endpoints")
    return prefix


def _check_pattern(pattern: str, where: str) -> None:
    if not pattern.startswith("/"):
        raise _fail(where, "a path pattern starts with '/'")
    sample = pattern.replace("*", "x")
    try:
        canonical = normalise_path(sample)
    except PathError as exc:
        raise _fail(where, str(exc)) from None
    if canonical != sample:
        raise _fail(where, "write the pattern in canonical form (no '//', '.', '..')")


def _parse_upstream(value: object, where: str) -> str:
    url = _string(value, where)
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError as exc:
        raise _fail(where, f"invalid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _fail(where, f"expected an http(s) URL with a host, got {url!r}")
    if parts.username is not None or parts.password is not None:
        raise _fail(where, "put upstream credentials in upstream_headers, not the URL")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise _fail(where, "an upstream URL has no query or fragment")
    if parts.path and _canonical_or_none(parts.path) != parts.path:
        raise _fail(where, "the upstream path is not in canonical form")
    return url


def _canonical_or_none(path: str) -> str | None:
    try:
        return normalise_path(path)
    except PathError:
        return None


def _parse_host(value: object, where: str) -> str:
    host = _string(value, where).lower()
    if not _HOSTNAME.fullmatch(host) and not _is_ip(host, 4):
        raise _fail(where, f"expected a host name without port, got {host!r}")
    return host.rstrip(".")


def _parse_credentials(value: object, where: str) -> tuple[str, ...]:
    items = _string_list(value, where)
    for index, item in enumerate(items):
        if item not in CREDENTIAL_SOURCES:
            raise _fail(
                _at(where, index),
                f"unknown credential source {item!r} (any of"
                f" {', '.join(CREDENTIAL_SOURCES)})",
            )
    if not items:
        raise _fail(where, "name at least one credential source")
    return tuple(dict.fromkeys(items))


def _parse_query_params(value: object, where: str) -> tuple[str, ...]:
    items = _string_list(value, where)
    for index, item in enumerate(items):
        _matching(item, _at(where, index), _QUERY_PARAM, "query parameter name")
    if not items:
        raise _fail(where, "name at least one query parameter")
    return tuple(dict.fromkeys(items))


# --------------------------------------------------------------------------
# The file


def load_config(path: str | None = None, env: Mapping[str, str] = os.environ) -> Config:
    """Read and parse the config: ``path`` (``--config``), else
    ``$PATGATE_CONFIG``, else ``./gateway.yaml``. Errors name the file."""
    explicit = True
    if path:
        chosen, origin = path, ""
    elif env.get(CONFIG_ENV):
        chosen, origin = env[CONFIG_ENV], f" (from ${CONFIG_ENV})"
    else:
        chosen, origin, explicit = DEFAULT_CONFIG_PATH, "", False
    try:
        with open(chosen, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        if not explicit:
            raise ConfigError(
                f"no configuration: {DEFAULT_CONFIG_PATH} not found (pass --config"
                f" PATH or set ${CONFIG_ENV})"
            ) from None
        raise ConfigError(f"{chosen}{origin}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"{chosen}{origin}: cannot read: {reason}") from None
    base_dir = os.path.dirname(os.path.abspath(chosen))
    try:
        return parse_config(text, env, base_dir)
    except ConfigError as exc:
        raise ConfigError(f"{chosen}: {exc}") from None
